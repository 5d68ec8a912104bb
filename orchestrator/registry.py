"""The Model Registry: log the champion as a pyfunc, register it, move aliases.

`champion` moves to a new version only if its test macro-F1 beats the current champion's;
otherwise the new version gets `challenger`. Registering the same study's same trial twice
returns the existing version (re-running a finished study is safe).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
SCORE_TAG = "test_macro_f1"
PYFUNC_CODE = str(Path(__file__).with_name("pyfunc_model.py"))


@dataclass
class Registration:
    name: str
    version: str
    alias: str
    score: float
    previous_champion: float | None
    uri: str
    reused: bool = False


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "safetensors", "pandas", "numpy", "mlflow")]


def register(client: MlflowClient, name: str, run_id: str, checkpoint: str | Path, score: float,
             example_texts: list[str], example_output: pd.DataFrame, tags: dict[str, str]) -> Registration:
    """Log `checkpoint` as a pyfunc model under `run_id`, register it under `name`, set an alias."""
    existing = _find_version(client, name, tags)
    if existing is not None:
        alias = CHAMPION if CHAMPION in (existing.aliases or []) else (existing.aliases or [CHALLENGER])[0]
        return Registration(name, str(existing.version), alias, score, None, f"models:/{name}@{alias}", reused=True)

    example = pd.DataFrame({"text": example_texts})
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=PYFUNC_CODE, artifacts={"classifier": str(checkpoint)},
            signature=infer_signature(example, example_output), input_example=example.head(2),
            pip_requirements=_requirements(),
        )
    version = mlflow.register_model(info.model_uri, name, tags={**tags, SCORE_TAG: f"{score:.6f}"})

    previous = _champion_score(client, name)
    alias = CHAMPION if previous is None or score > previous else CHALLENGER
    client.set_registered_model_alias(name, alias, version.version)
    log.info("registered %s version %s as @%s (test macro-F1 %.4f, previous champion %s)",
             name, version.version, alias, score, previous)
    return Registration(name, str(version.version), alias, score, previous, f"models:/{name}@{alias}")


def _find_version(client: MlflowClient, name: str, tags: dict[str, str]):
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except mlflow.exceptions.MlflowException:
        return None
    for v in versions:
        if all(v.tags.get(k) == str(val) for k, val in tags.items()):
            return client.get_model_version(name, v.version)
    return None


def _champion_score(client: MlflowClient, name: str) -> float | None:
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None
    value = current.tags.get(SCORE_TAG)
    return float(value) if value is not None else None
