"""One trial inside its own process: the objective's body, run by `orchestrator.training.worker`.

The driver (`search/`) has already created the Optuna trial and sampled its parameters, which
come in the job. This process probes the batch size on a GPU, runs `loop.train`, sends each
epoch's score to the driver and asks whether to go on (the driver's pruner decides), logs the
trial's nested MLflow run, logs its best-epoch checkpoint to the run's artifacts while it ranks
among the study's `search.keep_checkpoints` best (the driver says), and returns its
`TrialOutcome`. It never opens the study's storage, so it needs no credentials for it.
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

import torch

from orchestrator.config import ExperimentConfig, TrainingConfig, from_dict
from orchestrator.config.load import FROM_ENVIRONMENT
from orchestrator.config.secrets import scrub
from orchestrator.data import Splits, load_saved_splits
from orchestrator.execution.job import WARM_START, TrialJob, TrialOutcome, ask, emit
from orchestrator.execution.slots import GPU_SHARE, PACKED_MEMORY
from orchestrator.tasks import Task, get_task, thresholds
from orchestrator.tasks.names import class_count_tag
from orchestrator.tracking.client import CHECKPOINT_ARTIFACT, TAG_ROLE, BestEffort, Tracker, TrackingStoreError
from orchestrator.training import loop, probe


def job_config(job: TrialJob) -> ExperimentConfig:
    """The job's config (written with passwords redacted) with the tracking store's real URL,
    which the driver passes through this process's environment."""
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
    params = dataclasses.replace(cfg.training, **job.params)
    splits = load_saved_splits(job.data_dir)
    task = get_task(cfg.task, cfg)
    run = _TrialRun(cfg, job, splits, task) if is_main else None
    opened = time.time()

    # batch_size is the effective batch: each of a multi-process launch's ranks takes its share.
    per_device, accumulation = math.ceil(params.batch_size / int(os.environ.get("WORLD_SIZE", "1"))), 1
    eval_batch = None
    share = gpu_share()
    if torch.cuda.is_available():
        if share < 1:  # packed beside other trials (search.trials_per_gpu): never into their memory
            torch.cuda.set_per_process_memory_fraction(share * PACKED_MEMORY, 0)
        largest = _probe(params, job, run, task, cfg.model.attention, share)
        per_device, accumulation = probe.plan_batch(per_device, largest)
        # A forward pass without gradients at the probed training batch fits where the training step did.
        eval_batch = max(params.eval_batch_size, largest or 0)
    oom_retried = False
    while True:
        if run:
            run.record_batch(per_device, accumulation, oom_retried)
        try:
            result = loop.train(
                params, cfg.model, splits, job.model_path, run.on_step if run else None,
                run.on_evaluate if run else None, metric=cfg.search.metric,
                greater_is_better=cfg.search.direction == "maximize", per_device_batch_size=per_device,
                gradient_accumulation_steps=accumulation, cache_dir=job.data_dir, task=task,
                eval_batch_size=eval_batch)
            trained = time.time()
            break
        except Exception as e:  # noqa: BLE001 - an OOM gets one retry; everything else fails the trial
            if probe.is_oom(e) and share < 1:
                return _packed_out_of_memory(e, share, per_device, run)
            if probe.is_oom(e) and not oom_retried and per_device > 1:
                per_device, accumulation, oom_retried = per_device // 2, accumulation * 2, True
                _release()
                continue
            traceback.print_exc()  # the whole story goes to the trial's log; the reason is its last line
            reason = scrub(f"{type(e).__name__}: {e}")
            if probe.is_oom(e):
                reason = f"out of memory at per-device batch {per_device} (after one retry at half): {e}"
            if run:
                run.finish("FAIL", reason)
            return TrialOutcome("FAIL", reason=reason, run_id=run.run_id) if run else None
    if not run:
        return None
    outcome = run.conclude(result, params)
    # Where the trial's wall time went, for whoever wonders why a trial took longer than its epochs.
    print(f"timing: imports {entered - (clock or entered):.1f} s, stores and data {opened - entered:.1f} s, "
          f"training setup {result.setup_seconds:.1f} s, training {result.train_seconds:.1f} s, evaluation "
          f"{result.eval_seconds:.1f} s, results and checkpoint {time.time() - trained:.1f} s", flush=True)
    return outcome


def gpu_share() -> float:
    """This trial's share of its GPU: 1/N where N trials are packed on it (`slots.GPU_SHARE`), else 1."""
    try:
        share = float(os.environ.get(GPU_SHARE) or 1)
    except ValueError:
        return 1.0
    return share if 0 < share < 1 else 1.0


def _packed_out_of_memory(error: Exception, share: float, per_device: int, run: _TrialRun | None
                          ) -> TrialOutcome | None:
    """Out of memory beside other trials: no retry at half the batch here, the driver re-runs the
    trial alone on the whole GPU (`oom_packed`). This attempt's run steps aside (its role is no
    longer `trial`), so that the study's one run per trial is the re-run's."""
    traceback.print_exc()
    reason = (f"out of memory sharing the GPU ({share:.3g} of it) at per-device batch {per_device}: "
              f"{scrub(str(error))[:300]}; re-run alone on the whole GPU")
    if not run:
        return None
    run._track("set_tags", {TAG_ROLE: "packed_attempt", "oom_packed": "true"})
    run.finish("FAIL", reason)
    return TrialOutcome("FAIL", reason=reason, run_id=run.run_id, attrs={"oom_packed": True})


def _release() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _probe(params: TrainingConfig, job: TrialJob, run: _TrialRun | None, task: Task, attention: str,
           share: float = 1.0) -> int | None:
    """Largest per-device batch for this configuration on this GPU (on `share` of it, where trials
    are packed: under `memory_target * share`), cached in the study: the job brings the probes
    cached so far, a new one goes to the driver, which records it. A share below 1 is part of the
    cache key, so a packed trial's probe never stands for a whole GPU's, or the reverse."""
    props = torch.cuda.get_device_properties(0)
    precision = loop.precision_for(cpu=False)
    key_text = "|".join(map(str, (job.model_fingerprint, task.name, params.head, params.strategy,
                                  params.freeze_layers, params.max_length, precision, attention, props.name,
                                  props.total_memory)))
    if share < 1:  # appended, not inserted: the keys of probes on a whole GPU stay what they were
        key_text += f"|share={share:.6g}"
    key = "probe:" + hashlib.sha1(key_text.encode()).hexdigest()[:16]
    cached = job.probes.get(key)
    if cached is not None:
        return cached["batch_size"] or None
    labels = len(json.loads(Path(job.data_dir, "label_names.json").read_text()))
    result = probe.probe_config(job.model_path, params, labels, precision, job.memory_target * share, task=task,
                                 attention=attention)
    entry = {**result.to_dict(), "config": key_text, "share": share}
    if run:
        emit({"type": "probe", "trial": job.number, "key": key, "entry": entry})
        run.tracker.log_text(job.parent_run_id, json.dumps(entry, indent=2), f"probes/{key[6:]}.json")
    return result.batch_size or None


class _TrialRun:
    """The main process's view of a trial: its MLflow run, and what it tells and asks the driver."""

    def __init__(self, cfg: ExperimentConfig, job: TrialJob, splits: Splits, task: Task):
        self.cfg, self.job, self.splits, self.task = cfg, job, splits, task
        self.number = job.number
        self.metric = cfg.search.metric
        tracking = cfg.tracking
        self.tracker = BestEffort(lambda: Tracker(tracking.uri, cfg.experiment_name, tracking.artifact_location))
        params = dataclasses.replace(cfg.training, **job.params)
        self.run_id = self.tracker.start_trial(job.parent_run_id, cfg.study_name, job.number,
                                               dataclasses.asdict(params))
        self.attrs: dict = {}  # what the outcome carries for the study's records
        if self.run_id:
            self._track("set_tags", job.lineage)
            self._track("log_datasets", job.datasets)
        # At once, not with the outcome: a trial whose process dies leaves its run for the driver to close.
        self.tell({"mlflow_run_id": self.run_id, "pid": os.getpid(),
                   "warm_start": os.environ.get(WARM_START) == "1"})  # ran in a spare
        self._track("watch_system")  # the machine's CPU, memory and GPU use, sampled on the run until `finish`

    def tell(self, attrs: dict) -> None:
        """Facts for the trial's record in the study, which the driver writes."""
        emit({"type": "attrs", "trial": self.number, "attrs": {k: v for k, v in attrs.items() if v is not None}})

    def _track(self, method: str, *args, **kwargs):
        if self.run_id:  # None when the store was unreachable as the trial started
            return getattr(self.tracker, method)(self.run_id, *args, **kwargs)
        return None

    def record_batch(self, per_device: int, accumulation: int, oom_retried: bool) -> None:
        info = {"per_device_batch_size": per_device, "gradient_accumulation_steps": accumulation,
                "oom_retried": oom_retried}
        self.tell(info)
        self._track("set_tags", info)
        if torch.cuda.is_available():  # training starts now: the probe's and a failed try's peaks are not its own
            torch.cuda.reset_peak_memory_stats()

    def on_step(self, step: int, metrics: dict) -> None:
        self._track("log_metrics", {k: metrics[k] for k in ("train_loss", "learning_rate")}, step)
        emit({"type": "step", "trial": self.number, "step": step, "epoch": metrics["epoch"],
              "loss": metrics["train_loss"]})

    def on_evaluate(self, epoch: float, step: int, metrics: dict) -> bool:
        """Whether training goes on: the driver reports the score to the study, at the evaluation's
        number, and asks its pruner. An evaluation inside an epoch (`training.evals_per_epoch`) is
        logged as `interim_<metric>` by training step; an epoch's end, every metric by epoch."""
        value = metrics[self.metric]
        if metrics.get("rows") is not None:  # inside an epoch, maybe on a subsample: not the epoch's metrics
            self._track("log_metrics", {f"interim_{self.metric}": value}, step=step)
        else:
            self._track("log_metrics", metrics, step=int(epoch))
        answer = ask({"type": "eval", "trial": self.number, "epoch": epoch, "evaluation": metrics["evaluation"],
                      "value": value})
        return not (answer or {}).get("prune", False)

    def finish(self, state: str, reason: str | None = None) -> None:
        self._track("finish_trial", state, reason)

    def conclude(self, result: loop.TrainResult, params: TrainingConfig) -> TrialOutcome:
        timing = {"setup_seconds": result.setup_seconds, "train_seconds": result.train_seconds,
                  "eval_seconds": result.eval_seconds}
        self.attrs["processes"] = result.processes
        memory = self._peak_gpu_memory()
        if memory:
            self.attrs["peak_gpu_memory_share"] = round(memory["peak_gpu_memory_share"], 4)
        self._track("log_metrics", {
            "best_epoch": result.best_epoch, "seconds_per_epoch": result.seconds_per_epoch,
            "train_samples_per_second": result.samples_per_second, "train_rows": result.train_rows,
            "trainable_parameters": result.trainable_parameters, **timing, **memory})
        # Through safe_name like every key made from a label: a raw label ('["joy"]') is no valid tag key.
        self._track("set_tags", {class_count_tag(k): v for k, v in result.class_counts.items()})
        timings = {k: round(v, 3) for k, v in timing.items()}
        if result.stopped == "pruned":
            last = result.history[-1]
            reason = (f"pruned at epoch {last['epoch']} (evaluation {last['evaluation']})" if last.get("interim")
                      else f"pruned after epoch {last['epoch']}")
            self.finish("PRUNED", reason)
            return self._outcome("PRUNED", reason=reason, timings=timings)
        if result.stopped or not result.best_metrics:
            reason = result.stopped or "no epoch finished"
            self.finish("FAIL", reason)
            return self._outcome("FAIL", reason=reason, timings=timings)
        value = result.best_metrics[self.metric]
        self._log_validation(result)
        measured = self._measure_objectives(result, params)
        checkpoint = checkpoint_run = None
        if self._ranks_among_kept(value, measured):
            checkpoint, checkpoint_run = self._keep_checkpoint(result, params)
        self.finish("COMPLETE")
        return self._outcome("COMPLETE", value, metrics=dict(result.best_metrics), timings=timings,
                             checkpoint=checkpoint, checkpoint_run=checkpoint_run)

    @staticmethod
    def _peak_gpu_memory() -> dict[str, float]:
        """The most memory PyTorch held on this process's GPU while training (since `record_batch`),
        in bytes and as a share of the card: how close the trial came to running out, and how much
        room a larger batch would have. The main process's GPU stands for every rank's. Nothing on
        CPU, which has no such peak (not a peak of zero)."""
        if not torch.cuda.is_available():
            return {}
        device = torch.cuda.current_device()
        peak = torch.cuda.max_memory_reserved(device)
        if not peak:
            return {}
        total = torch.cuda.get_device_properties(device).total_memory
        return {"peak_gpu_memory_bytes": peak, "peak_gpu_memory_share": peak / total}

    def _outcome(self, state: str, value: float | None = None, **fields) -> TrialOutcome:
        return TrialOutcome(state, value, run_id=self.run_id, attrs=dict(self.attrs), **fields)

    def _log_validation(self, result: loop.TrainResult) -> None:
        # How the decision threshold(s) were chosen and whether a target was missed: on the run, and
        # on the trial, from which the search's summary reads the champion's.
        post, names = result.val_evaluation.post, self.splits.label_names
        threshold_tags, note = thresholds.tags(post, names), thresholds.describe(post, names)
        if threshold_tags:
            self._track("set_tags", threshold_tags)
            self.attrs.update(threshold_tags=threshold_tags, threshold_note=note)
        for artifact in self.task.artifacts(result.val_evaluation, result.val_outputs, self.splits.data["validation"],
                                            self.splits.label_names, "validation"):
            self._track(f"log_{artifact.kind}", artifact.value, artifact.name)

    def _measure_objectives(self, result: loop.TrainResult, params: TrainingConfig) -> dict:
        """`search.objectives` beyond quality, on the best-epoch model (`training/objectives.py`):
        on the run as `objective_<name>`, and for the study (user attr `objectives`). A model
        that cannot be measured says why (`objectives_error`); its trial keeps its quality score."""
        wanted = (self.cfg.search.objectives or [])[1:]
        if not wanted or "confirmation_of" in self.job.lineage:  # a confirmation repeats a measured configuration
            return {}
        from orchestrator.training import objectives

        saved = self.task.saved_settings(self.splits)
        validation = self.splits.data["validation"]
        texts = self.task.inputs(validation.select(range(min(1, len(validation)))), saved)
        meta = {"task": self.task.name, "label_names": self.splits.label_names, "max_length": params.max_length,
                "post": result.val_evaluation.post, "saved": saved}
        try:
            measured = objectives.measure(result.model, result.tokenizer, meta, texts, wanted)
        except Exception as e:  # noqa: BLE001 - a measurement that fails costs the front this trial, not its score
            traceback.print_exc()
            self.attrs["objectives_error"] = scrub(f"{type(e).__name__}: {e}")[:500]
            return {}
        self.attrs["objectives"] = measured
        self._track("log_metrics", {f"objective_{k}": v for k, v in measured.items()})
        return measured

    def _ranks_among_kept(self, value: float, measured: dict | None = None) -> bool:
        """Whether this trial is among the `keep_checkpoints` best so far (or, with a latency
        budget, among the best within it): only those save their model (the driver deletes those
        that fall out of the ranking at the end). The driver knows the study's scores; unanswered,
        the trial keeps its model rather than lose a champion."""
        answer = ask({"type": "keep", "trial": self.number, "value": value, "objectives": measured or {}})
        return (answer or {}).get("keep", True)

    def _keep_checkpoint(self, result: loop.TrainResult, params: TrainingConfig) -> tuple[str | None, str | None]:
        """Save this trial's best-epoch model and log it to the trial run's artifacts, from which
        any machine can fetch it. The local copy stays where this is the driver's disk; elsewhere
        (a Ray node) it is deleted once uploaded, and kept only if the upload failed.
        Returns (local folder or None, the run holding the upload or None)."""
        folder = Path(self.job.checkpoint_dir) / f"trial-{self.number}"
        meta = {"task": self.task.name, "label_names": self.splits.label_names, "max_length": params.max_length,
                "post": result.val_evaluation.post, "saved": self.task.saved_settings(self.splits),
                "study": self.cfg.study_name, "trial": self.number, "params": dataclasses.asdict(params)}
        result.model.save(folder, result.tokenizer, meta)
        uploaded = self.run_id if self._upload(folder) else None
        # At once: a trial that dies before its outcome must not leave an upload nobody deletes.
        self.tell({"checkpoint_run": uploaded})
        if uploaded and not self.job.keep_local_checkpoint:
            shutil.rmtree(folder, ignore_errors=True)
            return None, uploaded
        return str(folder.resolve()), uploaded

    def _upload(self, folder: Path) -> bool:
        """The checkpoint into the run's artifacts. A store that refuses it (a size limit in front
        of the server, a user without write access) costs the trial its stored copy, not its
        result: the traceback goes to the trial's log and the local copy is kept."""
        try:
            return bool(self._track("log_artifacts", folder, CHECKPOINT_ARTIFACT))
        except (TrackingStoreError, OSError):
            traceback.print_exc()
            print(f"trial {self.number}: checkpoint not stored in the artifact store; kept at {folder}",
                  flush=True)
            return False
