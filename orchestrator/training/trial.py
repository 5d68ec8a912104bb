"""One trial inside its own process: the objective's body, run by `orchestrator.execution.worker`.

The driver (`search.py`) has already created the Optuna trial and sampled its parameters; this
process re-attaches to the trial through the storage, probes the batch size on a GPU, runs
`train.train`, reports each epoch to the trial (so the pruner can stop it), logs the trial's
nested MLflow run, logs its best-epoch checkpoint to the run's artifacts while it ranks among
the study's `search.keep_checkpoints` best, and returns its `TrialOutcome`.
Half of the search, kept apart so that a crash, leak or OOM here takes only this trial down.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import traceback
from pathlib import Path

import optuna
import torch
from mlflow.exceptions import MlflowException

from orchestrator.training import probe as memory
from orchestrator.config import paths
from orchestrator.training import loop as train
from orchestrator.config import ExperimentConfig, TrainingConfig, from_dict
from orchestrator.config.load import FROM_ENVIRONMENT
from orchestrator.config.secrets import scrub
from orchestrator.data import Splits, load_saved_splits
from orchestrator.execution.job import WARM_START, TrialJob, TrialOutcome, emit
from orchestrator.search.study import make_pruner
from orchestrator.tasks import Task, get_task, thresholds
from orchestrator.tasks.names import class_count_tag
from orchestrator.tracking.client import CHECKPOINT_ARTIFACT, BestEffort, Tracker


def job_config(job: TrialJob) -> ExperimentConfig:
    """The job's config (written with passwords redacted) with the stores' real URLs, which the
    driver passes through this process's environment."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in job.config.items()}
    for (section, key), variable in FROM_ENVIRONMENT.items():
        if os.environ.get(variable):
            raw[section][key] = os.environ[variable]
    return from_dict(raw, source=job.source)


def run_trial(job: TrialJob, clock: float | None = None) -> TrialOutcome | None:
    """Run the job's trial; returns its outcome on the main process, None on other ranks.
    `clock`: when this process got the job (`time.time()`), for the timing line in the log."""
    entered = time.time()
    cfg = job_config(job)
    is_main = int(os.environ.get("RANK", "0")) == 0
    storage = optuna.storages.RDBStorage(paths.absolute_sqlite(cfg.search.storage))
    study = optuna.load_study(study_name=cfg.study_name, storage=storage, pruner=make_pruner(cfg.search))
    trial = optuna.trial.Trial(study, job.trial_id)
    params = dataclasses.replace(cfg.training, **trial.params)
    splits = load_saved_splits(job.data_dir)
    task = get_task(cfg.task, cfg)
    run = _TrialRun(cfg, job, trial, splits, task) if is_main else None
    opened = time.time()

    # batch_size is the effective batch: each of a multi-process launch's ranks takes its share.
    per_device, accumulation = math.ceil(params.batch_size / int(os.environ.get("WORLD_SIZE", "1"))), 1
    eval_batch = None
    if torch.cuda.is_available():
        largest = _probe(study, params, job, run, task, cfg.model.attention)
        per_device, accumulation = memory.plan_batch(per_device, largest)
        # A forward pass without gradients at the probed training batch fits where the training step did.
        eval_batch = max(params.eval_batch_size, largest or 0)
    oom_retried = False
    while True:
        if run:
            run.record_batch(per_device, accumulation, oom_retried)
        try:
            result = train.train(
                params, cfg.model, splits, job.model_path, run.on_step if run else None,
                run.on_evaluate if run else None, metric=cfg.search.metric,
                greater_is_better=cfg.search.direction == "maximize", per_device_batch_size=per_device,
                gradient_accumulation_steps=accumulation, cache_dir=job.data_dir, task=task,
                eval_batch_size=eval_batch)
            trained = time.time()
            break
        except Exception as e:  # noqa: BLE001 - an OOM gets one retry; everything else fails the trial
            if memory.is_oom(e) and not oom_retried and per_device > 1:
                per_device, accumulation, oom_retried = per_device // 2, accumulation * 2, True
                _release()
                continue
            traceback.print_exc()  # the whole story goes to the trial's log; the reason is its last line
            reason = scrub(f"{type(e).__name__}: {e}")
            if memory.is_oom(e):
                reason = f"out of memory at per-device batch {per_device} (after one retry at half): {e}"
            if run:
                run.finish("FAIL", reason)
            return TrialOutcome("FAIL", reason=reason) if is_main else None
    if not run:
        return None
    outcome = run.conclude(result, params)
    # Where the trial's wall time went, for whoever wonders why a trial took longer than its epochs.
    print(f"timing: imports {entered - (clock or entered):.1f} s, stores and data {opened - entered:.1f} s, "
          f"training setup {result.setup_seconds:.1f} s, training {result.train_seconds:.1f} s, evaluation "
          f"{result.eval_seconds:.1f} s, results and checkpoint {time.time() - trained:.1f} s", flush=True)
    return outcome


def _release() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _probe(study: optuna.Study, params: TrainingConfig, job: TrialJob, run: _TrialRun | None, task: Task,
           attention: str) -> int | None:
    """Largest per-device batch for this configuration on this GPU, cached in the study."""
    props = torch.cuda.get_device_properties(0)
    precision = train.precision_for(cpu=False)
    key_text = "|".join(map(str, (job.model_fingerprint, task.name, params.head, params.strategy,
                                  params.freeze_layers, params.max_length, precision, attention, props.name,
                                  props.total_memory)))
    key = "probe:" + hashlib.sha1(key_text.encode()).hexdigest()[:16]
    cached = study.user_attrs.get(key)
    if cached is not None:
        return cached["batch_size"] or None
    labels = len(json.loads(Path(job.data_dir, "label_names.json").read_text()))
    result = memory.probe_config(job.model_path, params, labels, precision, job.memory_target, task=task,
                                 attention=attention)
    entry = {**result.to_dict(), "config": key_text}
    study.set_user_attr(key, entry)
    if run:
        run.tracker.log_text(job.parent_run_id, json.dumps(entry, indent=2), f"probes/{key[6:]}.json")
    return result.batch_size or None


class _TrialRun:
    """The main process's view of a trial: its MLflow run, Optuna reports and progress events."""

    def __init__(self, cfg: ExperimentConfig, job: TrialJob, trial: optuna.Trial, splits: Splits, task: Task):
        self.cfg, self.job, self.trial, self.splits, self.task = cfg, job, trial, splits, task
        self.metric = cfg.search.metric
        self.maximize = cfg.search.direction == "maximize"
        tracking = cfg.tracking
        self.tracker = BestEffort(lambda: Tracker(tracking.uri, cfg.experiment_name, tracking.artifact_location))
        params = dataclasses.replace(cfg.training, **trial.params)
        self.run_id = self.tracker.start_trial(job.parent_run_id, cfg.study_name, trial.number,
                                               dataclasses.asdict(params))
        if self.run_id:
            trial.set_user_attr("mlflow_run_id", self.run_id)
            self._track("set_tags", job.lineage)
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("warm_start", os.environ.get(WARM_START) == "1")  # ran in a spare

    def _track(self, method: str, *args, **kwargs):
        if self.run_id:  # None when the store was unreachable as the trial started
            return getattr(self.tracker, method)(self.run_id, *args, **kwargs)
        return None

    def record_batch(self, per_device: int, accumulation: int, oom_retried: bool) -> None:
        info = {"per_device_batch_size": per_device, "gradient_accumulation_steps": accumulation,
                "oom_retried": oom_retried}
        for k, v in info.items():
            self.trial.set_user_attr(k, v)
        self._track("set_tags", info)

    def on_step(self, step: int, metrics: dict) -> None:
        self._track("log_metrics", {k: metrics[k] for k in ("train_loss", "learning_rate")}, step)
        emit({"type": "step", "trial": self.trial.number, "step": step, "epoch": metrics["epoch"],
                        "loss": metrics["train_loss"]})

    def on_evaluate(self, epoch: int, step: int, metrics: dict) -> bool:
        self._track("log_metrics", metrics, step=epoch)
        emit({"type": "eval", "trial": self.trial.number, "epoch": epoch,
                        "value": metrics[self.metric]})
        self.trial.report(metrics[self.metric], epoch)
        return not self.trial.should_prune()

    def finish(self, state: str, reason: str | None = None) -> None:
        self._track("finish_trial", state, reason)

    def conclude(self, result: train.TrainResult, params: TrainingConfig) -> TrialOutcome:
        self.trial.set_user_attr("processes", result.processes)
        timing = {"setup_seconds": result.setup_seconds, "train_seconds": result.train_seconds,
                  "eval_seconds": result.eval_seconds}
        for k, v in timing.items():  # the driver sets this trial's share of time outside them
            self.trial.set_user_attr(k, round(v, 3))
        self._track("log_metrics", {
            "best_epoch": result.best_epoch, "seconds_per_epoch": result.seconds_per_epoch,
            "train_samples_per_second": result.samples_per_second, "train_rows": result.train_rows,
            "trainable_parameters": result.trainable_parameters, **timing})
        # Through safe_name like every key made from a label: a raw label ('["joy"]') is no valid tag key.
        self._track("set_tags", {class_count_tag(k): v for k, v in result.class_counts.items()})
        if result.stopped == "pruned":
            reason = f"pruned after epoch {len(result.history)}"
            self.finish("PRUNED", reason)
            return TrialOutcome("PRUNED", reason=reason)
        if result.stopped or not result.best_metrics:
            reason = result.stopped or "no epoch finished"
            self.finish("FAIL", reason)
            return TrialOutcome("FAIL", reason=reason)
        value = result.best_metrics[self.metric]
        self._log_validation(result)
        if self._ranks_among_kept(value):
            self._keep_checkpoint(result, params)
        self.finish("COMPLETE")
        return TrialOutcome("COMPLETE", value, metrics=dict(result.best_metrics))

    def _log_validation(self, result: train.TrainResult) -> None:
        # How the decision threshold(s) were chosen and whether a target was missed: on the run, and
        # on the trial, from which the search's summary reads the champion's.
        post, names = result.val_evaluation.post, self.splits.label_names
        threshold_tags, note = thresholds.tags(post, names), thresholds.describe(post, names)
        if threshold_tags:
            self._track("set_tags", threshold_tags)
            self.trial.set_user_attr("threshold_tags", threshold_tags)
            self.trial.set_user_attr("threshold_note", note)
        for artifact in self.task.artifacts(result.val_evaluation, result.val_outputs, self.splits.data["validation"],
                                            self.splits.label_names, "validation"):
            self._track(f"log_{artifact.kind}", artifact.value, artifact.name)

    def _ranks_among_kept(self, value: float) -> bool:
        """Whether this trial is among the `keep_checkpoints` best so far: only those save their
        model (the driver deletes those that fall out of the ranking at the end)."""
        done = self.trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        better = [t for t in done if (t.value > value if self.maximize else t.value < value)]
        return len(better) < self.job.keep_checkpoints

    def _keep_checkpoint(self, result: train.TrainResult, params: TrainingConfig) -> None:
        """Save this trial's best-epoch model and log it to the trial run's artifacts, from which
        any machine can fetch it. The local copy stays where this is the driver's disk; elsewhere
        (a Ray node) it is deleted once uploaded, and kept only if the upload failed."""
        folder = Path(self.job.checkpoint_dir) / f"trial-{self.trial.number}"
        meta = {"task": self.task.name, "label_names": self.splits.label_names, "max_length": params.max_length,
                "post": result.val_evaluation.post, "saved": self.task.saved_settings(self.splits),
                "study": self.cfg.study_name, "trial": self.trial.number, "params": dataclasses.asdict(params)}
        result.model.save(folder, result.tokenizer, meta)
        if self._upload(folder):
            self.trial.set_user_attr("checkpoint_run", self.run_id)
            if not self.job.keep_local_checkpoint:
                shutil.rmtree(folder, ignore_errors=True)
                return
        self.trial.set_user_attr("checkpoint", str(folder.resolve()))

    def _upload(self, folder: Path) -> bool:
        """The checkpoint into the run's artifacts. A store that refuses it (a size limit in front
        of the server, a user without write access) costs the trial its stored copy, not its
        result: the traceback goes to the trial's log and the local copy is kept."""
        try:
            return bool(self._track("log_artifacts", folder, CHECKPOINT_ARTIFACT))
        except (MlflowException, OSError):
            traceback.print_exc()
            print(f"trial {self.trial.number}: checkpoint not stored in the artifact store; kept at {folder}",
                  flush=True)
            return False
