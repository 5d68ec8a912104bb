"""One fine-tune, top to bottom: data, model, optimizer, schedule, loop, evaluation, best epoch.

Knows nothing of Optuna or MLflow. The caller passes plain hyperparameters (`TrainingConfig`),
the study's splits, and optional callbacks; `on_evaluate` returning False stops training (that
is how a pruner stops a trial). The result carries the best epoch's weights, not the last.

`training.evals_per_epoch` > 1 adds evaluations inside each epoch, on `training.eval_subsample`
validation rows (the same rows every time) or the whole split: each goes to `on_evaluate`, so a
pruner can stop a poor trial early in its first epoch; the best epoch is still chosen among the
epochs' ends, which always read the whole validation split.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import broadcast_object_list, set_seed
from torch.utils.data import DataLoader
from transformers import get_scheduler

from orchestrator import data as data_mod
from orchestrator.config import ModelConfig, TrainingConfig
from orchestrator.data import Splits, batching
from orchestrator.models.heads import attention_kernel, load_encoder, load_tokenizer
from orchestrator.tasks import Evaluation, Task, task_of

StepCallback = Callable[[int, dict], None]
EvalCallback = Callable[[float, int, dict], bool]  # (epoch, step, metrics) -> keep going?
SUBSAMPLE_SEED = 0  # one subsample for every trial of a study, so their interim scores compare
MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "labels")


@dataclass
class TrainResult:
    model: torch.nn.Module  # best epoch's weights, on CPU, eval mode
    tokenizer: object
    best_epoch: int  # 1-based; 0 if no epoch finished
    best_metrics: dict[str, float]
    val_outputs: object = None  # the task's per-example validation outputs at the best epoch
    val_evaluation: Evaluation | None = None  # their metrics, fitted post-processing and predictions
    history: list[dict] = field(default_factory=list)
    stopped: str | None = None  # "pruned" or "non-finite loss"
    seconds_per_epoch: float = 0.0  # training steps only
    setup_seconds: float = 0.0  # from the call to the first step: tokenizer, data, model, optimizer
    train_seconds: float = 0.0  # every epoch's training steps
    eval_seconds: float = 0.0  # every epoch's validation pass and metrics
    train_rows: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)  # training split after resampling
    trainable_parameters: int = 0
    processes: int = 1  # processes that trained it together (an Accelerate multi-process launch)

    @property
    def samples_per_second(self) -> float:
        """Training throughput; compares strategies (a frozen encoder trains several times faster)."""
        return self.train_rows / self.seconds_per_epoch if self.seconds_per_epoch else 0.0


def precision_for(cpu: bool) -> str:
    if cpu:
        return "no"  # fp32 on CPU: CPU autocast costs more than it saves for these models
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def model_inputs(dataset):
    """An encoded split without the task's metadata columns: what the collator and model take."""
    return dataset.remove_columns([c for c in dataset.column_names if c not in MODEL_COLUMNS])


def train(params: TrainingConfig, model_cfg: ModelConfig, splits: Splits, model_path: str,
          on_step: StepCallback | None = None, on_evaluate: EvalCallback | None = None,
          metric: str = "val_macro_f1", greater_is_better: bool = True, cpu: bool = False,
          per_device_batch_size: int | None = None, gradient_accumulation_steps: int = 1,
          cache_dir: str | None = None, task: Task | None = None,
          eval_batch_size: int | None = None) -> TrainResult:
    """Fine-tune once; the best epoch is the one with the best validation `metric`.

    What is predicted (labels, encoding, head, loss, metrics) is the `task`'s business; this loop
    is the same for every task. Machine settings stay apart from hyperparameters:
    `per_device_batch_size` x `gradient_accumulation_steps` (x processes) makes up
    `params.batch_size` when a device cannot hold it; `eval_batch_size` overrides
    `params.eval_batch_size` (a GPU evaluates at least the batch it trains). Under a multi-process
    launch, callbacks run on the main process only and its decision to stop is shared with the others.
    """
    # ---- setup
    started = time.perf_counter()
    task = task or task_of(splits)
    # The settings the checkpoint will keep (a regression's target scale, from the training split):
    # validation here then reads the outputs exactly as a prediction from the checkpoint will.
    task.restore(task.saved_settings(splits))
    if params.head is None:
        params = dataclasses.replace(params, head=task.heads[0])
    set_seed(params.seed)
    use_cpu = cpu or not torch.cuda.is_available()
    # On a GPU, batches are collated into pinned host memory and copied without blocking, so the
    # copy of the next batch overlaps the current step instead of the GPU waiting for it.
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=precision_for(use_cpu),
                              gradient_accumulation_steps=gradient_accumulation_steps,
                              dataloader_config=DataLoaderConfiguration(non_blocking=not use_cpu))
    main = accelerator.is_main_process
    tokenizer = load_tokenizer(model_path, model_cfg.revision, model_cfg.trust_remote_code)
    encoded = data_mod.tokenize(splits, tokenizer, params.max_length, cache_dir, task)
    rows = task.train_rows(splits, params)
    train_set = model_inputs(encoded["train"] if rows is None else encoded["train"].select(rows))
    loading = {"collate_fn": task.collator(tokenizer), "pin_memory": not use_cpu}
    generator = torch.Generator().manual_seed(params.seed)
    per_device = per_device_batch_size or math.ceil(params.batch_size / accelerator.num_processes)
    # Unset: grouped on a CPU, where it was measured 1.16x faster; shuffled on a GPU, where on the
    # demo it was 0.30x (each new batch length costs a warm-up there: docs/benchmarks.md).
    grouped = use_cpu if params.group_by_length is None else params.group_by_length
    if grouped:
        batches = batching.LengthGroupedBatches(batching.lengths_of(train_set), per_device, generator)
        train_loader = DataLoader(train_set, batch_sampler=batches, **loading)
    else:
        train_loader = DataLoader(train_set, batch_size=per_device, shuffle=True, generator=generator, **loading)
    # Validation longest first: similar lengths share a batch; outputs go back in the split's order.
    val_order = batching.by_length(batching.lengths_of(encoded["validation"]))
    val_loader = DataLoader(model_inputs(encoded["validation"]).select(val_order),
                            batch_size=eval_batch_size or params.eval_batch_size, **loading)
    interim_rows = interim_subsample(len(encoded["validation"]), params.eval_subsample)
    interim_set = encoded["validation"].select(interim_rows)
    interim_order = batching.by_length(batching.lengths_of(interim_set))  # positions within the subsample
    interim_loader = DataLoader(model_inputs(interim_set).select(interim_order),
                                batch_size=eval_batch_size or params.eval_batch_size, **loading)

    cuda = accelerator.device.type == "cuda"
    encoder = load_encoder(model_path, model_cfg.revision, model_cfg.trust_remote_code,
                           attention=attention_kernel(model_cfg.attention, cuda))
    model = task.build_model(encoder, splits.num_labels, params)
    model.apply_strategy(params.strategy, params.freeze_layers)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if params.compile and cuda:
        model = torch.compile(model)
    # One fused kernel for the whole update on a GPU (the Trainer's default too); CPU keeps the default.
    optimizer = torch.optim.AdamW(param_groups(model, params.weight_decay), lr=params.learning_rate,
                                  fused=True if cuda else None)
    total_steps = math.ceil(len(train_loader) / gradient_accumulation_steps) * params.epochs
    scheduler = get_scheduler(params.scheduler, optimizer, num_warmup_steps=int(params.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    weights = task.loss_weights(splits, params)
    model, optimizer, train_loader, val_loader, interim_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, interim_loader, scheduler)
    if weights is not None:
        weights = weights.to(accelerator.device)

    def validate(loader, order, encoded_rows, rows=None) -> tuple[object, Evaluation]:
        """The task's outputs and metrics over `loader` (validation rows sorted by `order`);
        `rows`: which rows of the split it holds, where not all."""
        logits = batching.restore_order(collect_logits(model, loader, accelerator), order)
        outputs = task.gather(logits, encoded_rows)
        truth = splits.data["validation"] if rows is None else splits.data["validation"].select(rows)
        return outputs, task.evaluate(outputs, truth, splits.label_names, "val")

    # ---- train
    sign = 1.0 if greater_is_better else -1.0
    best = {"epoch": 0, "score": -math.inf, "state": None, "metrics": {}, "outputs": None, "evaluation": None}
    history, stopped, step, epoch_seconds, eval_seconds = [], None, 0, [], []
    steps_per_epoch = math.ceil(len(train_loader) / gradient_accumulation_steps)
    interim_at = interim_steps(steps_per_epoch, params.evals_per_epoch)
    # The pruner's clock: evaluation k of epoch e is number (e - 1) * evals_per_epoch + k in every
    # trial, so a number means the same share of training whatever the batch size (a point an
    # epoch too short to hold leaves its number unused).
    per_epoch = params.evals_per_epoch
    setup_seconds = time.perf_counter() - started
    for epoch in range(1, params.epochs + 1):
        model.train()
        start, paused = time.perf_counter(), 0.0
        # The loss is summed on the device and read (a host-device sync) only every `log_every`
        # steps and at the epoch's end, which is also where a non-finite loss is caught.
        running, seen, since = torch.zeros((), device=accelerator.device), 0, step + 1
        for batch in train_loader:
            with accelerator.accumulate(model):
                labels = batch.pop("labels")
                loss = task.loss(model(**batch), labels, weights)
                accelerator.backward(loss)
                if params.grad_clip and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), params.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            running, seen = running + loss.detach().float(), seen + 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            if step % params.log_every == 0 or step == total_steps:
                mean = running / seen
                if not _all_finite(mean, accelerator):
                    stopped = f"non-finite loss ({mean.item()}) in steps {since}-{step}"
                    break
                if main and on_step:
                    on_step(step, {"train_loss": mean.item(), "learning_rate": scheduler.get_last_lr()[0],
                                   "epoch": epoch})
                running, seen, since = torch.zeros_like(running), 0, step + 1
            within = step - (epoch - 1) * steps_per_epoch
            if within in interim_at:
                # ---- evaluate inside the epoch: a report to the pruner, never a best epoch
                paused_at = time.perf_counter()
                evaluations = (epoch - 1) * per_epoch + interim_at[within]
                _, evaluation = validate(interim_loader, interim_order, interim_set, interim_rows)
                fraction = epoch - 1 + within / steps_per_epoch
                metrics = {**evaluation.metrics, "evaluation": evaluations, "rows": len(interim_rows)}
                history.append({"epoch": round(fraction, 4), "step": step, "interim": True, **metrics})
                keep_going = on_evaluate(round(fraction, 4), step, metrics) if (main and on_evaluate) else True
                if accelerator.num_processes > 1:
                    keep_going = broadcast_object_list([keep_going])[0]
                model.train()
                eval_seconds.append(time.perf_counter() - paused_at)
                paused += eval_seconds[-1]
                if not keep_going:
                    stopped = "pruned"
                    break
        if stopped == "pruned":
            break
        if not stopped and seen and not _all_finite(running, accelerator):
            stopped = f"non-finite loss ({running.item()}) in steps {since}-{step}"
        if stopped:
            break
        epoch_seconds.append(time.perf_counter() - start - paused)

        # ---- evaluate
        start = time.perf_counter()
        outputs, evaluation = validate(val_loader, val_order, encoded["validation"])
        eval_seconds.append(time.perf_counter() - start)
        evaluations = epoch * per_epoch
        metrics = {**evaluation.metrics, "epoch_seconds": epoch_seconds[-1], "eval_seconds": eval_seconds[-1],
                   "evaluation": evaluations}
        history.append({"epoch": epoch, "step": step, **metrics})
        if sign * metrics[metric] > best["score"]:
            # Keep the best epoch's weights on the CPU; they are what gets registered.
            unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
            best.update(epoch=epoch, score=sign * metrics[metric], metrics=metrics, outputs=outputs,
                        evaluation=evaluation,
                        state={k: v.detach().to("cpu", copy=True) for k, v in unwrapped.state_dict().items()})
        keep_going = on_evaluate(epoch, step, metrics) if (main and on_evaluate) else True
        if accelerator.num_processes > 1:  # every process must leave the loop together
            keep_going = broadcast_object_list([keep_going])[0]
        if not keep_going:
            stopped = "pruned"
            break

    # ---- cleanup
    final = accelerator.unwrap_model(model, keep_torch_compile=False).to("cpu").float().eval()
    if best["state"] is not None:
        final.load_state_dict(best["state"])
    accelerator.free_memory()
    return TrainResult(
        model=final, tokenizer=tokenizer, best_epoch=best["epoch"], best_metrics=best["metrics"],
        val_outputs=best["outputs"], val_evaluation=best["evaluation"], history=history, stopped=stopped,
        seconds_per_epoch=float(np.mean(epoch_seconds)) if epoch_seconds else 0.0, setup_seconds=setup_seconds,
        train_seconds=float(sum(epoch_seconds)), eval_seconds=float(sum(eval_seconds)),
        train_rows=len(train_set), class_counts=task.label_counts(splits, "train", rows),
        trainable_parameters=trainable, processes=accelerator.num_processes,
    )


def interim_steps(steps_per_epoch: int, evals_per_epoch: int) -> dict[int, int]:
    """The steps within an epoch (1-based) after which an evaluation inside it runs, evenly spaced,
    each with its place k in the epoch (1 .. evals_per_epoch - 1; the epoch's end is the last).
    Where an epoch has fewer steps than evaluations, points that fall on one step are made once
    (the later k), and none falls on the epoch's end or before its first step."""
    points = {round(k * steps_per_epoch / evals_per_epoch): k for k in range(1, evals_per_epoch)}
    return {step: k for step, k in points.items() if 0 < step < steps_per_epoch}


def interim_subsample(rows: int, size: int | None) -> list[int]:
    """The validation rows the evaluations inside an epoch read: `size` of them, drawn once with a
    fixed seed (the same for every trial), in the split's order; all where `size` is unset or larger."""
    if size is None or size >= rows:
        return list(range(rows))
    return sorted(np.random.default_rng(SUBSAMPLE_SEED).choice(rows, size=size, replace=False).tolist())


def _all_finite(loss: torch.Tensor, accelerator: Accelerator) -> bool:
    finite = torch.isfinite(loss.detach()).float().reshape(1)
    if accelerator.num_processes > 1:  # one process's NaN stops them all, or the others hang
        finite = accelerator.gather(finite)
    return bool(finite.min() > 0)


@torch.no_grad()
def collect_logits(model, loader, accelerator: Accelerator | None = None):
    """Float logits of every row of `loader`, in order: an (rows, labels) array from a sequence
    model; from a token model a list with one (tokens, labels) array per row, holding the
    positions its attention mask covers."""
    model.eval()
    blocks, per_token = [], False
    for batch in loader:
        batch.pop("labels", None)
        logits, mask = model(**batch).float(), batch["attention_mask"]
        per_token = logits.ndim == 3
        if accelerator is not None:
            if per_token:  # ranks' batches are padded to different lengths
                logits = accelerator.pad_across_processes(logits, dim=1)
                mask = accelerator.pad_across_processes(mask, dim=1)
            logits, mask = accelerator.gather_for_metrics((logits, mask))
        logits = logits.cpu().numpy()
        if per_token:
            keep = mask.cpu().numpy().astype(bool)
            blocks.extend(row[m] for row, m in zip(logits, keep))
        else:
            blocks.append(logits)
    if per_token:
        return blocks
    return np.concatenate(blocks) if blocks else np.empty((0, 0), dtype=np.float32)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # No weight decay on biases and LayerNorm weights, as in BERT's original recipe.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
