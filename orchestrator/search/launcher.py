"""The driver's side of one trial: build its `TrialJob`, hand it to the executor in a free slot,
answer the trial's questions, and turn its `TrialOutcome` into what the study records.

The driver alone calls Optuna. A running trial sends its facts (its MLflow run, pid, batch plan,
a new batch-size probe) as events, which are written to its Optuna trial here; it asks after each
evaluation (each epoch's end, and `training.evals_per_epoch` - 1 more inside it) whether to go on, answered with the study's pruner (`report` and `should_prune`), and
whether its score ranks among the checkpoints kept. So a trial process needs no access to the
study's storage, wherever it runs.

The job holds the config with every password redacted (`secrets.public`); the executor gets the
tracking store's real URL separately and passes it to the trial process's environment, which no
file or log records. A trial lost with its process, worker or node is FAIL and re-queued once
with the same parameters (`study.retry_once`).
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
import time
from pathlib import Path

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from orchestrator.config import ExperimentConfig
from orchestrator.config.secrets import public, scrub
from orchestrator.execution.base import Executor
from orchestrator.execution.job import TrialJob, TrialOutcome, config_for_job
from orchestrator.search.interrupts import Interrupt
from orchestrator.search.progress import StudyProgress
from orchestrator.search.study import PROBE_PREFIX, StudyLock, retry_once, trial_record


class TrialFailed(RuntimeError):
    """A trial that cannot produce a valid score (e.g. non-finite loss): marked FAIL, study goes on."""


class TrialLauncher:
    """Run a claimed trial (parameters already sampled) in a free slot of the executor. Returns
    the value, or raises `optuna.TrialPruned` / `TrialFailed`."""

    def __init__(self, cfg: ExperimentConfig, study_dir: Path, data_dir: Path, model_path: str,
                 model_fingerprint: str, parent_run_id: str, executor: Executor, progress: StudyProgress,
                 train_rows: int, interrupt: Interrupt, lock: StudyLock, close_run, lineage: dict | None = None):
        self.cfg, self.study_dir, self.data_dir = cfg, study_dir, data_dir
        self.lineage = lineage or {}
        self.model_path, self.model_fingerprint = model_path, model_fingerprint
        self.parent, self.progress, self.train_rows = parent_run_id, progress, train_rows
        self.interrupt, self.lock, self.close_run = interrupt, lock, close_run
        self.executor = executor
        self.free: queue.Queue[str] = queue.Queue()
        for slot in executor.slots:
            self.free.put(slot)
        self.running: dict[int, optuna.Trial] = {}  # by number: events of any trial arrive on any slot's thread
        self._running_lock = threading.Lock()

    def job(self, trial: optuna.Trial) -> TrialJob:
        probes = {k: v for k, v in trial.study.user_attrs.items() if k.startswith(PROBE_PREFIX)}
        return TrialJob(
            number=trial.number, params=dict(trial.params), probes=probes,
            config=config_for_job(public(self.cfg.to_dict())), source=self.cfg.source, model_path=self.model_path,
            model_fingerprint=self.model_fingerprint, parent_run_id=self.parent, data_dir=str(self.data_dir),
            checkpoint_dir=str(self.study_dir / "checkpoints"),
            keep_local_checkpoint=self.executor.keeps_local_checkpoints,
            keep_checkpoints=self.cfg.search.keep_checkpoints, memory_target=self.cfg.search.memory_target,
            lineage=self.lineage)

    def __call__(self, trial: optuna.Trial) -> float:
        params = dataclasses.replace(self.cfg.training, **trial.params)
        if self.interrupt.requested:  # claimed just as the user interrupted: keep it for the next run
            self._requeue(trial)
            return self._fail(trial, "interrupted before it started; re-queued")
        job = self.job(trial)
        slot = self.free.get()
        with self._running_lock:
            self.running[trial.number] = trial
        try:
            trial.set_user_attr("slot", slot)
            steps = math.ceil(self.train_rows / params.batch_size) * params.epochs
            self.progress.start_trial(trial.number, trial.params, steps, params.epochs, slot)
            started = time.perf_counter()
            outcome = self.executor.run(job, slot, self.on_event)
            self._record(trial, outcome, time.perf_counter() - started)
        finally:
            with self._running_lock:
                self.running.pop(trial.number, None)
            self.free.put(slot)
        if outcome.lost:  # the process (or Ray worker, or node) died before recording an outcome
            reason = outcome.reason or "trial process ended without recording an outcome"
            self._close_orphan_run(trial, reason)
            if self._requeue(trial):
                reason += "; re-queued once with the same parameters"
            return self._fail(trial, reason)
        if outcome.state == "PRUNED":
            trial.set_user_attr("prune_reason", outcome.reason)
            raise optuna.TrialPruned(outcome.reason)
        if outcome.state == "FAIL":
            return self._fail(trial, outcome.reason or "failed")
        return outcome.value

    def on_event(self, event: dict) -> dict | None:
        """An event from any running trial (routed by its number); returns the answer to one that
        asks. Unknown trials' events (one that ended meanwhile) are progress only."""
        trial = self.running.get(event.get("trial"))
        kind = event.get("type")
        if kind in ("step", "eval"):
            self.progress.event(event)
        if trial is None:
            return None
        if kind == "eval":
            # The evaluation's number is the pruner's step (the epoch where each epoch has one).
            trial.report(float(event["value"]), int(event.get("evaluation", event["epoch"])))
            return {"prune": bool(trial.should_prune())}  # numpy bool from the pruner: JSON wants a plain one
        if kind == "keep":
            return {"keep": self._ranks_among_kept(trial, float(event["value"]))}
        if kind == "attrs":
            for key, value in dict(event["attrs"]).items():
                trial.set_user_attr(str(key), value)
        elif kind == "probe" and str(event["key"]).startswith(PROBE_PREFIX):
            trial.study.set_user_attr(event["key"], event["entry"])
        return None

    def _ranks_among_kept(self, trial: optuna.Trial, value: float) -> bool:
        """Whether `value` is among the study's `keep_checkpoints` best so far."""
        done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        maximize = trial.study.direction == StudyDirection.MAXIMIZE  # the study's, which the config must match
        better = [t for t in done if (t.value > value if maximize else t.value < value)]
        return len(better) < self.cfg.search.keep_checkpoints

    def _record(self, trial: optuna.Trial, outcome: TrialOutcome, seconds: float) -> None:
        """What the outcome says for the study's records: the trial's run, where its checkpoint
        is, its timings; and its wall time as the driver saw it, with the share spent outside
        training and evaluation steps (process start, imports, loading, tracking, checkpoint):
        the fixed cost every trial pays."""
        facts = {"mlflow_run_id": outcome.run_id, "checkpoint": outcome.checkpoint,
                 "checkpoint_run": outcome.checkpoint_run, **outcome.timings, **outcome.attrs}
        for key, value in facts.items():
            if value is not None:
                trial.set_user_attr(key, value)
        trial.set_user_attr("wall_seconds", round(seconds, 3))
        if "train_seconds" in outcome.timings and seconds > 0:
            busy = outcome.timings["train_seconds"] + outcome.timings["eval_seconds"]
            trial.set_user_attr("overhead_share", round(max(0.0, 1 - busy / seconds), 4))

    def _requeue(self, trial: optuna.Trial) -> bool:
        with self.lock():
            return retry_once(trial.study, trial_record(trial.study, trial.number))

    def _fail(self, trial: optuna.Trial, reason: str):
        reason = scrub(reason)
        trial.set_user_attr("fail_reason", reason[:2000])
        raise TrialFailed(reason)

    def _close_orphan_run(self, trial: optuna.Trial, reason: str) -> None:
        frozen = trial_record(trial.study, trial.number)  # fresh: the run id came in an event
        self.close_run(frozen, reason, "KILLED" if self.interrupt.requested else "FAILED")
