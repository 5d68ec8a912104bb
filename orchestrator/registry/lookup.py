"""A registered (or logged) model found and loaded by its URI: `models:/NAME@ALIAS`,
`models:/NAME/VERSION`, `runs:/RUN_ID/model` or a logged model's folder.

`check_model` says whether it is there with metadata calls only (no download, and never a store
created: a missing one is an error, not an empty new database); `load_pyfunc` loads it as
deployment does; `load_classifier` gives the `Classifier` inside a registered version.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from orchestrator.config.paths import absolute_sqlite, sqlite_path
from orchestrator.config.secrets import redact
from orchestrator.data import DataError
from orchestrator.tracking.client import TrackingError, existing_store, fail_fast, is_missing, is_outage
from orchestrator.training.saved_model import Classifier


def check_model(model_uri: str, tracking_uri: str | None) -> None:
    """The model exists, found with metadata calls only (no download, no store created)."""
    if not model_uri.startswith(("models:/", "runs:/")):
        if "://" not in model_uri and not (Path(model_uri) / "MLmodel").is_file():
            raise DataError(f"--model {model_uri}: not an MLflow model folder (no MLmodel file in it); use "
                            f"models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model or a logged model's folder")
        return
    fail_fast(tracking_uri or "")
    db = sqlite_path(tracking_uri or "")
    if db is not None and not db.is_file():
        raise DataError(f"--tracking-uri {tracking_uri}: no MLflow store at {db}; run a search first, or point "
                        f"--tracking-uri (or MLFLOW_TRACKING_URI) at the store that holds the model")
    if tracking_uri:
        existing_store(tracking_uri)  # an empty or foreign database would get MLflow's tables
    uri = absolute_sqlite(tracking_uri, create=False) if tracking_uri else None
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    shown = redact(tracking_uri or "the default store")
    try:
        if model_uri.startswith("runs:/"):
            client.get_run(model_uri[len("runs:/"):].split("/", 1)[0])
            return
        name, at, alias = model_uri[len("models:/"):].partition("@")
        if at:
            client.get_model_version_by_alias(name, alias)
            return
        name, _, version = name.partition("/")
        if version.isdigit():
            client.get_model_version(name, version)
        elif name.startswith("m-") and not version:  # a logged model's id (MLflow 3)
            client.get_logged_model(name)
        else:
            client.get_registered_model(name)
    except MlflowException as e:
        if is_outage(e):
            raise TrackingError(f"--tracking-uri: cannot reach the MLflow store {shown}: {e.message[:300]}") from None
        if is_missing(e) or e.error_code == "INVALID_PARAMETER_VALUE":
            raise DataError(f"--model {model_uri}: not found in {shown}: {e.message[:300]}") from None
        raise


FORMATS_TAG = "export_formats"  # a version's formats, "pytorch onnx int8" (`search/serving_formats.py`)


def check_format(model_uri: str, tracking_uri: str | None, fmt: str) -> None:
    """The model carries format `fmt` (pytorch always does): a registered version by its tag
    `export_formats`, a model folder by its files. Other URIs (`runs:/`, a logged model's
    `models:/m-...`) name no version whose tags say, so ONNX formats need one of those two. Run
    after `check_model`."""
    from orchestrator.training.export import FILES, FORMATS

    if fmt not in FORMATS:
        raise DataError(f"--format {fmt}: not a format; use one of {', '.join(FORMATS)}")
    if fmt == "pytorch":
        return
    fix = "serve or predict it with --format pytorch, or register it again with registry.export: true"
    if "://" not in model_uri and not model_uri.startswith(("models:/", "runs:/")):  # a model folder
        # The pyfunc keeps the checkpoint under the folder's own name: artifacts/<checkpoint>/.
        if not any((Path(model_uri) / "artifacts").glob(f"*/{FILES[fmt]}")):
            raise DataError(f"--format {fmt}: {model_uri} has no {FILES[fmt]} beside its checkpoint in artifacts/; "
                            f"{fix}")
        return
    rest = model_uri.removeprefix("models:/")
    name, at, alias = rest.partition("@")
    name, _, number = name.partition("/")
    if rest == model_uri or (not at and not number) or name.startswith("m-"):
        raise DataError(f"--format {fmt}: {model_uri} names no registered version, whose tags say which formats it "
                        f"carries; give one, e.g. --model models:/NAME@champion or models:/NAME/3")
    uri = absolute_sqlite(tracking_uri, create=False) if tracking_uri else None
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if at:
        version = client.get_model_version_by_alias(name, alias)
    elif number.isdigit():
        version = client.get_model_version(name, number)
    else:
        raise DataError(f"--format {fmt}: {model_uri}: {number!r} is no version number; give one, e.g. "
                        f"models:/{name}/3, or an alias, e.g. models:/{name}@champion")
    formats = version.tags.get(FORMATS_TAG, "pytorch").split()
    if fmt not in formats:
        why = version.tags.get("export_error") or ("registered without exports (registry.export: false, or by "
                                                   "a version of orchestrator without them)")
        raise DataError(f"--format {fmt}: version {version.version} of {name} carries {', '.join(formats)} only "
                        f"({why}); {fix}")


def input_columns(model_uri: str, tracking_uri: str | None = None) -> list[str]:
    """The model's input columns, from its signature (its MLmodel file only: the weights are not
    fetched): ["text"]; ["text", "text_pair"] for sentence pairs; ["question", "context"]. A model
    logged without a signature takes ["text"]. Run after `check_model`."""
    from mlflow.models import get_model_info

    if tracking_uri and model_uri.startswith(("models:/", "runs:/")):
        uri = absolute_sqlite(tracking_uri, create=False)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    signature = get_model_info(model_uri).signature
    names = signature.inputs.input_names() if signature is not None and signature.inputs is not None else []
    return [str(n) for n in names] or ["text"]


def load_pyfunc(model_uri: str, tracking_uri: str | None = None, fmt: str = "pytorch"):
    """The model as deployment loads it (`mlflow.pyfunc.load_model`): `.predict(frame)` with a
    `text` column, computed by `fmt` (pytorch, onnx, int8). `tracking_uri` (an existing store)
    becomes this process's tracking and registry URI."""
    if tracking_uri:
        tracking_uri = absolute_sqlite(tracking_uri, create=False)
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    # Through the environment the pyfunc reads at load (as `serve` passes it): a model_config given
    # at load is ignored by MLflow unless the model was logged with one, which earlier versions were not.
    from orchestrator.registry.pyfunc import FORMAT_ENV

    before = os.environ.get(FORMAT_ENV)
    os.environ[FORMAT_ENV] = fmt
    try:
        return mlflow.pyfunc.load_model(model_uri)
    finally:
        if before is None:
            os.environ.pop(FORMAT_ENV, None)
        else:
            os.environ[FORMAT_ENV] = before


def load_classifier(model_uri: str) -> Classifier:
    """The `Classifier` inside a registered version (e.g. its `source`), loaded through its pyfunc."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().classifier
