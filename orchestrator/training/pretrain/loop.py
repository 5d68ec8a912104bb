"""Pre-training, top to bottom: batches, optimizer, schedule, held-out evaluation, checkpoints,
and the budget in steps or minutes. The objective is the model's: a masked LM, or ELECTRA's pair
(`electra.py`), whose output has a `.loss`; `Measures` says what its evaluation reports.

Knows nothing of MLflow or of the experiment file: the caller passes a model, a tokenizer, the
encoded texts, plain settings and callbacks. A checkpoint (`accelerate`'s full state: weights,
optimizer, schedule, random generators, plus the step and the minutes spent) is written every
`save_every` steps, at the end and on Ctrl-C; a run that finds one continues from it, so a
pre-training killed at any point loses at most `save_every` steps.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import get_scheduler

from orchestrator.training.pretrain.masking import MaskingCollator
from orchestrator.training.loop import param_groups, precision_for

STATE, PROGRESS = "state", "progress.json"
Callback = Callable[[int, dict], None]  # (step, metrics)


class PretrainError(RuntimeError):
    """Training cannot go on (the loss is no longer a number)."""


@dataclass(frozen=True)
class Settings:
    max_steps: int | None
    max_minutes: float | None
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    mlm_probability: float
    whole_words: bool
    eval_every: int
    save_every: int
    log_every: int
    seed: int
    max_per_device: int | None = None  # the memory probe's largest batch on a GPU
    objective: str = "mlm"  # written in the checkpoint: one objective never resumes another's


@dataclass(frozen=True)
class Measures:
    """What an objective reports. `tally`: (batch, model output) -> tensors summed over the held-out
    batches and processes; `summary`: those sums -> metrics, `eval_loss` among them; `train`: a
    logged training batch's own figures beside `train_loss`."""
    tally: Callable[[dict, Any], dict]
    summary: Callable[[dict], dict]
    train: Callable[[Any], dict] = lambda out: {}


def _mlm_tally(batch: dict, out) -> dict:
    n = (batch["labels"] != -100).sum()
    return {"loss_sum": out.loss.detach() * n, "masked": n}


def _mlm_summary(sums: dict) -> dict:
    loss = sums["loss_sum"] / sums["masked"] if sums.get("masked") else float("nan")
    return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0))}


MLM = Measures(_mlm_tally, _mlm_summary)


@dataclass
class Result:
    step: int
    minutes: float  # training time, all runs together
    eval_loss: float
    resumed_from: int  # 0: started fresh
    stopped_by: str  # "max_steps" or "max_minutes"
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)  # the last held-out evaluation's


    @property
    def perplexity(self) -> float:
        return math.exp(min(self.eval_loss, 50.0))


def pretrain_mlm(model, tokenizer, train_rows: list[dict], held_out: list[dict], s: Settings, folder: Path,
                 on_log: Callback | None = None, on_eval: Callback | None = None,
                 on_save: Callback | None = None, measures: Measures = MLM) -> Result:
    """Train `model` (a masked LM, or ELECTRA's pair with `electra.measures`) in place; checkpoints
    live in `folder`. Returns where it stopped."""
    from orchestrator.training.probe import plan_batch

    # A masked-LM's output layer shares the embeddings' weights; Accelerate saves them once and
    # warns so at every checkpoint. Reloading restores the tie.
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)

    per_device, accumulation = plan_batch(s.batch_size, s.max_per_device)
    cpu = not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu, mixed_precision=precision_for(cpu), gradient_accumulation_steps=accumulation)
    per_device = max(1, math.ceil(per_device / accelerator.num_processes))
    set_seed(s.seed)
    optimizer = torch.optim.AdamW(param_groups(model, s.weight_decay), lr=s.learning_rate)
    # Without a step budget the schedule cannot decay to its end: warm up, then stay constant.
    warmup = round(s.warmup_ratio * s.max_steps) if s.max_steps else min(100, len(train_rows) // per_device)
    scheduler = get_scheduler("linear" if s.max_steps else "constant_with_warmup", optimizer,
                              num_warmup_steps=warmup, num_training_steps=s.max_steps or 0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    collate = MaskingCollator(tokenizer, s.mlm_probability, s.whole_words)

    progress = folder / PROGRESS
    saved = {"step": 0, "seconds": 0.0, "eval_loss": float("nan")}
    if (folder / STATE).is_dir() and progress.is_file():
        saved = json.loads(progress.read_text())
        if saved.get("objective", "mlm") != s.objective:  # written before objectives existed: mlm
            raise PretrainError(f"{folder} holds a {saved.get('objective', 'mlm')} pre-training, not {s.objective}; "
                                f"its checkpoint cannot be continued with another objective")
        accelerator.load_state(str(folder / STATE))
    step, spent, eval_loss = saved["step"], saved["seconds"], saved["eval_loss"]
    resumed_from, history, last = step, [], saved.get("metrics", {})
    batches_per_epoch = max(1, math.ceil(len(train_rows) / (per_device * accelerator.num_processes)))
    started = time.monotonic()

    def elapsed() -> float:
        return spent + time.monotonic() - started

    def out_of_budget() -> str | None:
        if s.max_steps is not None and step >= s.max_steps:
            return "max_steps"
        if s.max_minutes is not None and elapsed() >= s.max_minutes * 60:
            return "max_minutes"
        return None

    def save() -> None:
        # Written beside, then swapped in: a kill during the save leaves the previous one whole.
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            tmp = folder / f"{STATE}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.save_state(str(folder / f"{STATE}.tmp"))
        if accelerator.is_main_process:
            shutil.rmtree(folder / STATE, ignore_errors=True)
            (folder / f"{STATE}.tmp").rename(folder / STATE)
            tmp_progress = folder / f"{PROGRESS}.tmp"
            tmp_progress.write_text(json.dumps({"step": step, "seconds": elapsed(), "eval_loss": eval_loss,
                                                  "metrics": last, "objective": s.objective}))
            tmp_progress.replace(progress)
        if on_save:
            on_save(step, {"seconds": elapsed()})

    def evaluate() -> float:
        nonlocal eval_loss, last
        model.eval()
        # The same masks every time (a fresh seeded collator), so the curve shows the model, not the draw.
        loader = accelerator.prepare(DataLoader(held_out, batch_size=per_device * 2,
                                                collate_fn=MaskingCollator(tokenizer, s.mlm_probability,
                                                                           s.whole_words, seed=s.seed)))
        sums: dict[str, float] = {}
        with torch.no_grad():
            for batch in loader:
                for name, value in measures.tally(batch, model(**batch)).items():
                    total = accelerator.gather(value.detach().float().reshape(1)).sum().item()
                    sums[name] = sums.get(name, 0.0) + total
        model.train()
        metrics = last = measures.summary(sums)
        eval_loss = metrics["eval_loss"]
        history.append({"step": step, **metrics})
        if on_eval:
            on_eval(step, metrics)
        return eval_loss

    model.train()
    if step == 0:
        evaluate()  # where it starts: the perplexity curve shows what pre-training changed
    stopped = out_of_budget()
    try:
        epoch = step * accumulation // batches_per_epoch
        while stopped is None:
            order = np.random.default_rng(s.seed + epoch).permutation(len(train_rows)).tolist()
            loader = accelerator.prepare(DataLoader([train_rows[i] for i in order], batch_size=per_device,
                                                    collate_fn=collate))
            # Resumed mid-epoch: skip the batches the saved steps already trained on.
            done = step * accumulation % batches_per_epoch if step == resumed_from else 0
            for batch in accelerator.skip_first_batches(loader, done) if done else loader:
                with accelerator.accumulate(model):
                    out = model(**batch)
                    loss = out.loss
                    if not torch.isfinite(loss.detach()).all():
                        raise PretrainError(f"the {s.objective} loss became {loss.item()} at step {step + 1}; lower "
                                            f"pretrain.learning_rate (now {s.learning_rate:g})")
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                if not accelerator.sync_gradients:
                    continue
                step += 1
                if on_log and step % s.log_every == 0:
                    on_log(step, {"train_loss": loss.item(), "learning_rate": scheduler.get_last_lr()[0],
                                  "minutes": elapsed() / 60, **measures.train(out)})
                stopped = out_of_budget()
                if step % s.eval_every == 0 or stopped:
                    evaluate()
                if step % s.save_every == 0 or stopped:
                    save()
                if stopped:
                    break
            epoch += 1
    except KeyboardInterrupt:
        save()  # the rerun continues from here
        raise
    if math.isnan(eval_loss):
        evaluate()
    return Result(step, elapsed() / 60, eval_loss, resumed_from, stopped, history, last)
