"""What the MLflow store holds about one study, read without writing (`report` reads it).

`StudyRuns` opens a store that must exist (`existing_store`: never a new database) and answers in
plain values: runs as `RunRecord`s, None for a run, experiment or alias that is not there. A
store that is down or refuses raises one of `READ_ERRORS` (`is_outage` tells which); its only
write is `log_text`, for the finished report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import sqlalchemy
from mlflow.exceptions import MlflowException

from orchestrator.tracking.client import TAG_ROLE, TAG_STUDY, TAG_TRIAL, existing_store, is_missing

# What reading a store can raise when it is down, refuses, or lacks a run; anything else is a bug.
READ_ERRORS = (MlflowException, requests.RequestException, sqlalchemy.exc.SQLAlchemyError, OSError)
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    experiment_id: str
    metrics: dict[str, float]  # the latest value of each
    tags: dict[str, str]


@dataclass(frozen=True)
class ArtifactFile:
    path: str  # relative to the run's artifact root
    size: int | None  # bytes, when the store says


class StudyRuns:
    def __init__(self, tracking_uri: str, key: str = "tracking.uri"):
        """`TrackingError` when `tracking_uri` is no MLflow store; `key` is what the user set it
        with, for the message."""
        self._client = existing_store(tracking_uri, key)

    def run(self, run_id: str) -> RunRecord | None:
        """The run, or None when it is not in the store (deleted?)."""
        try:
            return _record(self._client.get_run(run_id))
        except MlflowException as e:
            if not is_missing(e):
                raise
            return None

    def experiment_id(self, name: str) -> str | None:
        experiment = self._client.get_experiment_by_name(name)
        return None if experiment is None else experiment.experiment_id

    def study_run(self, experiment_id: str, study: str) -> RunRecord | None:
        """The study's parent run, found by its tags."""
        found = self._client.search_runs([experiment_id], max_results=1,
                                         filter_string=f"tags.{TAG_STUDY} = '{study}' and tags.{TAG_ROLE} = 'study'")
        return _record(found[0]) if found else None

    def trial_runs(self, experiment_id: str, study: str) -> list[tuple[int, RunRecord]]:
        """(trial number, run) of every trial run of the study, found by their tags, oldest first:
        a study made again under an old name has runs of the same numbers, its own the newest."""
        found = self._client.search_runs([experiment_id], max_results=50000,
                                         filter_string=f"tags.{TAG_STUDY} = '{study}' and tags.{TAG_ROLE} = 'trial'")
        return [(int(r.data.tags[TAG_TRIAL]), _record(r)) for r in sorted(found, key=lambda r: r.info.start_time or 0)]

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of every value of metric `key` the run logged, by step."""
        return sorted((m.step, m.value) for m in self._client.get_metric_history(run_id, key))

    def files(self, run_id: str) -> list[ArtifactFile]:
        """The files (not folders) at the top of the run's artifacts."""
        return [ArtifactFile(a.path, a.file_size) for a in self._client.list_artifacts(run_id) if not a.is_dir]

    def download(self, run_id: str, path: str, folder: str | Path) -> Path:
        """One artifact, downloaded into `folder`; returns the local file."""
        with _quiet_downloads():
            return Path(self._client.download_artifacts(run_id, path, str(folder)))

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version of registered model `name` that holds `alias`; None when none does."""
        try:
            return str(self._client.get_model_version_by_alias(name, alias).version)
        except MlflowException as e:
            # MLflow answers a model without that alias with INVALID_PARAMETER_VALUE, not "not found".
            if not (is_missing(e) or e.error_code == "INVALID_PARAMETER_VALUE"):
                raise
            return None

    def datasets(self, run_id: str) -> list[dict]:
        """The run's dataset inputs (`tracking.lineage`): name, digest, context, source and profile."""
        import json

        out = []
        for d in self._client.get_run(run_id).inputs.dataset_inputs:
            context = next((t.value for t in d.tags if t.key == "mlflow.data.context"), "")
            try:
                source = json.loads(d.dataset.source).get("uri", d.dataset.source)
                rows = json.loads(d.dataset.profile or "{}").get("num_rows")
            except (ValueError, AttributeError):
                source, rows = d.dataset.source, None
            out.append({"name": d.dataset.name, "digest": d.dataset.digest, "context": context, "source": source,
                        "rows": rows})
        return out

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self._client.log_text(run_id, text, path)


def _record(run) -> RunRecord:
    return RunRecord(run.info.run_id, run.info.experiment_id, dict(run.data.metrics), dict(run.data.tags))


@contextmanager
def _quiet_downloads() -> Iterator[None]:
    """MLflow draws a progress bar per downloaded file: noise for a few small files."""
    previous = os.environ.get(PROGRESS_BAR)
    os.environ[PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PROGRESS_BAR, None)
        else:
            os.environ[PROGRESS_BAR] = previous
