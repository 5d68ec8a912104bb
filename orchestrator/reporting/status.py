"""`python -m orchestrator status`: a study's state read from its stores, and `ui --optuna`.

Read only, and safe beside a running `search` (on this machine or another): it opens the Optuna
storage without creating tables, and the MLflow store only for the champion's alias. A store
that does not exist is an error (a status never creates an empty database); an MLflow store that
cannot be read only costs the champion line.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime

from rich.console import Console
from rich.table import Table

from orchestrator.config import paths
from orchestrator.config import ExperimentConfig
from orchestrator.config.secrets import redact
from orchestrator.search.confirm import CONFIRMS
from orchestrator.search.records import (TRIAL_STATES, Trial, as_studied, best_epoch, check_study, epoch_values,
                                         params_of, read_study, serve_dashboard)

FINISHED = ("COMPLETE", "PRUNED")  # trial states
PEAK_GPU = "peak_gpu_memory_share"  # a trial's user attr: its peak GPU memory as a share of the card (GPU only)


@dataclass
class StudyState:
    name: str
    metric: str
    direction: str
    trials: list[Trial]
    n_trials: int | None
    now: datetime
    evals_per_epoch: int = 1  # a trial's reports per epoch: its evaluation n is epoch n / evals_per_epoch
    data: dict | None = None  # what the study's data came from (the study's record: sources and settings)

    @property
    def finished(self) -> list[Trial]:
        """Finished trials of the search proper (confirmations have their own budget)."""
        return [t for t in self.trials if t.state.name in FINISHED and CONFIRMS not in t.user_attrs]

    @property
    def confirmations(self) -> list[Trial]:
        return [t for t in self.trials if CONFIRMS in t.user_attrs]

    @property
    def running(self) -> list[Trial]:
        return [t for t in self.trials if t.state.name == "RUNNING"]

    def best(self) -> Trial | None:
        complete = [t for t in self.trials if t.state.name == "COMPLETE" and t.value is not None]
        if not complete:
            return None
        pick = max if self.direction == "maximize" else min
        return pick(complete, key=lambda t: t.value)

    def eta_seconds(self) -> float | None:
        """Time left for the trials still to run: the median finished trial's duration, times the
        trials left, divided among the trials running at once (at least one); None without a
        trial budget or a finished trial to time."""
        if self.n_trials is None:
            return None
        durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in self.finished
                     if t.datetime_start and t.datetime_complete]
        left = self.n_trials - len(self.finished)
        if left <= 0:
            return 0.0
        if not durations:
            return None
        typical = statistics.median(durations)
        at_once = max(1, len(self.running))
        # The running trials are part-way through: count what they have already spent.
        spent = sum(min(self.elapsed(t), typical) for t in self.running)
        return max(0.0, (left * typical - spent) / at_once)

    def elapsed(self, trial: Trial) -> float:
        if trial.datetime_start is None:
            return 0.0
        end = trial.datetime_complete or self.now
        return max(0.0, (end - trial.datetime_start).total_seconds())


def load_state(cfg: ExperimentConfig) -> StudyState:
    study = read_study(cfg)
    cfg = as_studied(cfg, study)
    # Optuna records trial times as naive local time: `now` is compared with them.
    return StudyState(cfg.study_name, cfg.search.metric, study.direction, study.trials, cfg.search.n_trials,
                      datetime.now(), study.evals_per_epoch, study.user_attrs.get("data"))


def champion_line(cfg: ExperimentConfig) -> str:
    """Which version of the registered model holds @champion, and what it scored."""
    from orchestrator.registry.versions import CHAMPION, METRIC_TAG, SCORE_TAG, alias_version
    from orchestrator.tracking.client import TrackingError, TrackingStoreError, existing_store

    db = paths.sqlite_path(cfg.tracking.uri)
    if db is not None and not db.is_file():
        return f"champion: none yet (no MLflow store at {db})"
    try:  # an empty or foreign database is refused, not given MLflow's tables
        version = alias_version(existing_store(cfg.tracking.uri, "tracking.uri"), cfg.model_name, CHAMPION)
    except TrackingError as e:
        return f"champion: not read ({e})"
    except TrackingStoreError as e:
        return f"champion: not read ({redact(cfg.tracking.uri)}: {e.message[:200]})"
    if version is None:
        return f"champion: none yet ({cfg.model_name} has no @champion)"
    metric = version.tags.get(METRIC_TAG, SCORE_TAG)
    score = version.tags.get(metric, "?")
    source = version.tags.get("orchestrator_study")
    trial = version.tags.get("optuna_trial_number")
    origin = f", from study {source} trial {trial}" if source else ""
    return f"champion: models:/{cfg.model_name}@{CHAMPION} = version {version.version}, {metric} {score}{origin}"


def show_status(cfg: ExperimentConfig, console: Console) -> StudyState:
    state = load_state(cfg)
    console.print(trial_table(state))
    console.print(summary_line(state), highlight=False)
    if state.data:
        console.print(data_line(state.data), highlight=False)
    console.print(champion_line(cfg), highlight=False)
    return state


def data_line(record: dict) -> str:
    """The study's data: its fingerprint (the param data.fingerprint of its MLflow run) and sources."""
    from orchestrator.data import fingerprint

    sources = ", ".join(f"{split} {source.get('location') or 'hub ' + str(source.get('hub'))}"
                        for split, source in record.get("sources", {}).items())
    return (f"data: fingerprint {fingerprint.digest(record)} of the files and settings ({sources}); each split's "
            f"rows have their own digest in the runs' MLflow dataset inputs")


def trial_table(state: StudyState) -> Table:
    table = Table(title=f"study {state.name} ({state.direction} {state.metric})", title_justify="left")
    where = bool(state.running)  # host and slot matter only while a trial runs
    gpu = any(PEAK_GPU in t.user_attrs for t in state.trials)  # measured only on a GPU
    for column in ("trial", "state", "value", "best epoch", "epochs", "params", *(("where",) if where else ()),
                   "elapsed", *(("peak GPU mem",) if gpu else ())):
        table.add_column(column, justify="right" if column in ("trial", "value", "elapsed", "peak GPU mem") else "left",
                         overflow="fold", no_wrap=column != "params")
    for t in state.trials:
        confirms = t.user_attrs.get(CONFIRMS)
        table.add_row(str(t.number) if confirms is None else f"{t.number} (confirms {confirms})", t.state.name, "" if t.value is None else f"{t.value:.4f}",
                      _best_epoch(t, state), _epochs(t, state),
                      " ".join(f"{k}={_fmt(v)}" for k, v in params_of(t).items()),
                      *((_where(t) if t.state.name == "RUNNING" else "",) if where else ()),
                      _duration(state.elapsed(t)), *((_share(t.user_attrs.get(PEAK_GPU)),) if gpu else ()))
    return table


def summary_line(state: StudyState) -> str:
    counts = dict.fromkeys(TRIAL_STATES, 0)
    for t in state.trials:
        counts[t.state.name] += 1
    shown = ", ".join(f"{n} {name.lower()}" for name, n in counts.items() if n)
    budget = f" of {state.n_trials}" if state.n_trials is not None else ""
    best = state.best()
    best_text = f"best so far: trial {best.number}, {best.value:.4f}" if best else "no completed trial yet"
    eta = state.eta_seconds()
    eta_text = "" if eta is None else ("; done" if eta == 0 and not state.running else
                                       f"; about {_duration(eta)} left")
    confirmed = state.confirmations
    extra = "" if not confirmed else (f"; confirmation runs: {len([t for t in confirmed if t.state.name in FINISHED])} "
                                      f"of {len(confirmed)} finished")
    return f"{len(state.finished)}{budget} trials finished ({shown or 'no trials'}); {best_text}{eta_text}{extra}"


def _best_epoch(trial: Trial, state: StudyState) -> str:
    best = best_epoch(trial, state.evals_per_epoch, state.direction == "maximize")
    return "" if best is None else str(best)


def _epochs(trial: Trial, state: StudyState) -> str:
    """How far it trained, in epochs (1.5: pruned half way through its second)."""
    values = epoch_values(trial, state.evals_per_epoch)
    return f"{values[-1][0]:g}" if values else "0"


def _where(trial: Trial) -> str:
    """The running trial's host and slot: the driver that claimed it (host:pid) and its slot."""
    host = str(trial.user_attrs.get("driver", "")).rsplit(":", 1)[0]
    slot = trial.user_attrs.get("slot")
    return " ".join(x for x in (host, f"slot {slot}" if slot is not None else "") if x)


def _share(value: float | None) -> str:
    """A share of the card as a percentage; blank where the trial measured none (it trained on CPU,
    or an error stopped it)."""
    return "" if value is None else f"{value:.0%}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def open_dashboard(cfg: ExperimentConfig, port: int, host: str = "127.0.0.1") -> int:
    """optuna-dashboard on the study's storage, in this process: the storage URL, which may hold
    a password, never reaches a command line."""
    check_study(cfg)  # the study exists: say so now, not in the browser
    print(f"optuna-dashboard for study {cfg.study_name} on {redact(cfg.search.storage)}: "
          f"http://{host}:{port}/dashboard/ (Ctrl-C stops it)", flush=True)
    serve_dashboard(cfg.search.storage, host, port)
    return 0
