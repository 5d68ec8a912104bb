"""The driver's side of one trial: build its `TrialJob`, hand it to the executor in a free slot,
and turn its `TrialOutcome` into what the study records.

The job holds the config with every password redacted (`secrets.public`); the executor gets the
real storage and tracking URLs separately and passes them to the trial process's environment,
which no file or log records. A trial lost with its process, worker or node is FAIL and
re-queued once with the same parameters.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import time
from pathlib import Path

import optuna

from orchestrator.config import ExperimentConfig
from orchestrator.config.secrets import public, scrub
from orchestrator.execution.base import Executor
from orchestrator.execution.job import TrialJob
from orchestrator.search.interrupts import Interrupt
from orchestrator.search.progress import StudyProgress
from orchestrator.search.study import StudyLock, requeue_once


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

    def job(self, trial: optuna.Trial) -> TrialJob:
        return TrialJob(
            number=trial.number, trial_id=trial._trial_id, params=dict(trial.params),
            config=public(self.cfg.to_dict()), source=self.cfg.source, model_path=self.model_path,
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
        try:
            trial.set_user_attr("slot", slot)
            steps = math.ceil(self.train_rows / params.batch_size) * params.epochs
            self.progress.start_trial(trial.number, trial.params, steps, params.epochs, slot)
            started = time.perf_counter()
            outcome = self.executor.run(job, slot, self.progress.event)
            self._record_overhead(trial, time.perf_counter() - started)
        finally:
            self.free.put(slot)
        if outcome.lost:  # the process (or Ray worker, or node) died before recording an outcome
            reason = outcome.reason or "trial process ended without recording an outcome"
            self._close_orphan_run(trial, reason)
            if self._requeue(trial):
                reason += "; re-queued once with the same parameters"
            return self._fail(trial, reason)
        if outcome.state == "PRUNED":
            raise optuna.TrialPruned(outcome.reason)
        if outcome.state == "FAIL":
            return self._fail(trial, outcome.reason or "failed")
        return outcome.value

    def _record_overhead(self, trial: optuna.Trial, seconds: float) -> None:
        """The trial's wall time as the driver saw it, and the share of it spent outside training
        and evaluation steps (process start, imports, loading, tracking, checkpoint): the fixed
        cost every trial pays."""
        attrs = trial.study._storage.get_trial(trial._trial_id).user_attrs  # fresh: the trial set its timings
        trial.set_user_attr("wall_seconds", round(seconds, 3))
        if "train_seconds" in attrs and seconds > 0:
            busy = attrs["train_seconds"] + attrs["eval_seconds"]
            trial.set_user_attr("overhead_share", round(max(0.0, 1 - busy / seconds), 4))

    def _requeue(self, trial: optuna.Trial) -> bool:
        with self.lock():
            return requeue_once(trial.study, trial)

    def _fail(self, trial: optuna.Trial, reason: str):
        reason = scrub(reason)
        trial.set_user_attr("fail_reason", reason[:2000])
        raise TrialFailed(reason)

    def _close_orphan_run(self, trial: optuna.Trial, reason: str) -> None:
        frozen = trial.study._storage.get_trial(trial._trial_id)  # fresh: the child set its run id
        self.close_run(frozen, reason, "KILLED" if self.interrupt.requested else "FAILED")
