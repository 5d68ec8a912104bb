"""The study, driven from one process: storage, sampler, pruner, slots, resume, champion.

`run_search` checks everything it can before it creates anything (config, data, model path,
tracking store), then runs an Optuna study whose trials each run in a child process
(`scheduler.py` starts it, `trial.py` is its body), evaluates the best trial's best-epoch model
on the test split, and hands it to the registry. Past the ~400-line guide because interrupt
handling and dead-driver recovery live beside the loop they guard; they are the next to move
into a module of their own.
"""

from __future__ import annotations

import json
import os
import logging
import math
import queue
import shutil
import signal
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from orchestrator import paths, plots, registry, scheduler, space
from orchestrator.baseline import fit_baseline
from orchestrator.config import ConfigError, ExperimentConfig, ModelConfig
from orchestrator.data import DataError, Splits, load_splits, save_splits, tokenize
from orchestrator.heads import check_heads, load_tokenizer
from orchestrator.metrics import classification_metrics, report
from orchestrator.progress import StudyProgress
from orchestrator.serve import Classifier
from orchestrator.tracking import TRACKING_ERRORS, Tracker

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class TrialFailed(RuntimeError):
    """A trial that cannot produce a valid score (e.g. non-finite loss): marked FAIL, study goes on."""


@dataclass
class TrialRow:
    number: int
    state: str
    value: float | None
    params: dict
    note: str = ""


@dataclass
class Summary:
    study_name: str
    trials: list[TrialRow]
    best_trial: int | None = None
    best_params: dict = field(default_factory=dict)
    best_value: float | None = None
    metric: str = "val_macro_f1"
    champion_test: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    registration: registry.Registration | None = None
    seconds: float = 0.0
    tracking_uri: str = ""
    parent_run_id: str = ""
    interrupted: bool = False
    tracking_error: str | None = None


def resolve_model(cfg: ModelConfig) -> str:
    """Local folder (checked for safetensors weights now, not in trial 0) or a hub name as given."""
    try:
        location = paths.resolve(cfg.name_or_path)
    except paths.PathError as e:
        raise DataError(f"model.name_or_path: {e}") from None
    local = cfg.name_or_path.startswith((paths.PKG, "/", ".", "~")) or Path(location).exists()
    if local:
        folder = Path(location).expanduser()
        if not folder.is_dir():
            raise DataError(f"model.name_or_path: folder not found: {cfg.name_or_path}")
        if not any(folder.glob("*.safetensors")):
            raise DataError(f"model.name_or_path: {cfg.name_or_path} holds no *.safetensors weights "
                            f"(only safetensors are loaded; convert the checkpoint or pick another model)")
        return str(folder)
    return location


def make_storage(url: str):
    url = paths.absolute_sqlite(url)
    # Heartbeats let a restarted search see trials whose process died, mark them FAIL and
    # re-queue each once with the same parameters.
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5, and what we need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(url, heartbeat_interval=30, grace_period=90,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))


def create_study(cfg: ExperimentConfig) -> optuna.Study:
    s = cfg.search
    n = s.n_trials or 20
    if s.sampler == "tpe":
        # With a small budget, TPE's default 10 random start-up trials would be the whole study.
        sampler = optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=max(2, min(10, n // 2)))
    else:
        sampler = optuna.samplers.RandomSampler(seed=s.seed)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials,
                                          n_warmup_steps=s.pruner_warmup_epochs)
              if s.pruner == "median" else optuna.pruners.NopPruner())
    return optuna.create_study(study_name=cfg.study_name, storage=make_storage(s.storage), sampler=sampler,
                               pruner=pruner, direction=s.direction, load_if_exists=True)


DRIVER = f"{socket.gethostname()}:{os.getpid()}"


class Interrupt:
    """SIGINT / SIGTERM: the first stops new trials and lets running ones finish; the second
    stops the running trial processes at once. Either way every record is closed."""

    def __init__(self, progress: StudyProgress, children: scheduler.Children):
        self.progress, self.children = progress, children
        self.count = 0
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.count > 0

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1:
            self.progress.print(f"{signal.Signals(signum).name}: no new trials; waiting for {len(self.children)} "
                                f"running trial(s) to finish. Press Ctrl-C again to stop them now.")
            return
        self.progress.print(f"{signal.Signals(signum).name}: stopping {len(self.children)} running trial(s) now.")
        self.children.terminate_all()
        raise KeyboardInterrupt


class TrialLauncher:
    """The Optuna objective in the driver: sample, hand the trial to a free slot's child process.

    `study.optimize(n_jobs=len(slots))` runs one of these per slot in threads, so a slot whose
    trial ends takes the next trial at once and no GPU idles while trials remain.
    """

    def __init__(self, cfg: ExperimentConfig, study_dir: Path, model_path: str, parent_run_id: str,
                 storage_url: str, slots: list[scheduler.Slot], progress: StudyProgress, train_rows: int,
                 interrupt: Interrupt | None = None):
        self.cfg, self.study_dir, self.model_path = cfg, study_dir, model_path
        self.parent, self.storage_url, self.progress, self.train_rows = parent_run_id, storage_url, progress, train_rows
        self.interrupt = interrupt or Interrupt(progress, scheduler.Children())
        self.children = self.interrupt.children
        self.free: queue.Queue[scheduler.Slot] = queue.Queue()
        for slot in slots:
            self.free.put(slot)

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("driver", DRIVER)
        params = space.suggest(trial, self.cfg.space, self.cfg.training)
        if self.interrupt.requested:  # asked just as the user interrupted: keep it for the next run
            self._requeue(trial)
            return self._fail(trial, "interrupted before it started; re-queued")
        jobs = self.study_dir / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        result_path = jobs / f"trial-{trial.number}.result.json"
        result_path.unlink(missing_ok=True)
        job = {"config": self.cfg.to_dict(), "source": self.cfg.source, "storage": self.storage_url,
               "trial_id": trial._trial_id, "model_path": self.model_path, "parent_run_id": self.parent,
               "splits_dir": str(self.study_dir / "data"), "cache_dir": str(self.study_dir / "data"),
               "checkpoint_dir": str(self.study_dir / "checkpoints"), "result": str(result_path),
               "memory_target": self.cfg.search.memory_target}
        job_path = jobs / f"trial-{trial.number}.json"
        job_path.write_text(json.dumps(job, indent=1))
        slot = self.free.get()
        try:
            trial.set_user_attr("slot", slot.name)
            steps = math.ceil(self.train_rows / params.batch_size) * params.epochs
            self.progress.start_trial(trial.number, trial.params, steps, params.epochs, slot.name)
            outcome = scheduler.run_child(slot, job_path, self.study_dir / "logs" / f"trial-{trial.number}.log",
                                          self.progress.event, self.children)
        finally:
            self.free.put(slot)
        result = json.loads(result_path.read_text()) if result_path.exists() else None
        if result is None:  # the process died before recording an outcome
            reason = outcome.reason or "trial process ended without recording an outcome"
            self._close_orphan_run(trial, reason)
            if self._requeue(trial):
                reason += "; re-queued once with the same parameters"
            return self._fail(trial, reason)
        if result["state"] == "PRUNED":
            raise optuna.TrialPruned(result["reason"])
        if result["state"] == "FAIL":
            return self._fail(trial, result["reason"])
        return result["value"]

    @staticmethod
    def _requeue(trial: optuna.Trial) -> bool:
        """A dead process says nothing about the parameters: run them once more (only once)."""
        if "retry_of" in trial.user_attrs:
            return False
        trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        return True

    def _fail(self, trial: optuna.Trial, reason: str):
        trial.set_user_attr("fail_reason", reason[:2000])
        raise TrialFailed(reason)

    def _close_orphan_run(self, trial: optuna.Trial, reason: str) -> None:
        attrs = trial.study._storage.get_trial(trial._trial_id).user_attrs
        run_id = attrs.get("mlflow_run_id")
        if run_id:
            Tracker(self.cfg.tracking.uri, self.cfg.experiment_name,
                    self.cfg.tracking.artifact_location).finish_trial(
                run_id, "FAIL", reason, status="KILLED" if self.interrupt.requested else "FAILED")


def run_search(cfg: ExperimentConfig, gpus: str | None = None, workers: int = 1,
               progress: StudyProgress | None = None) -> Summary:
    started = time.perf_counter()
    # Everything that can be wrong with the input is found before a study or run exists.
    slots = scheduler.make_slots(gpus, workers, cfg.search.gpus_per_trial)
    splits = load_splits(cfg.data)
    model_path = resolve_model(cfg.model)
    heads = set(cfg.space["head"].choices) if "head" in cfg.space else {cfg.training.head}
    problems = check_heads(model_path, heads, cfg.model.revision, cfg.model.trust_remote_code)
    if problems:
        raise ConfigError(cfg.source, problems)
    tracker = Tracker(cfg.tracking.uri, cfg.experiment_name, cfg.tracking.artifact_location)

    study = create_study(cfg)
    parent = tracker.study_run(cfg.study_name, study.user_attrs.get("mlflow_parent_run_id"),
                               _flatten(cfg.to_dict()))
    study.set_user_attr("mlflow_parent_run_id", parent)
    study_dir = Path(cfg.search.work_dir).resolve() / cfg.study_name
    _prepare_data(splits, study_dir / "data", model_path, cfg)
    baseline = _baseline(tracker, parent, splits, cfg)
    progress = progress or StudyProgress(cfg.search.n_trials)
    progress.print(f"study {cfg.study_name!r}: {len(splits.data['train'])} train / "
                   f"{len(splits.data['validation'])} validation / {len(splits.data['test'])} test rows, "
                   f"labels {splits.label_names}; {len(slots)} slot(s): {', '.join(s.name for s in slots)}; "
                   f"baseline (TF-IDF + logistic regression) val macro-F1 {baseline['baseline_val_macro_f1']:.4f}")

    _recover_dead_trials(study, tracker)
    interrupt = Interrupt(progress, scheduler.Children())
    launcher = TrialLauncher(cfg, study_dir, model_path, parent, paths.absolute_sqlite(cfg.search.storage), slots,
                             progress, len(splits.data["train"]), interrupt)
    progress.done = len(study.get_trials(deepcopy=False, states=FINISHED))
    stopped = False
    try:
        with interrupt:
            _optimize(study, launcher, cfg, len(slots), progress, interrupt)
    except KeyboardInterrupt:
        stopped = True
        interrupt.children.terminate_all()
        _recover_dead_trials(study, tracker, everyone_here=True)
    finally:
        progress.close()

    summary = Summary(cfg.study_name, _rows(study), metric=cfg.search.metric, baseline=baseline,
                      tracking_uri=cfg.tracking.uri, parent_run_id=parent, interrupted=interrupt.requested)
    best = _best_trial(study)
    _drop_other_checkpoints(study_dir / "checkpoints", best)
    usable = best is not None and Path(best.user_attrs.get("checkpoint", "/nonexistent")).exists()
    if usable:
        summary.best_trial, summary.best_params, summary.best_value = best.number, best.params, best.value
    try:
        _log_study_plots(study, tracker, parent)
        if usable and not interrupt.requested:  # an interrupted study is not done: nothing gets registered
            summary.champion_test, summary.registration = _champion(cfg, splits, tracker, parent, best)
        tracker.end_run(parent, "KILLED" if stopped else "FINISHED")
    except TRACKING_ERRORS as e:  # the Optuna results are safe; the same command redoes this part
        summary.tracking_error = f"{type(e).__name__}: {str(e)[:300]}"
    summary.seconds = time.perf_counter() - started
    return summary


def _recover_dead_trials(study: optuna.Study, tracker: Tracker, everyone_here: bool = False) -> None:
    """Close what a dead driver left RUNNING: its trials become FAIL (re-queued once with the same
    parameters) and their MLflow runs KILLED. Drivers on other machines are left to heartbeats."""
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        driver = t.user_attrs.get("driver", "")
        name, _, pid = driver.partition(":")
        mine = everyone_here and driver == DRIVER
        dead = name == host and pid.isdigit() and not _alive(int(pid))
        if not (mine or dead):
            continue
        reason = "interrupted" if mine else f"its driver process {driver} died"
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id and tracker.client.get_run(run_id).info.status == "RUNNING":
            tracker.finish_trial(run_id, "FAIL", reason, status="KILLED")
        if "retry_of" not in t.user_attrs:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _optimize(study: optuna.Study, launcher: TrialLauncher, cfg: ExperimentConfig, jobs: int,
              progress: StudyProgress, interrupt: Interrupt) -> None:
    """Run until the study holds `n_trials` finished (COMPLETE or PRUNED) trials, or time is up.

    Each round asks for exactly the missing number, so parallel slots never overshoot; failed
    trials are made up in the next round. A round that finishes nothing ends the search (a
    config that fails every trial must not loop forever).
    """
    deadline = None if cfg.search.timeout is None else time.monotonic() + cfg.search.timeout
    def after_trial(s: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        progress.end_trial(t.number, t.state.name, t.value, _best_value(s))
        if interrupt.requested:
            s.stop()

    callbacks = [after_trial]
    while not interrupt.requested:
        finished = len(study.get_trials(deepcopy=False, states=FINISHED))
        missing = None if cfg.search.n_trials is None else cfg.search.n_trials - finished
        timeout = None if deadline is None else deadline - time.monotonic()
        if (missing is not None and missing <= 0) or (timeout is not None and timeout <= 0):
            return
        study.optimize(launcher, n_trials=missing, timeout=timeout, n_jobs=jobs, callbacks=callbacks,
                       catch=(Exception,), gc_after_trial=True)
        if missing is None or len(study.get_trials(deepcopy=False, states=FINISHED)) == finished:
            return


def _prepare_data(splits: Splits, folder: Path, model_path: str, cfg: ExperimentConfig) -> None:
    """Save the splits and tokenize them once for every max length the space can pick."""
    save_splits(splits, folder)
    p = cfg.space.get("max_length")
    lengths = p.choices if p is not None and p.choices else (
        range(p.low, p.high + 1, int(p.step or 1)) if p is not None else (cfg.training.max_length,))
    if len(lengths) > 8:  # a wide integer range: let each trial tokenize (and cache) its own
        return
    tokenizer = load_tokenizer(model_path, cfg.model.revision, cfg.model.trust_remote_code)
    for length in lengths:
        tokenize(splits, tokenizer, int(length), folder)


def _drop_other_checkpoints(folder: Path, best: optuna.trial.FrozenTrial | None) -> None:
    keep = Path(best.user_attrs["checkpoint"]) if best and best.user_attrs.get("checkpoint") else None
    for path in folder.glob("trial-*") if folder.exists() else ():
        if keep is None or path.resolve() != keep.resolve():
            shutil.rmtree(path, ignore_errors=True)


def _baseline(tracker: Tracker, parent: str, splits: Splits, cfg: ExperimentConfig) -> dict:
    logged = tracker.run_metrics(parent)
    if "baseline_test_macro_f1" in logged:  # resumed study: same split, same numbers
        return {k: v for k, v in logged.items() if k.startswith("baseline_")}
    metrics = fit_baseline(splits, cfg.data.seed)
    tracker.log_metrics(parent, metrics)
    return metrics


def _champion(cfg: ExperimentConfig, splits: Splits, tracker: Tracker, parent: str,
              best: optuna.trial.FrozenTrial) -> tuple[dict, registry.Registration | None]:
    """Test-split evaluation of the best trial's saved model, then registration."""
    run_id = best.user_attrs.get("mlflow_run_id")
    if run_id is None:  # the store was down when the trial ran: give it a run now, for lineage
        run_id = tracker.start_trial(parent, cfg.study_name, best.number, {**best.params, "backfilled": True})
        tracker.log_metrics(run_id, {cfg.search.metric: best.value})
        tracker.finish_trial(run_id, "COMPLETE")
    checkpoint = best.user_attrs["checkpoint"]
    classifier = Classifier(checkpoint)
    texts = list(splits.data["test"]["text"])
    labels = np.asarray(splits.data["test"]["label"])
    probs = classifier.predict_proba(texts)
    names = splits.label_names
    metrics = classification_metrics(labels, probs, names, "test")
    tracker.log_metrics(run_id, metrics)
    tracker.log_figure(run_id, plots.confusion_figure(labels, probs, names, "test"), "confusion_matrix_test.png")
    tracker.log_text(run_id, report(labels, probs.argmax(-1), names), "classification_report_test.txt")
    tracker.log_table(run_id, plots.misclassified(texts, labels, probs, names), "misclassified_test.json")
    tracker.log_metrics(parent, {"champion_test_macro_f1": metrics["test_macro_f1"],
                                 "champion_test_accuracy": metrics["test_accuracy"],
                                 f"champion_{cfg.search.metric}": best.value})
    tracker.set_tags(parent, {"best_trial": best.number, "best_trial_run_id": run_id})
    registration = None
    if cfg.registry.register:
        example = texts[:5]
        registration = registry.register(
            tracker.client, cfg.model_name, run_id, checkpoint, metrics["test_macro_f1"], example,
            classifier.predict_frame(example), tags={"orchestrator_study": cfg.study_name,
                                                     "optuna_trial_number": str(best.number)})
        tracker.set_tags(parent, {"registered_model": f"{registration.name}/{registration.version}",
                                  "registered_alias": registration.alias})
    return metrics, registration


def _log_study_plots(study: optuna.Study, tracker: Tracker, parent: str) -> None:
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return
    ax = ovm.plot_optimization_history(study)
    tracker.log_figure(parent, ax.figure, "optimization_history.png")
    if len(completed) >= 2:
        try:
            ax = ovm.plot_param_importances(study)
            tracker.log_figure(parent, ax.figure, "param_importances.png")
        except (ValueError, RuntimeError) as e:  # e.g. every searched value identical so far
            log.info("parameter importances skipped: %s", e)
    plt.close("all")


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def _best_value(study: optuna.Study) -> float | None:
    best = _best_trial(study)
    return best.value if best else None


def _rows(study: optuna.Study) -> list[TrialRow]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        note = t.user_attrs.get("fail_reason", "") if t.state == TrialState.FAIL else ""
        rows.append(TrialRow(t.number, t.state.name, t.value, dict(t.params), note))
    return rows


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
