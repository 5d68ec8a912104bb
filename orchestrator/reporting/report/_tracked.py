"""What the MLflow store holds about a study, read without writing, as far as it can be read.

Every piece is optional: a store that is missing, down or holds only part of the study (a search
interrupted before its champion, runs deleted by hand) still gives a page, whose notes say what
is missing and why.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from orchestrator.config import ExperimentConfig
from orchestrator.config.paths import sqlite_path
from orchestrator.config.secrets import redact, scrub
from orchestrator.search.records import StudyRecord
from orchestrator.tracking.client import TrackingError, is_outage
from orchestrator.tracking.study_runs import READ_ERRORS, RunRecord, StudyRuns

log = logging.getLogger(__name__)

LOCAL_UI = "http://127.0.0.1:5000"  # where `python -m orchestrator ui` serves a store that is not a server
TABLE_ROWS = 20  # rows shown of an error-analysis table: the most confident mistakes come first
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
    datasets: list[dict] = field(default_factory=list)  # the study run's dataset inputs (lineage)
    problems: list[str] = field(default_factory=list)
    store: StudyRuns | None = None  # the store, once it opened
    down: bool = False  # the store did not answer: nothing more is asked of it

    def run_link(self, run_id: str | None) -> str | None:
        if not (self.ui and run_id and self.experiment_id):
            return None
        return f"{self.ui}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def model_link(self, name: str, version: str) -> str | None:
        return f"{self.ui}/#/models/{name}/versions/{version}" if self.ui else None


def read_tracking(cfg: ExperimentConfig, study: StudyRecord) -> Tracked:
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
        tracked.store = StudyRuns(uri, "tracking.uri")
    except TrackingError as e:
        tracked.problems.append(f"{e}: parts of this page that come from MLflow are missing.")
        log.warning("%s; the report is written without what it holds", e)
        return tracked
    try:
        _read(tracked.store, cfg, study, tracked)
    except READ_ERRORS as e:
        tracked.down = is_outage(e)
        why = "cannot be reached" if tracked.down else "could not be read"
        problem = f"The MLflow store {tracked.uri} {why} ({type(e).__name__}: {scrub(str(e))[:300]})"
        log.warning("%s; the report is written without what it holds", problem)
        tracked.problems.append(f"{problem}: parts of this page that come from MLflow are missing.")
    return tracked


def _read(store: StudyRuns, cfg: ExperimentConfig, study: StudyRecord, tracked: Tracked) -> None:
    parent = _parent_run(store, cfg, study, tracked)
    if parent is not None:
        tracked.parent_run_id, tracked.experiment_id = parent.run_id, parent.experiment_id
        tracked.parent_metrics, tracked.parent_tags = dict(parent.metrics), dict(parent.tags)
        tracked.datasets = store.datasets(parent.run_id)
    if tracked.experiment_id is None:
        tracked.problems.append(f"MLflow holds no experiment {cfg.experiment_name!r} with this study's runs "
                                f"(tracking.experiment); no run links, train loss or champion.")
        return
    _trial_runs(store, cfg, study, tracked)
    champion_run = tracked.parent_tags.get("best_trial_run_id")
    if champion_run:
        tracked.champion = _champion(store, champion_run, tracked)
    registered = tracked.parent_tags.get("registered_model", "")
    if "/" in registered:
        tracked.alias_holder = store.alias_version(registered.rpartition("/")[0], "champion")


def _parent_run(store: StudyRuns, cfg: ExperimentConfig, study: StudyRecord, tracked: Tracked) -> RunRecord | None:
    """The study's parent run: the one the study names, else the one tagged with its name."""
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id:
        run = store.run(run_id)
        if run is not None:
            return run
        tracked.problems.append(f"The study's MLflow parent run {run_id} is not in {tracked.uri}.")
    tracked.experiment_id = store.experiment_id(cfg.experiment_name)
    if tracked.experiment_id is None:
        return None
    return store.study_run(tracked.experiment_id, cfg.study_name)


def _trial_runs(store: StudyRuns, cfg: ExperimentConfig, study: StudyRecord, tracked: Tracked) -> None:
    """Each trial's run (found by its tags, or named by the trial), its metrics and curves."""
    found = store.trial_runs(tracked.experiment_id, cfg.study_name)  # oldest first
    by_id = {r.run_id: r for _, r in found}
    # Newest last, so that a study made again under an old name gets its own runs, not the old ones.
    for number, r in found:
        tracked.runs[number] = r.run_id
    reported = set()
    for t in study.trials:
        if "mlflow_run_id" in t.user_attrs:  # what the trial itself recorded wins
            tracked.runs[t.number] = t.user_attrs["mlflow_run_id"]
        if t.intermediate_values:
            reported.add(t.number)
    for number, run_id in sorted(tracked.runs.items()):
        run = by_id.get(run_id) or store.run(run_id)
        if run is None:
            tracked.problems.append(f"The MLflow run {run_id} of trial {number} is gone (deleted?).")
            continue
        tracked.run_metrics[number] = dict(run.metrics)
        if "train_loss" in run.metrics:
            tracked.train_loss[number] = store.metric_history(run_id, "train_loss")
        if number not in reported and cfg.search.metric in run.metrics:
            tracked.val_curves[number] = store.metric_history(run_id, cfg.search.metric)


SHOWN_TABLES = ("serving_formats.json",)  # the champion's tables besides its `_test` ones


def _champion(store: StudyRuns, run_id: str, tracked: Tracked) -> Champion | None:
    """The test metrics and test-split artifacts (`champion.evaluate` logs them, named
    `<what>_test.<ext>` by the task) of the best trial's run, whatever the task."""
    run = store.run(run_id)
    if run is None:
        tracked.problems.append(f"The champion's MLflow run {run_id} is gone (deleted?).")
        return None
    champion = Champion(run_id, {k: v for k, v in run.metrics.items() if k.startswith("test_")})
    files = [a for a in store.files(run_id) if Path(a.path).stem.endswith("_test") or a.path in SHOWN_TABLES]
    with tempfile.TemporaryDirectory(prefix="orchestrator-report-") as tmp:
        for a in sorted(files, key=lambda a: ({".png": 0, ".txt": 1}.get(Path(a.path).suffix, 2), a.path)):
            if (a.size or 0) > LARGEST_ARTIFACT or Path(a.path).suffix not in (".png", ".txt", ".json"):
                champion.skipped.append(a.path)
                continue
            local = store.download(run_id, a.path, tmp)
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


def _table(path: Path) -> tuple[list[str], list[list], int] | None:
    """A table logged by `log_table` (pandas' "split" form: columns and rows), its first rows."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not (isinstance(data, dict) and isinstance(data.get("columns"), list) and isinstance(data.get("data"), list)):
        return None
    return data["columns"], data["data"][:TABLE_ROWS], len(data["data"])
