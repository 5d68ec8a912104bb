"""One `search` process: check the input, join the study, run trials on this machine's slots.

`run_search` checks everything it can before it creates anything (config, data, model path,
tracking store), joins the study (`study.py`: storage, the budget shared with other processes,
recovery of dead trials), runs trials each in a child process (`scheduler.py` starts it,
`trial.py` is its body), and ends with `champion.py`: MLflow reconciled with Optuna, the best
model evaluated on test and registered.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from orchestrator import champion, paths, registry, scheduler, space
from orchestrator.baseline import fit_baseline
from orchestrator.config import ConfigError, ExperimentConfig, ModelConfig
from orchestrator.data import DataError, Splits, load_splits, save_splits, tokenize
from orchestrator.heads import check_heads, load_tokenizer
from orchestrator.interrupt import Interrupt
from orchestrator.progress import StudyProgress
from orchestrator.study import (FINISHED, StudyLock, claim, create_study, finished, heartbeat, make_storage,
                                recover_dead_trials, requeue_once)
from orchestrator.tracking import TRACKING_ERRORS, Tracker

log = logging.getLogger(__name__)

WAIT_S = 2.0  # how often a process whose budget is full looks again


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
    champion_elsewhere: str | None = None  # the host holding the best trial's checkpoint, if not this one


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


class TrialLauncher:
    """The objective in the driver: sample a claimed trial's parameters and run it in a free slot's
    child process. Returns the value, or raises `optuna.TrialPruned` / `TrialFailed`."""

    def __init__(self, cfg: ExperimentConfig, study_dir: Path, model_path: str, parent_run_id: str,
                 storage_url: str, slots: list[scheduler.Slot], progress: StudyProgress, train_rows: int,
                 interrupt: Interrupt, lock: StudyLock, close_run):
        self.cfg, self.study_dir, self.model_path = cfg, study_dir, model_path
        self.parent, self.storage_url, self.progress, self.train_rows = parent_run_id, storage_url, progress, train_rows
        self.interrupt, self.lock, self.close_run = interrupt, lock, close_run
        self.children = interrupt.children
        self.free: queue.Queue[scheduler.Slot] = queue.Queue()
        for slot in slots:
            self.free.put(slot)

    def __call__(self, trial: optuna.Trial) -> float:
        params = space.suggest(trial, self.cfg.space, self.cfg.training)
        if self.interrupt.requested:  # claimed just as the user interrupted: keep it for the next run
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

    def _requeue(self, trial: optuna.Trial) -> bool:
        with self.lock():
            return requeue_once(trial.study, trial)

    def _fail(self, trial: optuna.Trial, reason: str):
        trial.set_user_attr("fail_reason", reason[:2000])
        raise TrialFailed(reason)

    def _close_orphan_run(self, trial: optuna.Trial, reason: str) -> None:
        frozen = trial.study._storage.get_trial(trial._trial_id)  # fresh: the child set its run id
        self.close_run(frozen, reason, "KILLED" if self.interrupt.requested else "FAILED")


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
    lock = StudyLock(cfg.search.storage, cfg.study_name)
    study_dir = Path(cfg.search.work_dir).resolve() / cfg.study_name
    with lock():  # whichever process comes first creates stores, study, parent run; the others re-attach
        tracker = Tracker(cfg.tracking.uri, cfg.experiment_name, cfg.tracking.artifact_location)
        storage = make_storage(cfg.search)
        study = create_study(cfg, storage)
        parent = tracker.study_run(cfg.study_name, study.user_attrs.get("mlflow_parent_run_id"),
                                   _flatten(cfg.to_dict()))
        study.set_user_attr("mlflow_parent_run_id", parent)
        _prepare_data(splits, study_dir / "data", model_path, cfg)
        baseline = _baseline(tracker, parent, splits, cfg)
    progress = progress or StudyProgress(cfg.search.n_trials)
    progress.print(f"study {cfg.study_name!r}: {len(splits.data['train'])} train / "
                   f"{len(splits.data['validation'])} validation / {len(splits.data['test'])} test rows, "
                   f"labels {splits.label_names}; {len(slots)} slot(s): {', '.join(s.name for s in slots)}; "
                   f"baseline (TF-IDF + logistic regression) val macro-F1 {baseline['baseline_val_macro_f1']:.4f}")

    close_run = _run_closer(tracker)
    recover_dead_trials(study, lock, close_run)
    interrupt = Interrupt(progress, scheduler.Children())
    launcher = TrialLauncher(cfg, study_dir, model_path, parent, paths.absolute_sqlite(cfg.search.storage), slots,
                             progress, len(splits.data["train"]), interrupt, lock, close_run)
    progress.done = finished(study)
    stopped, halted = False, None
    try:
        with interrupt:
            halted = _optimize(study, storage, lock, launcher, cfg, len(slots), progress, interrupt)
    except KeyboardInterrupt:
        stopped = True
        interrupt.children.terminate_all()
        recover_dead_trials(study, lock, close_run, everyone_here=True)
    finally:
        progress.close()
    if halted:
        progress.print(halted)

    summary = Summary(cfg.study_name, _rows(study), metric=cfg.search.metric, baseline=baseline,
                      tracking_uri=cfg.tracking.uri, parent_run_id=parent, interrupted=interrupt.requested)
    best = _best_trial(study)
    champion.drop_other_checkpoints(study_dir / "checkpoints", study, best)
    usable = best is not None and Path(best.user_attrs.get("checkpoint", "/nonexistent")).exists()
    host = best.user_attrs.get("driver", "?").partition(":")[0] if best else None
    if usable or (best is not None and host != socket.gethostname()):
        summary.best_trial, summary.best_params, summary.best_value = best.number, best.params, best.value
        if not usable:  # trained by a process on another machine, which evaluates and registers it
            summary.champion_elsewhere = host
    try:
        champion.log_study_plots(study, tracker, parent)
        with lock():  # once, though every process on the study gets here
            run_ids = champion.reconcile_runs(study, tracker, parent, cfg)
            if usable and not interrupt.requested:  # an interrupted study is not done: nothing gets registered
                summary.champion_test, summary.registration = champion.evaluate_and_register(
                    cfg, splits, tracker, parent, best, run_ids)
        tracker.end_run(parent, "KILLED" if stopped else "FINISHED")
    except TRACKING_ERRORS as e:  # the Optuna results are safe; the same command redoes this part
        summary.tracking_error = f"{type(e).__name__}: {str(e)[:300]}"
    summary.seconds = time.perf_counter() - started
    return summary


def _run_closer(tracker: Tracker):
    """Close the MLflow run of a trial whose process died, if it has one still RUNNING."""
    def close(trial: optuna.trial.FrozenTrial, reason: str, status: str = "KILLED") -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        try:
            if run_id and tracker.client.get_run(run_id).info.status == "RUNNING":
                tracker.finish_trial(run_id, "FAIL", reason, status=status)
        except TRACKING_ERRORS as e:  # the Optuna record is what matters; the run stays open
            log.warning("could not close the MLflow run of trial %s: %s", trial.number, e)
    return close


def _optimize(study: optuna.Study, storage, lock: StudyLock, launcher: TrialLauncher, cfg: ExperimentConfig,
              n_slots: int, progress: StudyProgress, interrupt: Interrupt) -> str | None:
    """Run trials on every slot until the study holds `n_trials` finished (COMPLETE or PRUNED)
    trials, time is up, or the user interrupts. Returns why it stopped early, if it did.

    One thread per slot claims a trial (`study.claim`: within the budget shared by every process
    on the study), runs it and records the outcome, so a slot whose trial ends takes the next at
    once. While other processes' running trials fill the budget, the thread waits, because one of
    them may yet fail and need making up; a dead driver's trials are recovered meanwhile.
    `max(3, slots)` failures in a row stop this process: a config that fails every trial must
    not loop forever.
    """
    n = cfg.search.n_trials
    deadline = None if cfg.search.timeout is None else time.monotonic() + cfg.search.timeout
    limit = max(3, n_slots)
    halt, failures, guard = threading.Event(), [0], threading.Lock()
    why: list[str] = []

    def slot_loop() -> None:
        while not (interrupt.requested or halt.is_set() or (deadline and time.monotonic() >= deadline)):
            trial = claim(study, n, lock)
            if trial is None:
                if finished(study) >= n:
                    return
                recover_dead_trials(study, lock, launcher.close_run)
                halt.wait(WAIT_S)
                continue
            state = _run_trial(study, storage, launcher, trial, progress)
            with guard:
                failures[0] = 0 if state in FINISHED else failures[0] + 1
                if failures[0] >= limit and not halt.is_set():
                    why.append(f"stopped: the last {limit} trials failed (see their fail_reason and logs)")
                    halt.set()

    with ThreadPoolExecutor(n_slots, thread_name_prefix="slot") as pool:
        futures = [pool.submit(slot_loop) for _ in range(n_slots)]
        try:
            while wait(futures, timeout=0.5).not_done:  # short waits keep the main thread's signals prompt
                pass
        except BaseException:  # a second Ctrl-C: the trial processes are stopping; let the threads record it
            halt.set()
            wait(futures)
            raise
        for f in futures:
            f.result()  # a thread's error (e.g. the storage went away) is the search's error
    return why[0] if why else None


def _run_trial(study: optuna.Study, storage, launcher: TrialLauncher, trial: optuna.Trial,
               progress: StudyProgress) -> TrialState:
    value, state = None, TrialState.FAIL
    with heartbeat(storage, trial._trial_id):
        try:
            value, state = launcher(trial), TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except TrialFailed:
            pass
        except Exception as e:  # noqa: BLE001 - a driver-side error fails this trial, not the study
            log.exception("trial %s failed in the driver", trial.number)
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:2000])
    frozen = study.tell(trial, value, state=state, skip_if_finished=True)
    progress.end_trial(trial.number, frozen.state.name, frozen.value, _best_value(study))
    return frozen.state



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


def _baseline(tracker: Tracker, parent: str, splits: Splits, cfg: ExperimentConfig) -> dict:
    logged = tracker.run_metrics(parent)
    if "baseline_test_macro_f1" in logged:  # resumed study: same split, same numbers
        return {k: v for k, v in logged.items() if k.startswith("baseline_")}
    metrics = fit_baseline(splits, cfg.data.seed)
    tracker.log_metrics(parent, metrics)
    return metrics


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
