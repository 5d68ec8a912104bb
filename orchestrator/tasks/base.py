"""The Task seam: everything that differs between kinds of prediction, behind one interface.

The training loop (`training/loop.py`), the trial, the search, tracking and the registry never branch on
the task; they call these methods. A task owns:

  reading and checking labels, and the split      `load_splits`
  encoding and label alignment, the collator      `encode`, `collator`
  the model (head) and its loss                   `build_model`, `loss`, `loss_weights`, `train_rows`
  from model outputs to predictions              `gather`, `evaluate` (post-processing fitted on
                                                  validation: thresholds), metrics
  the metrics' per-row counts, for bootstrap      `row_stats` (`tasks/bootstrap.py`: confidence
  intervals and paired comparisons                intervals, champion vs challenger)
  which metrics a search may optimise, and        `metric_names`, `metric_problem`, `main_metric`,
  whether higher is better                        `maximize`
  the settings it reads and the rules they obey   `splits_label_cells`, `config_problems`
  the baseline                                    `baseline`
  error-analysis artifacts                        `artifacts`
  what the registered model takes and returns     `output_frame` (through `training/saved_model.py`)

Data flow of one evaluation, the same for every task:

  rows    = logits per encoded row, from the loop (numpy; a token task's are trimmed to the row's
            attention mask, one (tokens, labels) array per row)
  outputs = task.gather(rows, encoded)     per example: a sequence task's (labels,) probabilities,
                                           a token task's (words, tags) probabilities, windows merged
  result  = task.evaluate(outputs, examples, prefix, post)
            post=None fits the post-processing on these outputs (validation) and returns it in
            `result.post`; the test evaluation and every prediction pass the fitted one.

`post` is plain JSON (e.g. {"thresholds": [...]}) saved with the checkpoint, so `predict` and the
pyfunc apply exactly what validation chose.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator.config.schema import DataConfig, ExperimentConfig
from orchestrator.tasks.names import safe_name

if TYPE_CHECKING:
    from orchestrator.tasks.bootstrap import RowStats

__all__ = ["Artifact", "Evaluation", "Task", "safe_name"]

LOWER_IS_BETTER = ("loss",)  # metric names ending so are minimised (`Task.maximize`)


@dataclass
class Evaluation:
    metrics: dict[str, float]  # "{prefix}_<name>": float
    post: dict = field(default_factory=dict)  # the post-processing used (fitted when none was given)
    predictions: Any = None  # the task's own form (label ids, label sets, tag sequences), for artifacts


@dataclass
class Artifact:
    kind: str  # "figure" (a matplotlib figure), "table" (a DataFrame), "text" (a str)
    name: str  # file name in the run's artifacts, e.g. "confusion_matrix_validation.png"
    value: Any


class Task(ABC):
    """One kind of prediction. Instances are built from the experiment (`for_config`) or from a
    checkpoint's saved settings (`from_saved`), and hold only plain settings."""

    name: str  # the experiment's `task:` value
    heads: tuple[str, ...]  # allowed training.head values; the first is the default
    imbalance: tuple[str, ...]  # allowed training.imbalance values
    main_metric: str  # the default search metric is "val_" + this; the registry compares "test_" + this
    columns: tuple[str, ...]  # the columns of `Splits.data`, e.g. ("text", "label")
    baseline_name: str  # what `baseline` fits, in a few words
    splits_label_cells = False  # whether one label cell holds several labels (`data.label_separator`)
    reads_text_pairs = False  # whether `data.text_pair_column` makes its examples sentence pairs (`text_pairs`)
    numeric_target = False  # whether it predicts a number (reads training.loss, training.standardize_target)

    def __init__(self, cfg: ExperimentConfig | None = None):
        self.cfg = cfg

    # ---- config
    def metric_names(self, label_names: list[str], prefix: str = "val") -> list[str]:
        """Every metric `evaluate` returns for these labels: what `search.metric` may name."""
        raise NotImplementedError

    def maximize(self, metric: str) -> bool:
        """Whether a higher `metric` is better: the default `search.direction`, and the registry's
        rule for a champion. Every metric but a loss, unless a task says otherwise."""
        return not metric.endswith(LOWER_IS_BETTER)

    def metric_problem(self, metric: str, direction: str | None,
                       label_names: list[str] | None = None) -> str | None:
        """Why `metric` cannot be optimised in `direction` (None: the one `maximize` says), or None.
        Without labels (the config is checked before the data is read), checks the metric's form only."""
        if label_names is not None:
            known = self.metric_names(label_names)
            if metric not in known:
                return (f"{metric!r} is not a metric the trials produce for labels {label_names} (task "
                        f"{self.name}); choose one of {', '.join(known)}")
        elif not self.metric_form_ok(metric):
            return f"{metric!r} is not a metric the trials produce (task {self.name}); {self.metric_help()}"
        wanted = "maximize" if self.maximize(metric) else "minimize"
        if direction is not None and direction != wanted:
            better = "higher" if wanted == "maximize" else "lower"
            return (f"{metric} is better when {better}; set search.direction: {wanted}, or leave search.direction "
                    f"out (the task then sets it)")
        return None

    def named_parts(self, label_names: list[str]) -> dict[str, list[str]]:
        """What per-label metric names are made of, by what a user calls it: {"label": the labels}
        here; a token task's entity types. Two of a kind must not share a `safe_name`."""
        return {"label": list(label_names)}

    def label_column(self, cfg: DataConfig) -> str:
        """The data column the label names are read from, for messages."""
        return cfg.label_column

    @abstractmethod
    def metric_form_ok(self, metric: str) -> bool:
        """Could `metric` be one of `metric_names` for some labels?"""

    @abstractmethod
    def metric_help(self) -> str:
        """One sentence listing the metric names this task produces."""

    def config_problems(self, cfg: ExperimentConfig) -> list[str]:
        """Task-specific settings that cannot work (one line each, naming the key)."""
        return []

    def label_problems(self, label_names: list[str]) -> list[str]:
        """Settings that cannot work with the training data's labels (one line each, naming the key),
        checked once the data is read, before anything is created."""
        return []

    # ---- data
    @abstractmethod
    def load_splits(self, cfg: DataConfig):
        """Read, check and split the data (`cfg` is the experiment's `data` section) ->
        `orchestrator.data.Splits` whose `data` has this task's
        `columns` and whose `record` is `fingerprint.describe(...)` of everything that shaped it.
        Raises `DataError` naming the file, column and fix."""

    def label_counts(self, splits, split: str, rows: np.ndarray | None = None) -> dict[str, int]:
        """How often each label occurs in `split` (restricted to `rows` when given)."""
        raise NotImplementedError

    def describe(self, splits) -> str:
        """One line for the study's start: the label set."""
        names = splits.label_names
        shown = names if len(names) <= 12 else names[:12] + [f"... ({len(names)} in all)"]
        return f"labels {shown}"

    # ---- encoding
    @abstractmethod
    def encode(self, examples, tokenizer, max_length: int, with_labels: bool = True, fingerprint: str | None = None):
        """A `datasets.Dataset` of encoded rows: model inputs, `labels` (when `with_labels`) and any
        metadata `gather` needs (listed in `meta_columns`). May hold more rows than examples (windows).
        `fingerprint`: the result's datasets fingerprint, given where hashing the tokenizer to make
        one would cost more than the encoding (a prediction of a few texts, `saved_model.Classifier`)."""

    meta_columns: tuple[str, ...] = ()  # encoded columns that are not model inputs

    def encoding_problems(self, splits, tokenizer, max_length: int) -> list[str]:
        """Examples `encode` would refuse with this tokenizer and max length (one line each, naming
        the split and example), found before anything is created: a question too long for any
        window beside its context. The search asks once the data is read and the model is found."""
        return []

    def encoding_key(self) -> str:
        """Settings of `encode` besides tokenizer and max length that change its result."""
        return self.name

    @abstractmethod
    def collator(self, tokenizer):
        """Pads a list of encoded rows (without `meta_columns`) into a batch."""

    # ---- model and loss
    @abstractmethod
    def build_model(self, encoder, num_labels: int, params):
        """A `torch.nn.Module` over `encoder` with `apply_strategy(strategy, freeze_layers)`,
        `save(directory, tokenizer, meta)` and `forward(input_ids, attention_mask, token_type_ids=None)`
        returning logits: (batch, labels) for a sequence task, (batch, tokens, labels) for a token task."""

    def load_model(self, directory):
        """(model in eval mode, tokenizer, saved info) from a folder `save` wrote."""
        from orchestrator.models.heads import TextClassifier

        return TextClassifier.load(directory)

    @abstractmethod
    def loss(self, logits, labels, weights=None):
        """The training loss of one batch (float32 logits)."""

    def loss_weights(self, splits, params):
        """A tensor for `loss` from the training split (imbalance: class_weights), or None."""
        return None

    def train_rows(self, splits, params) -> np.ndarray | None:
        """Training-row indices after over/under-sampling, or None for all rows as they are."""
        return None

    def dummy_labels(self, batch_size: int, length: int, num_labels: int, device):
        """Labels for a worst-case batch of the memory probe."""
        raise NotImplementedError

    # ---- outputs, post-processing, metrics
    def gather(self, rows, encoded) -> Any:
        """Per-example probabilities from per-row logits (see the module's docstring)."""
        raise NotImplementedError

    @abstractmethod
    def evaluate(self, outputs, examples, label_names: list[str], prefix: str, post: dict | None = None) -> Evaluation:
        """Metrics of `outputs` against `examples` (their true labels). post=None: fit the
        post-processing here (validation) and return it."""

    def row_stats(self, evaluation: Evaluation, examples, label_names: list[str]) -> RowStats | None:
        """The metrics of `evaluation` (an `evaluate` result on `examples`) as per-row counts and a
        score of their sums, for bootstrap confidence intervals and the paired comparison of two
        models on one test set (`tasks/bootstrap.py`). Reads `evaluation.predictions` (already
        post-processed) and the examples' true labels; the score's names are `evaluate`'s without the
        prefix, and `score(counts.sum(0))` reproduces them. Metrics that are no function of per-row
        counts (losses, AUCs) are left out. None: this task's metrics have no per-row form."""
        return None

    def artifacts(self, evaluation: Evaluation, outputs, examples, label_names: list[str],
                  split: str) -> list[Artifact]:
        """Error analysis for a run: figures and tables of `split`."""
        return []

    # ---- baseline
    def baseline(self, splits, seed: int) -> dict[str, float]:
        """A cheap non-neural model on the same splits: `baseline_val_<main>` and `baseline_test_<main>` at least."""
        return self.baseline_run(splits, seed)[0]

    @abstractmethod
    def baseline_run(self, splits, seed: int) -> tuple[dict[str, float], Evaluation | None]:
        """`baseline`'s metrics, and its test evaluation: its `predictions` in the task's own form
        (as `evaluate` makes them), for the paired comparison with the champion on the test rows."""

    # ---- the registered model
    def input_columns(self, saved: dict) -> tuple[str, ...]:
        """The registered model's input columns (its signature): ("text",) for most, ("text",
        "text_pair") for sentence pairs, ("question", "context") for question answering. Where a
        model has one, each input is a str; where several, a tuple of str in this order."""
        return ("text",)

    def inputs(self, examples, saved: dict) -> list:
        """The registered model's inputs for a Dataset of this task's examples (an input example
        for the registry, texts to time): its `input_columns` of the examples, as `input_columns`
        says (str or tuples)."""
        columns = self.input_columns(saved)
        if len(columns) == 1:
            return list(examples[columns[0]])
        return list(zip(*(examples[c] for c in columns)))

    @abstractmethod
    def examples_from_texts(self, texts: list, saved: dict):
        """Examples `encode` takes, from the registered model's raw inputs (a str each, or a tuple
        of str where `input_columns` has several; a token task splits texts into tokens)."""

    @abstractmethod
    def output_frame(self, outputs, texts: list, label_names: list[str], post: dict, saved: dict):
        """The registered model's output for raw inputs `texts` (as `examples_from_texts` takes
        them): a DataFrame, one row per input."""

    def saved_settings(self, splits) -> dict:
        """Settings a checkpoint keeps for prediction (e.g. how texts were split into tokens)."""
        return {}

    def restore(self, saved: dict) -> None:
        """Take the settings a checkpoint kept (`saved_settings`), for a task built without its experiment."""
