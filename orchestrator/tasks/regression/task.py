"""regression: one number per text or sentence pair (a similarity score, a rating, a price).

The label column is read as numbers (a missing or non-numeric cell is an error naming its row);
missing splits are carved from train stratified by quantile bins of the target; the model is a
`TextClassifier` with one output trained with MSE or Huber (`training.loss`), by default on the
target standardised by the training split's mean and standard deviation
(`training.standardize_target`), which the checkpoint keeps (`saved_settings`) so that every
output is turned back into the target's units (`gather`). Metrics: Pearson's r (the main one),
Spearman's rho, the RMSE and the loss; the baseline is ridge regression on TF-IDF.

`label_names` is the one output's name, the label column's (a regression has no classes);
`Splits.data` keeps the target as `label` (float64), beside `text` (and `text_pair` for pairs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict, Features, Value

from orchestrator.config.schema import HEADS, DataConfig, ExperimentConfig
from orchestrator.data import fingerprint
from orchestrator.data.splits import Splits, carve, drop_empty, read_columns, warn_overlap
from orchestrator.tasks import text_pairs
from orchestrator.tasks.base import Artifact, Evaluation, Task
from orchestrator.tasks.bootstrap import RowStats
from orchestrator.tasks.regression import metrics, plots
from orchestrator.tasks.regression.baseline import fit_baseline
from orchestrator.tasks.regression.targets import check_train, read_targets, split_off

LOSSES = ("mse", "huber")
# Huber's switch from squares to absolute values, in the target's standard deviations where it is
# standardised: errors beyond one deviation (outliers, label noise) pull linearly, not quadratically.
HUBER_DELTA = 1.0


class Regression(text_pairs.TextInputs, Task):
    name = "regression"
    heads = HEADS
    imbalance = ("none",)  # no classes to balance
    main_metric = "pearson"
    columns = ("text", "label")
    baseline_name = "TF-IDF (word 1-2-grams; character 1-3-grams for CJK text) + ridge regression"
    numeric_target = True

    def __init__(self, cfg: ExperimentConfig | None = None):
        super().__init__(cfg)
        self._saved: dict = {}  # a checkpoint's settings (`restore`)

    # ---- settings: the experiment's where there is one, else the checkpoint's
    @property
    def loss_name(self) -> str:
        if self.cfg is not None and self.cfg.training.loss is not None:
            return self.cfg.training.loss
        return self._saved.get("loss") or "mse"

    @property
    def standardize(self) -> bool:
        if self.cfg is not None and self.cfg.training.standardize_target is not None:
            return self.cfg.training.standardize_target
        return self._saved.get("target", {}).get("standardized", True)

    @property
    def scale(self) -> tuple[float, float] | None:
        """(mean, std) the model's outputs are in units of: the training target's when standardised,
        (0, 1) when not; None before `restore` has given the training split's."""
        target = self._saved.get("target")
        if target is None:
            return None
        return (target["mean"], target["std"]) if target.get("standardized", True) else (0.0, 1.0)

    # ---- config
    def metric_names(self, label_names: list[str], prefix: str = "val") -> list[str]:
        return metrics.metric_names(prefix)

    def maximize(self, metric: str) -> bool:
        return not metric.endswith(metrics.LOWER_IS_BETTER)

    def metric_form_ok(self, metric: str) -> bool:
        return metric in metrics.metric_names("val")

    def metric_help(self) -> str:
        return "use val_pearson, val_spearman, val_rmse (minimised) or val_loss (minimised)"

    def named_parts(self, label_names: list[str]) -> dict[str, list[str]]:
        return {}  # no metric is named after the target

    def config_problems(self, cfg: ExperimentConfig) -> list[str]:
        problems = [f"space.{name}: the trials of one study share training.{name} (their val_loss would measure "
                    f"different things otherwise); set training.{name} and run a study per value"
                    for name in ("loss", "standardize_target") if name in cfg.space]
        p = cfg.postprocess
        set_post = {k: v for k, v in (("threshold", p.threshold if p.threshold != "none" else None),
                                      ("objective", None if p.objective == "f1" else p.objective),
                                      ("target", p.target), ("positive_label", p.positive_label)) if v is not None}
        problems += [f"postprocess.{k}: {v!r} sets a decision threshold, and task regression predicts a number "
                     f"with none; remove it" for k, v in set_post.items()]
        return problems

    # ---- data
    def load_splits(self, cfg: DataConfig) -> Splits:
        columns, sources = read_columns(cfg, [*text_pairs.text_columns(cfg), cfg.label_column])
        data = {}
        for split, cells in columns.items():
            texts = text_pairs.read_texts(cfg, cells, split)
            targets = read_targets(cells[cfg.label_column], cfg, split)
            keep = text_pairs.present_rows(texts)
            drop_empty(split, cfg, len(targets), keep, "an empty text" if len(texts) == 1 else
                       "an empty text or second text (data.text_pair_column)")
            features = Features({**{k: Value("string") for k in texts}, "label": Value("float64")})
            data[split] = Dataset.from_dict({**{k: [v[i] for i in keep] for k, v in texts.items()},
                                             "label": [targets[i] for i in keep]}, features=features)
        carved = carve(data, cfg, lambda dataset, size: split_off(dataset, size, cfg.seed))
        check_train(np.asarray(carved["train"]["label"], dtype=np.float64), cfg)
        pair = {"text_pair_column": cfg.text_pair_column} if cfg.text_pair_column else None
        splits = Splits(DatasetDict(carved), [cfg.label_column], fingerprint.describe(cfg, self.name, sources, pair))
        warn_overlap(splits)
        return splits

    def label_counts(self, splits: Splits, split: str, rows: np.ndarray | None = None) -> dict[str, int]:
        return {}  # no classes: nothing to count per class

    def describe(self, splits: Splits) -> str:
        y = np.asarray(splits.data["train"]["label"], dtype=np.float64)
        pairs = ", sentence pairs" if text_pairs.is_pair(splits.data["train"].column_names) else ""
        return (f"target {splits.label_names[0]!r} (train: mean {y.mean():.4g}, sd {y.std():.4g}, "
                f"range {y.min():.4g} to {y.max():.4g}{pairs})")

    # ---- encoding
    def encode(self, examples: Dataset, tokenizer, max_length: int, with_labels: bool = True,
               fingerprint: str | None = None) -> Dataset:
        labels = (lambda batch: np.asarray(batch["label"], dtype=np.float32)) if with_labels else None
        encoded = self.encode_examples(examples, tokenizer, max_length, labels, fingerprint)
        if with_labels and encoded.features["labels"].dtype != "float32":
            encoded = encoded.cast_column("labels", Value("float32"))
        return encoded

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    # ---- model and loss
    def build_model(self, encoder, num_labels: int, params):
        from orchestrator.models.heads import TextClassifier

        return TextClassifier(encoder, 1, params.head, params.dropout, params.mlp_hidden)

    def loss(self, logits, labels, weights=None):
        mean, std = self.scale or (0.0, 1.0)  # no scale yet: the memory probe's dummy batch
        target = (labels.float() - mean) / std
        prediction = logits.float().reshape(target.shape)
        if self.loss_name == "huber":
            return F.huber_loss(prediction, target, delta=HUBER_DELTA)
        return F.mse_loss(prediction, target)

    def dummy_labels(self, batch_size: int, length: int, num_labels: int, device):
        return torch.zeros(batch_size, dtype=torch.float32, device=device)

    # ---- outputs, metrics
    def gather(self, rows: np.ndarray, encoded) -> np.ndarray:
        """The predicted numbers, in the target's units."""
        if self.scale is None:
            raise RuntimeError("regression outputs need the training target's scale: give the task its "
                               "checkpoint's settings first (task.restore(task.saved_settings(splits)))")
        mean, std = self.scale
        rows = np.asarray(rows, dtype=np.float64)
        return rows.reshape(len(rows), -1)[:, 0] * std + mean if len(rows) else np.zeros(0)

    def evaluate(self, outputs: np.ndarray, examples, label_names: list[str], prefix: str,
                 post: dict | None = None) -> Evaluation:
        predictions = np.asarray(outputs, dtype=np.float64)
        truth = np.asarray(examples["label"], dtype=np.float64)
        out = metrics.regression_metrics(predictions, truth, prefix)
        with torch.no_grad():  # the training loss, on the scale the model trains at
            out[f"{prefix}_loss"] = float(self.loss(torch.from_numpy(self._standard_units(predictions)),
                                                    torch.from_numpy(truth)).item()) if len(truth) else 0.0
        return Evaluation(out, post or {}, predictions)

    def _standard_units(self, predictions: np.ndarray) -> np.ndarray:
        mean, std = self.scale or (0.0, 1.0)
        return (predictions - mean) / std  # `loss` takes outputs before `gather`'s de-standardisation

    def row_stats(self, evaluation: Evaluation, examples, label_names: list[str]) -> RowStats:
        """Per row, the seven sums of `metrics.sums_row` (prediction, truth, their squares, product and
        squared difference, centred on the true mean): covers pearson and rmse; leaves out spearman
        (ranks over all rows) and the loss."""
        truth = np.asarray(examples["label"], dtype=np.float64)
        predictions = np.asarray(evaluation.predictions, dtype=np.float64)
        if truth.shape != predictions.shape:
            raise ValueError(f"{len(predictions)} predictions for {len(truth)} examples")
        center = float(truth.mean()) if len(truth) else 0.0
        return RowStats(metrics.sums_row(predictions, truth, center), metrics.of_sums)

    def artifacts(self, evaluation: Evaluation, outputs, examples, label_names: list[str],
                  split: str) -> list[Artifact]:
        truth = np.asarray(examples["label"], dtype=np.float64)
        predictions = np.asarray(evaluation.predictions, dtype=np.float64)
        return [
            Artifact("figure", f"predicted_vs_true_{split}.png",
                     plots.scatter_figure(truth, predictions, f"{label_names[0]}: {split}")),
            Artifact("table", f"largest_errors_{split}.json",
                     plots.largest_errors(text_pairs.shown(examples), truth, predictions)),
        ]

    # ---- baseline
    def baseline_run(self, splits: Splits, seed: int) -> tuple[dict[str, float], Evaluation]:
        scores, test = fit_baseline(splits, seed)
        return scores, Evaluation({}, {}, test)

    # ---- the registered model
    def saved_settings(self, splits: Splits) -> dict:
        y = np.asarray(splits.data["train"]["label"], dtype=np.float64)
        target = {"mean": float(y.mean()), "std": float(y.std()) or 1.0, "standardized": self.standardize}
        return {**text_pairs.pair_settings(splits.data["train"].column_names, self.truncation),
                "target": target, "loss": self.loss_name}

    def restore(self, saved: dict) -> None:
        super().restore(saved)
        self._saved = dict(saved)

    def output_frame(self, outputs: np.ndarray, texts: list, label_names: list[str], post: dict,
                     saved: dict) -> pd.DataFrame:
        return pd.DataFrame({"value": np.asarray(outputs, dtype=np.float64)})
