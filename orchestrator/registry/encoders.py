"""Encoders in the Model Registry (`models:/NAME@ALIAS`, `models:/NAME/VERSION`), as a model to fine-tune.

`resolve_encoder` is `orchestrator.models.sources.resolve_model` for any `model.name_or_path`:
a registered encoder (one `pretrain` registered) is looked up and its files downloaded first,
once, into the cache under its name, version and run (a version's files never change); anything
else goes to `resolve_model` as it is. Registering encoders is `versions.register_encoder`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from orchestrator.config import ModelConfig, paths
from orchestrator.config.secrets import redact, scrub
from orchestrator.data import DataError
from orchestrator.models.sources import REGISTERED, ModelSource, resolve_model
from orchestrator.registry.versions import ENCODER_ARTIFACT, alias_version, parse_registered
from orchestrator.tracking.client import fail_fast, is_missing, is_outage


def resolve_encoder(cfg: ModelConfig, tracking_uri: str | None = None) -> ModelSource:
    """A usable local copy of the configured model, or a `DataError` saying what to do.
    `models:/NAME@ALIAS` (an encoder `pretrain` registered) is looked up in `tracking_uri`."""
    if not cfg.name_or_path.startswith(REGISTERED):
        return resolve_model(cfg)
    return resolve_model(cfg, registered=fetch_encoder(cfg.name_or_path, tracking_uri))


def encoder_version(tracking_uri: str, name: str, alias: str):
    """The version of encoder `name` that `alias` points to, or None (no such model or alias).
    The store must exist: check it first (a SQLite store would be created)."""
    uri = paths.absolute_sqlite(tracking_uri, create=False)
    return alias_version(MlflowClient(uri, registry_uri=uri), name, alias)


def fetch_encoder(uri: str, tracking_uri: str | None) -> tuple[Path, dict]:
    """The registered encoder's files, downloaded once into the cache under its name, version and
    run (a version's files never change), and where they came from (its lineage)."""
    name, alias, number = parse_registered(uri)
    if tracking_uri is None or (not alias and not number):
        raise DataError(f"model.name_or_path: {uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    fail_fast(tracking_uri)
    store = paths.absolute_sqlite(tracking_uri, create=False)
    database = paths.sqlite_path(tracking_uri)
    missing = (f"model.name_or_path: {uri} is not in the MLflow store {redact(tracking_uri)}; pre-train it first "
               f"(python -m orchestrator pretrain --config <experiment>), or give a hub name or folder")
    if database is not None and not database.expanduser().exists():
        raise DataError(missing)
    client = MlflowClient(store, registry_uri=store)
    try:
        version = alias_version(client, name, alias) if alias else client.get_model_version(name, number)
    except Exception as e:
        if isinstance(e, MlflowException) and is_missing(e):
            raise DataError(missing) from None
        if is_outage(e):
            raise DataError(f"model.name_or_path: {uri}: cannot reach the MLflow store {redact(tracking_uri)} "
                            f"({scrub(str(e)).strip().splitlines()[-1][:200]}); start it or check tracking.uri") from e
        raise
    if version is None:
        raise DataError(missing)
    if not version.run_id:
        raise DataError(f"model.name_or_path: {uri} (version {version.version}) has no run to download its "
                        f"files from; register encoders with `python -m orchestrator pretrain`")
    folder = paths.CACHE_ROOT / "encoders" / f"{name}-v{version.version}-{version.run_id[:12]}"
    if not (folder / "config.json").is_file():
        tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            got = Path(client.download_artifacts(version.run_id, ENCODER_ARTIFACT, str(tmp)))
        except MlflowException as e:
            raise DataError(f"model.name_or_path: {uri}: cannot download version {version.version}'s files from "
                            f"run {version.run_id}: {e.message[:300]}") from None
        if folder.exists():  # another process got there first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            got.rename(folder)
            shutil.rmtree(tmp, ignore_errors=True)
    return folder, {"registered_version": str(version.version), "registered_run_id": version.run_id}
