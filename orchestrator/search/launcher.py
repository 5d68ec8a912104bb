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

Trials packed on one GPU (`search.trials_per_gpu`) never fail for the packing: one that runs out of
memory beside the others (its outcome marks `oom_packed`) is run again, the same Optuna trial,
alone on the whole GPU, once every other slot of that GPU is free and held (`FreeSlots`).
"""

from __future__ import annotations

import dataclasses
import math
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
from orchestrator.search.confirm import CONFIRMS, SEED, is_confirmation
from orchestrator.search.objectives import MEASURED
from orchestrator.search.study import PROBE_PREFIX, StudyLock, retry_once, trial_record


class TrialFailed(RuntimeError):
    """A trial that cannot produce a valid score (e.g. non-finite loss): marked FAIL, study goes on."""


class FreeSlots:
    """The executor's slots not running a trial, first freed first taken. A trial to be run alone
    on its device gives its slot back and reserves the device's every slot, which no other trial
    takes meanwhile; it takes them all once the trials in them have ended. Two such trials on one
    device go one after the other, never each holding a slot the other waits for."""

    def __init__(self, names: list[str]):
        self._free, self._reserved = list(names), set()
        self._changed = threading.Condition()

    def take(self) -> str:
        with self._changed:
            while True:
                name = next((n for n in self._free if n not in self._reserved), None)
                if name is not None:
                    self._free.remove(name)
                    return name
                self._changed.wait()

    def take_all(self, held: str, group: list[str]) -> list[str]:
        """Give back `held` and take every slot of `group` (its device's), waiting for them."""
        wanted = set(group)
        with self._changed:
            self._free.append(held)
            self._changed.notify_all()
            while wanted & self._reserved:  # another trial waits to run alone on this device: after it
                self._changed.wait()
            self._reserved |= wanted
            while not wanted <= set(self._free):
                self._changed.wait()
            for name in group:
                self._free.remove(name)
            self._reserved -= wanted
            return list(group)

    def give(self, names: list[str]) -> None:
        with self._changed:
            self._free.extend(names)
            self._changed.notify_all()


class TrialLauncher:
    """Run a claimed trial (parameters already sampled) in a free slot of the executor. Returns
    the value, or raises `optuna.TrialPruned` / `TrialFailed`."""

    def __init__(self, cfg: ExperimentConfig, study_dir: Path, data_dir: Path, model_path: str,
                 model_fingerprint: str, parent_run_id: str, executor: Executor, progress: StudyProgress,
                 train_rows: int, interrupt: Interrupt, lock: StudyLock, close_run, lineage: dict | None = None,
                 datasets: list[dict] | None = None):
        self.cfg, self.study_dir, self.data_dir = cfg, study_dir, data_dir
        self.lineage, self.datasets = lineage or {}, datasets or []
        self.model_path, self.model_fingerprint = model_path, model_fingerprint
        self.parent, self.progress, self.train_rows = parent_run_id, progress, train_rows
        self.interrupt, self.lock, self.close_run = interrupt, lock, close_run
        self.executor = executor
        self.free = FreeSlots(list(executor.slots))
        self.running: dict[int, optuna.Trial] = {}  # by number: events of any trial arrive on any slot's thread
        self._running_lock = threading.Lock()

    def job(self, trial: optuna.Trial) -> TrialJob:
        probes = {k: v for k, v in trial.study.user_attrs.items() if k.startswith(PROBE_PREFIX)}
        params, tags = dict(trial.params), dict(self.lineage)
        if is_confirmation(trial):  # the configuration of trial N, trained with another seed
            params["seed"] = int(trial.user_attrs[SEED])
            tags.update({"confirmation_of": str(trial.user_attrs[CONFIRMS]),
                         "confirmation_seed": str(trial.user_attrs[SEED])})
        return TrialJob(
            number=trial.number, params=params, probes=probes,
            config=config_for_job(public(self.cfg.to_dict())), source=self.cfg.source, model_path=self.model_path,
            model_fingerprint=self.model_fingerprint, parent_run_id=self.parent, data_dir=str(self.data_dir),
            checkpoint_dir=str(self.study_dir / "checkpoints"),
            keep_local_checkpoint=self.executor.keeps_local_checkpoints,
            keep_checkpoints=self.cfg.search.keep_checkpoints, memory_target=self.cfg.search.memory_target,
            lineage=tags, datasets=self.datasets)

    def __call__(self, trial: optuna.Trial) -> float:
        params = dataclasses.replace(self.cfg.training, **trial.params)
        job = self.job(trial)
        slot = self.free.take()  # may wait while a trial runs alone on a packed GPU
        held = [slot]
        if self.interrupt.requested:  # claimed just as the user interrupted: keep it for the next run
            self.free.give(held)
            self._requeue(trial)
            return self._fail(trial, "interrupted before it started; re-queued")
        with self._running_lock:
            self.running[trial.number] = trial
        try:
            steps = math.ceil(self.train_rows / params.batch_size) * params.epochs
            self.progress.start_trial(trial.number, trial.params, steps, params.epochs, slot)
            outcome = self._run(trial, job, slot)
            if outcome.state == "FAIL" and outcome.attrs.get("oom_packed"):
                alone = self.executor.alone(slot)
                if outcome.run_id:
                    trial.set_user_attr("packed_run_id", outcome.run_id)
                self.progress.print(f"trial {trial.number} ran out of memory sharing its GPU ({slot}); re-running "
                                    f"it alone on {alone} once the trials beside it have ended")
                held = []
                held = self.free.take_all(slot, self.executor.siblings(slot))
                if self.interrupt.requested:  # the FAIL below re-queues it, as a trial lost to the interrupt
                    outcome = TrialOutcome("FAIL", reason="ran out of memory sharing its GPU, and was interrupted "
                                                          "before its re-run alone", lost=True)
                else:
                    outcome = self._run(trial, self.job(trial), alone)
        finally:
            with self._running_lock:
                self.running.pop(trial.number, None)
            self.free.give(held)
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

    def _run(self, trial: optuna.Trial, job: TrialJob, slot: str) -> TrialOutcome:
        trial.set_user_attr("slot", slot)
        started = time.perf_counter()
        outcome = self.executor.run(job, slot, self.on_event)
        self._record(trial, outcome, time.perf_counter() - started)
        return outcome

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
            if is_confirmation(trial):  # its score must be the whole training's: never cut short
                return {"prune": False}
            return {"prune": bool(trial.should_prune())}  # numpy bool from the pruner: JSON wants a plain one
        if kind == "keep":  # a confirmation's weights may become the champion's: kept until it is chosen
            return {"keep": is_confirmation(trial) or self._ranks_among_kept(trial, float(event["value"]))
                    or self._ranks_among_fast(trial, float(event["value"]), event.get("objectives") or {})}
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

    def _ranks_among_fast(self, trial: optuna.Trial, value: float, measured: dict) -> bool:
        """With registry.latency_budget_ms: whether the trial is within it and among the
        `keep_checkpoints` best so far that are, one of which gets @fast at the end."""
        budget = self.cfg.registry.latency_budget_ms
        if budget is None or measured.get("latency_ms", float("inf")) > budget:
            return False
        done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        maximize = trial.study.direction == StudyDirection.MAXIMIZE
        under = [t for t in done if (t.user_attrs.get(MEASURED) or {}).get("latency_ms", float("inf")) <= budget]
        better = [t for t in under if (t.value > value if maximize else t.value < value)]
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
