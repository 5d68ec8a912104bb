"""`write_report`: check where the page goes, read the stores, write the page, log it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from orchestrator.config import paths
from orchestrator.config import ExperimentConfig
from orchestrator.config.secrets import scrub
from orchestrator.data import DataError
from orchestrator.reporting.report._figures import loss_curves, optuna_figures, validation_curves
from orchestrator.reporting.report._page import page
from orchestrator.reporting.report._tracked import read_tracking
from orchestrator.search.records import as_studied, read_study
from orchestrator.tracking.study_runs import READ_ERRORS

log = logging.getLogger(__name__)

ARTIFACT = "report/report.html"  # in the study's parent run


def write_report(cfg: ExperimentConfig, output: str | None = None) -> Path:
    """Write the study's report to `output` (default: report.html in the study's folder under
    `search.work_dir`) and log it on the study's MLflow run. Returns the file written.

    Raises `DataError` for an `--output` that cannot be written, before anything is read, and
    `StorageError` when the storage holds no such study; MLflow is optional (see `_tracked`).
    """
    target = _checked_output(output)
    study = read_study(cfg)
    cfg = as_studied(cfg, study)
    if target is None:
        work_dir = Path(cfg.search.work_dir).resolve()
        folder = paths.inside(work_dir, work_dir / cfg.study_name)
        folder.mkdir(parents=True, exist_ok=True)  # absent where the search ran on another machine
        target = folder / "report.html"
    every = study.trials
    trials = [t for t in every if "duplicate_of" not in t.user_attrs]  # discarded samples never ran
    best = study.best
    tracked = read_tracking(cfg, study)
    figures = {**optuna_figures(study, trials),
               "validation": validation_curves(trials, tracked, cfg.search.metric, best and best.number,
                                               study.evals_per_epoch),
               "loss": loss_curves(trials, tracked, best and best.number)}
    html = page(cfg, study, trials, tracked, figures, best, len(every) - len(trials))
    _write(target, html)
    if tracked.store is not None and tracked.parent_run_id is not None and not tracked.down:
        try:
            tracked.store.log_text(tracked.parent_run_id, html, ARTIFACT)
        except READ_ERRORS as e:
            log.warning("the report is written to %s, but could not be logged on the study's MLflow run: %s",
                        target, scrub(str(e))[:300])
    return target


def _checked_output(output: str | None) -> Path | None:
    if output is None:
        return None
    path = Path(output).expanduser()
    if path.is_dir() or output.endswith(("/", os.sep)):
        raise DataError(f"--output {output}: names a folder; name the HTML file to write, e.g. "
                        f"{path / 'report.html'}")
    if path.suffix.lower() not in (".html", ".htm"):
        # Else a slip (--output exp.yaml, or the training data) writes a web page over that file.
        raise DataError(f"--output {output}: the report is an HTML page; name a .html file (e.g. "
                        f"{path.with_suffix('.html').name}), so no other file is written over")
    if not path.parent.is_dir():
        raise DataError(f"--output {output}: the folder {path.parent} does not exist; create it first or "
                        f"write the report elsewhere")
    if not os.access(path.parent, os.W_OK):
        raise DataError(f"--output {output}: the folder {path.parent} is not writable by this user")
    return path.resolve()


def _write(target: Path, html: str) -> None:
    """Whole or not at all: a browser or a sync tool never sees half a page."""
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
