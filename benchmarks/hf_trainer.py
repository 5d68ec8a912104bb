"""The other side of the comparisons: what a user would write with `transformers.Trainer`.

The demo's splits (the same rows orchestrator trains, validates and tests on), the usual recipe:
`AutoModelForSequenceClassification`, tokenized with `datasets.map`, padded per batch by
`DataCollatorWithPadding` (dynamic) or to `max_length` at tokenization (the common recipe from
the course notebooks), evaluated every epoch with macro-F1, no checkpoints written.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
from sklearn.metrics import f1_score

DEMO = "experiments/demo.yaml"


def demo_splits(max_rows: int | None = None, model: str | None = None):
    """The demo's splits and model path, exactly as orchestrator's search makes them; `model`
    replaces the demo's model (a folder)."""
    cfg, splits, model_path = experiment_splits(DEMO, [f"model.name_or_path={model}"] if model else [])
    if max_rows:  # quick runs of the scripts themselves
        splits.data["train"] = splits.data["train"].select(range(min(max_rows, len(splits.data["train"]))))
    return cfg, splits, model_path


def experiment_splits(config, overrides: list[str] | tuple = ()):
    """Any experiment's splits and model path, exactly as orchestrator's search makes them from
    that config and those key=value overrides (e.g. data.max_train_rows=400)."""
    from orchestrator.data import load_splits
    from orchestrator.models.sources import resolve_model
    from orchestrator.tasks import get_task, load_experiment

    cfg = load_experiment(config, list(overrides))
    splits = load_splits(cfg.data, get_task(cfg.task, cfg))
    return cfg, splits, resolve_model(cfg.model).path


def device() -> str:
    """"cpu", or the GPU's name as a file-name part (e.g. nvidia-h200)."""
    import torch

    return torch.cuda.get_device_name(0).lower().replace(" ", "-") if torch.cuda.is_available() else "cpu"


def macro_f1(prediction) -> dict:
    logits, labels = prediction
    return {"macro_f1": float(f1_score(labels, np.argmax(logits, axis=-1), average="macro"))}


class EpochClock:
    """A TrainerCallback timing each epoch's training steps only: `on_epoch_end` comes before the
    Trainer evaluates, so the figure is comparable with orchestrator's `seconds_per_epoch`."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Clock(TrainerCallback):
            def __init__(self):
                self.seconds, self._start = [], 0.0

            def on_epoch_begin(self, args, state, control, **kwargs):
                self._start = time.perf_counter()

            def on_epoch_end(self, args, state, control, **kwargs):
                self.seconds.append(time.perf_counter() - self._start)

        return _Clock()


def interim_steps(steps_per_epoch: int, evals_per_epoch: int) -> set[int]:
    """The steps within an epoch (1-based) after which an evaluation inside it runs: evenly
    spaced, the epoch's end (the Trainer's own evaluation) excluded. The same points as
    orchestrator's `training.evals_per_epoch` (orchestrator/training/loop.py)."""
    return {round(k * steps_per_epoch / evals_per_epoch) for k in range(1, evals_per_epoch)} - {0, steps_per_epoch}


class InterimEvaluations:
    """A TrainerCallback that adds `evals_per_epoch - 1` evaluations inside each epoch to the
    Trainer's `eval_strategy="epoch"`: each is a report to the search's pruner (Optuna's through
    `hyperparameter_search`, Ray Tune's through a reporting callback)."""

    def __new__(cls, evals_per_epoch: int):
        from transformers import TrainerCallback

        class _Interim(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                epochs = max(1, round(args.num_train_epochs))
                per_epoch = max(1, state.max_steps // epochs)
                within = (state.global_step - 1) % per_epoch + 1
                if within in interim_steps(per_epoch, evals_per_epoch):
                    control.should_evaluate = True
                return control

        return _Interim()


def build(splits, model_path: str, padding: str, max_length: int, learning_rate: float, epochs: int,
          batch_size: int, warmup_ratio: float, weight_decay: float, seed: int, model_init: bool = False,
          output_dir: str | None = None):
    """A Trainer over the splits. `padding`: "dynamic" or "max_length". With `model_init` the
    model is built per run, as `hyperparameter_search` requires."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad = "max_length" if padding == "max_length" else False

    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length, padding=pad)

    data = {split: splits.data[split].map(encode, batched=True, remove_columns=["text"])
            .rename_column("label", "labels") for split in ("train", "validation", "test")}

    def new_model():
        return AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=splits.num_labels)

    cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=output_dir or tempfile.mkdtemp(prefix="hf-trainer-"), learning_rate=learning_rate,
        num_train_epochs=epochs, per_device_train_batch_size=batch_size, per_device_eval_batch_size=64,
        warmup_steps=warmup_ratio, weight_decay=weight_decay, lr_scheduler_type="linear", seed=seed,
        eval_strategy="epoch", save_strategy="no", logging_steps=5, report_to="none", disable_tqdm=True,
        use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(), dataloader_num_workers=0)
    clock = EpochClock()
    collator = DataCollatorWithPadding(tokenizer) if padding == "dynamic" else default_data_collator
    trainer = Trainer(model=None if model_init else new_model(), model_init=new_model if model_init else None,
                      args=args, train_dataset=data["train"], eval_dataset=data["validation"],
                      data_collator=collator, compute_metrics=macro_f1, callbacks=[clock])
    return trainer, data, clock
