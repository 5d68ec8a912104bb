"""One fine-tune, top to bottom: data, model, optimizer, schedule, loop, evaluation, best epoch.

Knows nothing of Optuna or MLflow. The caller passes plain hyperparameters (`TrainingConfig`),
the study's splits, and optional callbacks; `on_evaluate` returning False stops training (that
is how a pruner stops a trial). The result carries the best epoch's weights, not the last.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from imblearn.over_sampling import RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, get_scheduler

from orchestrator import data as data_mod
from orchestrator.config import ModelConfig, TrainingConfig
from orchestrator.data import Splits
from orchestrator.heads import TextClassifier, load_encoder, load_tokenizer
from orchestrator.metrics import classification_metrics

StepCallback = Callable[[int, dict], None]
EvalCallback = Callable[[int, int, dict], bool]  # (epoch, step, metrics) -> keep going?


@dataclass
class TrainResult:
    model: TextClassifier  # best epoch's weights, on CPU, eval mode
    tokenizer: object
    best_epoch: int  # 1-based; 0 if no epoch finished
    best_metrics: dict[str, float]
    val_probs: np.ndarray  # validation probabilities at the best epoch
    history: list[dict] = field(default_factory=list)
    stopped: str | None = None  # "pruned" or "non-finite loss"
    seconds_per_epoch: float = 0.0
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


def resample_indices(labels: np.ndarray, method: str, seed: int) -> np.ndarray:
    """Training-row indices after over/under-sampling (the training split only)."""
    index = np.arange(len(labels)).reshape(-1, 1)
    if method == "oversample":
        idx, _ = RandomOverSampler(random_state=seed).fit_resample(index, labels)
    elif method == "undersample":
        idx, _ = RandomUnderSampler(random_state=seed).fit_resample(index, labels)
    else:
        return index.ravel()
    return idx.ravel()


def class_weights(labels: np.ndarray, num_labels: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    weights = len(labels) / (num_labels * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def train(params: TrainingConfig, model_cfg: ModelConfig, splits: Splits, model_path: str,
          on_step: StepCallback | None = None, on_evaluate: EvalCallback | None = None,
          metric: str = "val_macro_f1", greater_is_better: bool = True, cpu: bool = False,
          per_device_batch_size: int | None = None, gradient_accumulation_steps: int = 1,
          cache_dir: str | None = None) -> TrainResult:
    """Fine-tune once; the best epoch is the one with the best validation `metric`.

    Machine settings stay apart from hyperparameters: `per_device_batch_size` x
    `gradient_accumulation_steps` (x processes) makes up `params.batch_size` when a device cannot
    hold it. Under a multi-process launch, callbacks run on the main process only and its
    decision to stop is shared with the others.
    """
    # ---- setup
    set_seed(params.seed)
    use_cpu = cpu or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=precision_for(use_cpu),
                              gradient_accumulation_steps=gradient_accumulation_steps)
    main = accelerator.is_main_process
    tokenizer = load_tokenizer(model_path, model_cfg.revision, model_cfg.trust_remote_code)
    tokenized = data_mod.tokenize(splits, tokenizer, params.max_length, cache_dir)
    train_labels = np.asarray(splits.data["train"]["label"])
    rows = resample_indices(train_labels, params.imbalance, params.seed)
    train_set = tokenized["train"].select(rows) if params.imbalance in ("oversample", "undersample") \
        else tokenized["train"]
    counts = np.bincount(train_labels[rows], minlength=splits.num_labels)
    collate = DataCollatorWithPadding(tokenizer)
    generator = torch.Generator().manual_seed(params.seed)
    per_device = per_device_batch_size or math.ceil(params.batch_size / accelerator.num_processes)
    train_loader = DataLoader(train_set, batch_size=per_device, shuffle=True, collate_fn=collate, generator=generator)
    val_loader = DataLoader(tokenized["validation"], batch_size=params.eval_batch_size, collate_fn=collate)

    encoder = load_encoder(model_path, model_cfg.revision, model_cfg.trust_remote_code)
    model = TextClassifier(encoder, splits.num_labels, params.head, params.dropout, params.mlp_hidden)
    model.apply_strategy(params.strategy, params.freeze_layers)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(_param_groups(model, params.weight_decay), lr=params.learning_rate)
    total_steps = math.ceil(len(train_loader) / gradient_accumulation_steps) * params.epochs
    scheduler = get_scheduler(params.scheduler, optimizer, num_warmup_steps=int(params.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    weights = class_weights(train_labels, splits.num_labels) if params.imbalance == "class_weights" else None
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler)
    if weights is not None:
        weights = weights.to(accelerator.device)

    # ---- train
    sign = 1.0 if greater_is_better else -1.0
    best = {"epoch": 0, "score": -math.inf, "state": None, "metrics": {}, "probs": None}
    history, stopped, step, epoch_seconds = [], None, 0, []
    for epoch in range(1, params.epochs + 1):
        model.train()
        start = time.perf_counter()
        running, seen = 0.0, 0
        for batch in train_loader:
            with accelerator.accumulate(model):
                labels = batch.pop("labels")
                logits = model(**batch)
                loss = F.cross_entropy(logits.float(), labels, weight=weights)
                if not _all_finite(loss, accelerator):
                    stopped = f"non-finite loss ({loss.item()}) at step {step + 1}"
                    break
                accelerator.backward(loss)
                if params.grad_clip and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), params.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            running, seen = running + loss.item(), seen + 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            if main and on_step and (step % params.log_every == 0 or step == total_steps):
                on_step(step, {"train_loss": running / seen, "learning_rate": scheduler.get_last_lr()[0],
                               "epoch": epoch})
                running, seen = 0.0, 0
        if stopped:
            break
        epoch_seconds.append(time.perf_counter() - start)

        # ---- evaluate
        labels, probs = predict_probs(model, val_loader, accelerator)
        metrics = classification_metrics(labels, probs, splits.label_names, "val")
        metrics["val_loss"] = float(F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-12)),
                                               torch.from_numpy(labels)).item())
        metrics["epoch_seconds"] = epoch_seconds[-1]
        history.append({"epoch": epoch, "step": step, **metrics})
        if sign * metrics[metric] > best["score"]:
            # Keep the best epoch's weights on the CPU; they are what gets registered.
            unwrapped = accelerator.unwrap_model(model)
            best.update(epoch=epoch, score=sign * metrics[metric], metrics=metrics, probs=probs,
                        state={k: v.detach().to("cpu", copy=True) for k, v in unwrapped.state_dict().items()})
        keep_going = on_evaluate(epoch, step, metrics) if (main and on_evaluate) else True
        if accelerator.num_processes > 1:  # every process must leave the loop together
            keep_going = broadcast_object_list([keep_going])[0]
        if not keep_going:
            stopped = "pruned"
            break

    # ---- cleanup
    final = accelerator.unwrap_model(model).to("cpu").float().eval()
    if best["state"] is not None:
        final.load_state_dict(best["state"])
    accelerator.free_memory()
    return TrainResult(
        model=final, tokenizer=tokenizer, best_epoch=best["epoch"], best_metrics=best["metrics"],
        val_probs=best["probs"] if best["probs"] is not None else np.empty((0, splits.num_labels)),
        history=history, stopped=stopped,
        seconds_per_epoch=float(np.mean(epoch_seconds)) if epoch_seconds else 0.0,
        train_rows=len(train_set), class_counts={n: int(c) for n, c in zip(splits.label_names, counts)},
        trainable_parameters=trainable, processes=accelerator.num_processes,
    )


def _all_finite(loss: torch.Tensor, accelerator: Accelerator) -> bool:
    finite = torch.isfinite(loss.detach()).float().reshape(1)
    if accelerator.num_processes > 1:  # one process's NaN stops them all, or the others hang
        finite = accelerator.gather(finite)
    return bool(finite.min() > 0)


@torch.no_grad()
def predict_probs(model, loader, accelerator: Accelerator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) over a loader; labels are -1 where the batch has none."""
    model.eval()
    all_labels, all_probs = [], []
    for batch in loader:
        labels = batch.pop("labels", None)
        if labels is None:
            labels = torch.full((batch["input_ids"].shape[0],), -1, device=batch["input_ids"].device)
        probs = torch.softmax(model(**batch).float(), dim=-1)
        if accelerator is not None:
            probs, labels = accelerator.gather_for_metrics((probs, labels))
        all_probs.append(probs.cpu().numpy())
        all_labels.append(labels.cpu().numpy())
    return np.concatenate(all_labels), np.concatenate(all_probs)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # No weight decay on biases and LayerNorm weights, as in BERT's original recipe.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
