"""What the MLflow store holds about a study, read without writing, as far as it can be read.

Every piece is optional: a store that is missing, down or holds only part of the study (a search
interrupted before its champion, runs deleted by hand) still gives a page, whose notes say what
is missing and why.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import optuna
import requests
import sqlalchemy
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from orchestrator.config import ExperimentConfig
from orchestrator.config.secrets import redact, scrub
from orchestrator.config.paths import sqlite_path
from orchestrator.tracking.client import TAG_ROLE, TAG_STUDY, TAG_TRIAL, TrackingError, existing_store, is_missing, is_outage

log = logging.getLogger(__name__)

# What reading a store can raise when it is down, refuses, or lacks a run; anything else is a bug.
READ_ERRORS = (MlflowException, requests.RequestException, sqlalchemy.exc.SQLAlchemyError, OSError)
LOCAL_UI = "http://127.0.0.1:5000"  # where `python -m orchestrator ui` serves a store that is not a server
TABLE_ROWS = 20  # rows shown of an error-analysis table: the most confident mistakes come first
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
LARGEST_ARTIFACT = 5 * 2**20  # bytes; a bigger table or text is linked to, not embedded


@dataclass
class Champion:
    """The best trial's evaluation on the test split: its metrics and error-analysis artifacts."""

    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (file name, PNG)
    texts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list], int]] = field(default_factory=list)  # name, columns, rows, total
    skipped: list[str] = field(default_factory=list)  # artifacts too large to embed


@dataclass
class Tracked:
    uri: str  # the tracking URI as it may be shown (password masked)
    ui: str | None = None  # the MLflow UI the links point into
    ui_command: str | None = None  # what serves that UI, to run first (a server needs nothing)
    experiment_id: str | None = None
    parent_run_id: str | None = None
    parent_metrics: dict[str, float] = field(default_factory=dict)
    parent_tags: dict[str, str] = field(default_factory=dict)
    runs: dict[int, str] = field(default_factory=dict)  # trial number -> run id
    run_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    train_loss: dict[int, list[tuple[int, float]]] = field(default_factory=dict)  # (step, loss)
    val_curves: dict[int, list[tuple[int, float]]] = field(default_factory=dict)  # (epoch, value), when Optuna has none
    champion: Champion | None = None
    alias_holder: str | None = None  # the version that holds @champion now
    problems: list[str] = field(default_factory=list)
    client: MlflowClient | None = None
    down: bool = False  # the store did not answer: nothing more is asked of it

    def run_link(self, run_id: str | None) -> str | None:
        if not (self.ui and run_id and self.experiment_id):
            return None
        return f"{self.ui}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def model_link(self, name: str, version: str) -> str | None:
        return f"{self.ui}/#/models/{name}/versions/{version}" if self.ui else None


def read_tracking(cfg: ExperimentConfig, study: optuna.Study) -> Tracked:
    uri = cfg.tracking.uri
    tracked = Tracked(redact(uri))
    if uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)  # a link must not carry the password, and a masked one would not work
        host = parts.netloc.rpartition("@")[2]
        tracked.ui = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
    else:
        tracked.ui = LOCAL_UI
        tracked.ui_command = f"python -m orchestrator ui --config {cfg.source}"
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        tracked.problems.append(f"No MLflow store at {path} (tracking.uri): this page shows only what the Optuna "
                                f"storage holds (no train loss, champion, baseline or run links).")
        log.warning("no MLflow store at %s (tracking.uri): the report shows only what the Optuna storage holds", path)
        tracked.ui = None
        return tracked
    try:  # an empty or foreign database is refused, not given MLflow's tables
        tracked.client = existing_store(uri, "tracking.uri")
    except TrackingError as e:
        tracked.problems.append(f"{e}: parts of this page that come from MLflow are missing.")
        log.warning("%s; the report is written without what it holds", e)
        return tracked
    try:
        _read(tracked.client, cfg, study, tracked)
    except READ_ERRORS as e:
        tracked.down = is_outage(e)
        why = "cannot be reached" if tracked.down else "could not be read"
        problem = f"The MLflow store {tracked.uri} {why} ({type(e).__name__}: {scrub(str(e))[:300]})"
        log.warning("%s; the report is written without what it holds", problem)
        tracked.problems.append(f"{problem}: parts of this page that come from MLflow are missing.")
    return tracked


def _read(client: MlflowClient, cfg: ExperimentConfig, study: optuna.Study, tracked: Tracked) -> None:
    parent = _parent_run(client, cfg, study, tracked)
    if parent is not None:
        tracked.parent_run_id, tracked.experiment_id = parent.info.run_id, parent.info.experiment_id
        tracked.parent_metrics, tracked.parent_tags = dict(parent.data.metrics), dict(parent.data.tags)
    if tracked.experiment_id is None:
        tracked.problems.append(f"MLflow holds no experiment {cfg.experiment_name!r} with this study's runs "
                                f"(tracking.experiment); no run links, train loss or champion.")
        return
    _trial_runs(client, cfg, study, tracked)
    champion_run = tracked.parent_tags.get("best_trial_run_id")
    if champion_run:
        tracked.champion = _champion(client, champion_run, tracked)
    registered = tracked.parent_tags.get("registered_model", "")
    if "/" in registered:
        tracked.alias_holder = _alias_holder(client, registered.rpartition("/")[0])


def _parent_run(client: MlflowClient, cfg: ExperimentConfig, study: optuna.Study, tracked: Tracked):
    """The study's parent run: the one the study names, else the one tagged with its name."""
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id:
        try:
            return client.get_run(run_id)
        except MlflowException as e:
            if not is_missing(e):
                raise
            tracked.problems.append(f"The study's MLflow parent run {run_id} is not in {tracked.uri}.")
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    if experiment is None:
        return None
    tracked.experiment_id = experiment.experiment_id
    found = client.search_runs([experiment.experiment_id], max_results=1,
                               filter_string=f"tags.{TAG_STUDY} = '{cfg.study_name}' and tags.{TAG_ROLE} = 'study'")
    return found[0] if found else None


def _trial_runs(client: MlflowClient, cfg: ExperimentConfig, study: optuna.Study, tracked: Tracked) -> None:
    """Each trial's run (found by its tags, or named by the trial), its metrics and curves."""
    found = client.search_runs([tracked.experiment_id], max_results=50000,
                               filter_string=f"tags.{TAG_STUDY} = '{cfg.study_name}' and tags.{TAG_ROLE} = 'trial'")
    by_id = {r.info.run_id: r for r in found}
    # Newest last, so that a study made again under an old name gets its own runs, not the old ones.
    for r in sorted(found, key=lambda r: r.info.start_time or 0):
        tracked.runs[int(r.data.tags[TAG_TRIAL])] = r.info.run_id
    reported = set()
    for t in study.get_trials(deepcopy=False):
        if "mlflow_run_id" in t.user_attrs:  # what the trial itself recorded wins
            tracked.runs[t.number] = t.user_attrs["mlflow_run_id"]
        if t.intermediate_values:
            reported.add(t.number)
    for number, run_id in sorted(tracked.runs.items()):
        try:
            run = by_id.get(run_id) or client.get_run(run_id)
            tracked.run_metrics[number] = dict(run.data.metrics)
            if "train_loss" in run.data.metrics:
                tracked.train_loss[number] = _history(client, run_id, "train_loss")
            if number not in reported and cfg.search.metric in run.data.metrics:
                tracked.val_curves[number] = _history(client, run_id, cfg.search.metric)
        except MlflowException as e:
            if not is_missing(e):
                raise
            tracked.problems.append(f"The MLflow run {run_id} of trial {number} is gone (deleted?).")


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _champion(client: MlflowClient, run_id: str, tracked: Tracked) -> Champion | None:
    """The test metrics and test-split artifacts (`champion.evaluate` logs them, named
    `<what>_test.<ext>` by the task) of the best trial's run, whatever the task."""
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        if not is_missing(e):
            raise
        tracked.problems.append(f"The champion's MLflow run {run_id} is gone (deleted?).")
        return None
    champion = Champion(run_id, {k: v for k, v in run.data.metrics.items() if k.startswith("test_")})
    files = [a for a in client.list_artifacts(run_id) if not a.is_dir and Path(a.path).stem.endswith("_test")]
    with tempfile.TemporaryDirectory(prefix="orchestrator-report-") as tmp, _quiet_downloads():
        for a in sorted(files, key=lambda a: ({".png": 0, ".txt": 1}.get(Path(a.path).suffix, 2), a.path)):
            if (a.file_size or 0) > LARGEST_ARTIFACT or Path(a.path).suffix not in (".png", ".txt", ".json"):
                champion.skipped.append(a.path)
                continue
            local = Path(client.download_artifacts(run_id, a.path, tmp))
            if local.suffix == ".png":
                champion.images.append((a.path, local.read_bytes()))
            elif local.suffix == ".txt":
                champion.texts.append((a.path, local.read_text(encoding="utf-8", errors="replace")))
            else:
                table = _table(local)
                if table is None:
                    champion.skipped.append(a.path)
                else:
                    champion.tables.append((a.path, *table))
    return champion


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


def _table(path: Path) -> tuple[list[str], list[list], int] | None:
    """A table logged by `log_table` (pandas' "split" form: columns and rows), its first rows."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not (isinstance(data, dict) and isinstance(data.get("columns"), list) and isinstance(data.get("data"), list)):
        return None
    return data["columns"], data["data"][:TABLE_ROWS], len(data["data"])


def _alias_holder(client: MlflowClient, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException as e:
        # MLflow answers a model without that alias with INVALID_PARAMETER_VALUE, not "not found".
        if not (is_missing(e) or e.error_code == "INVALID_PARAMETER_VALUE"):
            raise
        return None
