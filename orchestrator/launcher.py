"""The driver's side of one trial: write its job, run it in a free slot's child process, read
its outcome.

The job file holds the config with every password redacted (`secrets.public`); the child gets
the real storage and tracking URLs through its environment, which no file or log records.
"""

from __future__ import annotations

import dataclasses
import json
import math
import queue
from pathlib import Path

import optuna

from orchestrator import paths, scheduler
from orchestrator.config import ExperimentConfig
from orchestrator.config.load import FROM_ENVIRONMENT
from orchestrator.config.secrets import public, scrub
from orchestrator.interrupt import Interrupt
from orchestrator.progress import StudyProgress
from orchestrator.study import StudyLock, requeue_once


class TrialFailed(RuntimeError):
    """A trial that cannot produce a valid score (e.g. non-finite loss): marked FAIL, study goes on."""


def secret_environment(cfg: ExperimentConfig) -> dict[str, str]:
    """What a trial process needs that must not be written down: the stores' real URLs, in the
    variables a config may take them from (`trial.job_config` reads them back)."""
    return {variable: paths.absolute_sqlite(getattr(getattr(cfg, section), key))
            for (section, key), variable in FROM_ENVIRONMENT.items()}


class TrialLauncher:
    """Run a claimed trial (parameters already sampled) in a free slot's child process. Returns
    the value, or raises `optuna.TrialPruned` / `TrialFailed`."""

    def __init__(self, cfg: ExperimentConfig, study_dir: Path, data_dir: Path, model_path: str,
                 model_fingerprint: str, parent_run_id: str, slots: list[scheduler.Slot], progress: StudyProgress,
                 train_rows: int, interrupt: Interrupt, lock: StudyLock, close_run):
        self.cfg, self.study_dir, self.data_dir = cfg, study_dir, data_dir
        self.model_path, self.model_fingerprint = model_path, model_fingerprint
        self.parent, self.progress, self.train_rows = parent_run_id, progress, train_rows
        self.interrupt, self.lock, self.close_run = interrupt, lock, close_run
        self.children = interrupt.children
        self.env = secret_environment(cfg)
        self.free: queue.Queue[scheduler.Slot] = queue.Queue()
        for slot in slots:
            self.free.put(slot)

    def __call__(self, trial: optuna.Trial) -> float:
        params = dataclasses.replace(self.cfg.training, **trial.params)
        if self.interrupt.requested:  # claimed just as the user interrupted: keep it for the next run
            self._requeue(trial)
            return self._fail(trial, "interrupted before it started; re-queued")
        jobs = paths.inside(self.study_dir, self.study_dir / "jobs")
        jobs.mkdir(parents=True, exist_ok=True)
        result_path = jobs / f"trial-{trial.number}.result.json"
        result_path.unlink(missing_ok=True)
        job = {"config": public(self.cfg.to_dict()), "source": self.cfg.source, "trial_id": trial._trial_id,
               "model_path": self.model_path, "model_fingerprint": self.model_fingerprint,
               "parent_run_id": self.parent, "splits_dir": str(self.data_dir), "cache_dir": str(self.data_dir),
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
                                          self.progress.event, self.children, self.env)
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
        reason = scrub(reason)
        trial.set_user_attr("fail_reason", reason[:2000])
        raise TrialFailed(reason)

    def _close_orphan_run(self, trial: optuna.Trial, reason: str) -> None:
        frozen = trial.study._storage.get_trial(trial._trial_id)  # fresh: the child set its run id
        self.close_run(frozen, reason, "KILLED" if self.interrupt.requested else "FAILED")
