"""single_label: one class per text (sentiment, topic, spam...). The default task.

Labels are read as written and ordered integer-aware; missing splits are carved from train
stratified by label; the model is a `TextClassifier` trained with cross-entropy (optionally
class-weighted, or on an over/under-sampled training split); predictions are the most probable
class, or for two classes optionally the positive class above a threshold tuned on validation
(`postprocess.threshold: tune`).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from orchestrator.tasks.single_label import metrics
from orchestrator.tasks.single_label import plots
from orchestrator.tasks.single_label.baseline import fit_baseline
from orchestrator.config.schema import HEADS, IMBALANCE, DataConfig, ExperimentConfig
from orchestrator.data import fingerprint
from orchestrator.data.read import DataError, as_text, check_scalars, is_missing
from orchestrator.data.splits import Splits, carve, drop_empty, read_columns, sort_labels, warn_overlap, where
from orchestrator.tasks import text_pairs, thresholds
from orchestrator.tasks.base import Artifact, Evaluation, Task, safe_name
from orchestrator.tasks.bootstrap import RowStats, f1_of_counts, ratio


class SingleLabel(text_pairs.TextInputs, Task):
    name = "single_label"
    heads = HEADS
    imbalance = IMBALANCE
    main_metric = "macro_f1"
    columns = ("text", "label")
    baseline_name = ("TF-IDF (word 1-2-grams; character 1-3-grams for CJK text; for pairs, of each side, their "
                     "product and word overlap) + balanced logistic regression")

    # ---- config
    def metric_names(self, label_names: list[str], prefix: str = "val") -> list[str]:
        return metrics.metric_names(label_names, prefix)

    def metric_form_ok(self, metric: str) -> bool:
        return metrics.metric_form_ok(metric)

    def metric_help(self) -> str:
        return ("use val_macro_f1, val_accuracy, val_loss, val_pr_auc / val_roc_auc (two classes) or "
                "val_f1_<label> / val_precision_<label> / val_recall_<label>")

    def config_problems(self, cfg: ExperimentConfig) -> list[str]:
        p = cfg.postprocess
        tuned = p.threshold == "tune"
        problems = thresholds.unused_settings(p, tuned, "postprocess.threshold is not tune (single_label's default: "
                                                        "the most probable class)",
                                             "set postprocess.threshold=tune, or remove it")
        if p.positive_label is not None and not tuned:
            problems.append(f"postprocess.positive_label: {p.positive_label!r} is used only with postprocess.threshold"
                            f"=tune (the most probable class is predicted otherwise); set that, or remove positive_label")
        if p.threshold == "tune" and p.objective != "f1" and p.target is None:
            problems.append(f"postprocess.target: objective {p.objective} needs the {p.objective} to reach, "
                            f"e.g. postprocess.target=0.9")
        return problems

    def label_problems(self, label_names: list[str]) -> list[str]:
        p = self.cfg.postprocess if self.cfg is not None else None
        if p is None or p.threshold != "tune":
            return []
        # `_fit_post` would otherwise guess: no tuning at all for 3+ classes, label 1 for an unknown name.
        if len(label_names) != 2:
            return [f"postprocess.threshold: tune tunes the positive class's threshold of two classes, but the "
                    f"training data has {len(label_names)} ({', '.join(label_names[:10])}); remove it (the most "
                    f"probable class is predicted)"]
        if p.positive_label is not None and p.positive_label not in label_names:
            return [f"postprocess.positive_label: {p.positive_label!r} is not one of the training labels "
                    f"{label_names}; set it to one of them as written"]
        return []

    # ---- data
    def load_splits(self, cfg: DataConfig) -> Splits:
        columns, sources = read_columns(cfg, [*text_pairs.text_columns(cfg), cfg.label_column])
        data = {}
        for split, cells in columns.items():
            texts = text_pairs.read_texts(cfg, cells, split)
            check_scalars(cells[cfg.label_column], where(cfg, split), cfg.label_column)
            labels = [as_text(v) for v in cells[cfg.label_column]]
            _check_spaces(labels, cfg, split)
            keep = [i for i in text_pairs.present_rows(texts) if not is_missing(labels[i])]
            drop_empty(split, cfg, len(labels), keep, "an empty text or label" if len(texts) == 1 else
                       "an empty text, second text (data.text_pair_column) or label")
            data[split] = ({k: [v[i] for i in keep] for k, v in texts.items()}, [labels[i] for i in keep])
        values = set(data["train"][1])
        if len(values) < 2:
            raise DataError(f"{where(cfg, 'train')}: column {cfg.label_column!r} has a single class "
                            f"{sorted(values)}; a classifier needs at least two")
        label_names = sort_labels(values)
        index = {name: i for i, name in enumerate(label_names)}
        features = Features({**{k: Value("string") for k in data["train"][0]}, "label": ClassLabel(names=label_names)})
        for split, (texts, labels) in data.items():
            unseen = sorted(set(labels) - set(index))
            if unseen:
                raise DataError(
                    f"{where(cfg, split)}: labels {unseen[:10]} in column {cfg.label_column!r} do not occur "
                    f"in the training split (which has {label_names}); fix the labels or add training rows")
            data[split] = Dataset.from_dict({**texts, "label": [index[x] for x in labels]}, features=features)
        _check_stratifiable(data, cfg, label_names)

        def split_off(dataset: Dataset, size: float | int) -> tuple[Dataset, Dataset]:
            if isinstance(size, int):  # the row cap keeps `size` rows
                parts = dataset.train_test_split(train_size=size, stratify_by_column="label", seed=cfg.seed)
                return parts["test"], parts["train"]
            parts = dataset.train_test_split(test_size=size, stratify_by_column="label", seed=cfg.seed)
            return parts["train"], parts["test"]

        pair = {"text_pair_column": cfg.text_pair_column} if cfg.text_pair_column else None
        splits = Splits(DatasetDict(carve(data, cfg, split_off)), label_names,
                        fingerprint.describe(cfg, self.name, sources, pair))
        warn_overlap(splits)
        return splits

    def label_counts(self, splits: Splits, split: str, rows: np.ndarray | None = None) -> dict[str, int]:
        labels = np.asarray(splits.data[split]["label"])
        if rows is not None:
            labels = labels[rows]
        counts = Counter(labels.tolist())
        return {name: counts.get(i, 0) for i, name in enumerate(splits.label_names)}

    # ---- encoding
    def encode(self, examples: Dataset, tokenizer, max_length: int, with_labels: bool = True,
               fingerprint: str | None = None) -> Dataset:
        return self.encode_examples(examples, tokenizer, max_length, (lambda batch: batch["label"]) if with_labels
                                    else None, fingerprint)

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    # ---- model and loss
    def build_model(self, encoder, num_labels: int, params):
        from orchestrator.models.heads import TextClassifier

        return TextClassifier(encoder, num_labels, params.head, params.dropout, params.mlp_hidden)

    def loss(self, logits, labels, weights=None):
        return F.cross_entropy(logits.float(), labels, weight=weights)

    def loss_weights(self, splits: Splits, params):
        if params.imbalance != "class_weights":
            return None
        labels = np.asarray(splits.data["train"]["label"])
        counts = np.bincount(labels, minlength=splits.num_labels).astype(np.float64)
        return torch.tensor(len(labels) / (splits.num_labels * np.maximum(counts, 1)), dtype=torch.float32)

    def train_rows(self, splits: Splits, params) -> np.ndarray | None:
        if params.imbalance not in ("oversample", "undersample"):
            return None
        from imblearn.over_sampling import RandomOverSampler
        from imblearn.under_sampling import RandomUnderSampler

        labels = np.asarray(splits.data["train"]["label"])
        index = np.arange(len(labels)).reshape(-1, 1)
        sampler = RandomOverSampler if params.imbalance == "oversample" else RandomUnderSampler
        rows, _ = sampler(random_state=params.seed).fit_resample(index, labels)
        return rows.ravel()

    def dummy_labels(self, batch_size: int, length: int, num_labels: int, device):
        return torch.zeros(batch_size, dtype=torch.long, device=device)

    # ---- outputs, post-processing, metrics
    def gather(self, rows: np.ndarray, encoded) -> np.ndarray:
        return torch.softmax(torch.from_numpy(np.asarray(rows, dtype=np.float32)), dim=-1).numpy()

    def evaluate(self, outputs: np.ndarray, examples, label_names: list[str], prefix: str,
                 post: dict | None = None) -> Evaluation:
        labels = np.asarray(examples["label"])
        if post is None:
            post = self._fit_post(outputs, labels, label_names)
        preds = predict(outputs, post)
        out = metrics.classification_metrics(labels, outputs, label_names, prefix, preds)
        probs = torch.as_tensor(np.ascontiguousarray(outputs))
        out[f"{prefix}_loss"] = float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), torch.from_numpy(labels)).item())
        return Evaluation(out, post, preds)

    def _fit_post(self, probs: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict:
        p = self.cfg.postprocess if self.cfg is not None else None
        if p is None or p.threshold != "tune" or len(label_names) != 2:
            return {}
        positive = label_names.index(p.positive_label) if p.positive_label in label_names else 1
        decision = thresholds.decide(probs[:, positive], labels == positive, p.objective, p.target)
        post = {"positive": positive, "tuning": decision.to_dict()}
        if decision.tuned:  # else no "threshold": the most probable class, as without tuning
            post["threshold"] = decision.threshold
        return post

    def row_stats(self, evaluation: Evaluation, examples, label_names: list[str]) -> RowStats:
        """Per row, one-hot: its true positive, predicted and true class (3 x classes columns).
        Covers macro_f1, accuracy and precision/recall/f1 per class; leaves out loss, pr_auc and
        roc_auc (no function of per-row counts)."""
        labels = np.asarray(examples["label"], dtype=np.int64)
        preds = np.asarray(evaluation.predictions, dtype=np.int64)
        if labels.shape != preds.shape:
            raise ValueError(f"{len(preds)} predictions for {len(labels)} examples")
        n, rows = len(label_names), np.arange(len(labels))
        counts = np.zeros((len(labels), 3 * n))
        counts[rows, preds] = labels == preds  # true positives
        counts[rows, n + preds] = 1.0  # predicted
        counts[rows, 2 * n + labels] = 1.0  # true
        safe = [safe_name(name) for name in label_names]

        def score(sums: np.ndarray) -> dict:
            tp, pred, true = sums[..., :n], sums[..., n:2 * n], sums[..., 2 * n:]
            f1 = f1_of_counts(tp, pred, true)
            out = {"macro_f1": f1.mean(-1), "accuracy": ratio(tp.sum(-1), true.sum(-1))}
            precision, recall = ratio(tp, pred), ratio(tp, true)
            for i, name in enumerate(safe):
                out[f"precision_{name}"] = precision[..., i]
                out[f"recall_{name}"] = recall[..., i]
                out[f"f1_{name}"] = f1[..., i]
            return out

        return RowStats(counts, score)

    def artifacts(self, evaluation: Evaluation, outputs, examples, label_names: list[str],
                  split: str) -> list[Artifact]:
        labels = np.asarray(examples["label"])
        texts = text_pairs.shown(examples)
        preds = evaluation.predictions
        return [
            Artifact("figure", f"confusion_matrix_{split}.png",
                     plots.confusion_figure(labels, preds, label_names, split)),
            Artifact("text", f"classification_report_{split}.txt", metrics.report(labels, preds, label_names)),
            Artifact("table", f"misclassified_{split}.json", plots.misclassified(texts, labels, outputs, preds,
                                                                                 label_names)),
        ]

    # ---- baseline
    def baseline_run(self, splits: Splits, seed: int) -> tuple[dict[str, float], Evaluation]:
        metrics, test = fit_baseline(splits, seed)
        return metrics, Evaluation({}, {}, test)

    # ---- the registered model
    def saved_settings(self, splits: Splits) -> dict:
        return text_pairs.pair_settings(splits.data["train"].column_names, self.truncation)


    def output_frame(self, outputs: np.ndarray, texts: list[str], label_names: list[str], post: dict,
                     saved: dict) -> pd.DataFrame:
        preds = predict(outputs, post)
        frame = pd.DataFrame({"label": [label_names[i] for i in preds]})
        for i, name in enumerate(label_names):
            frame[f"prob_{name}"] = outputs[:, i].astype(np.float64)
        return frame


def predict(probs: np.ndarray, post: dict) -> np.ndarray:
    """Class ids: the most probable class, or with a tuned threshold the positive class when its
    probability reaches the threshold (two classes)."""
    if "threshold" not in post or len(probs) == 0:
        return probs.argmax(-1) if len(probs) else np.zeros(0, dtype=int)
    positive = post["positive"]
    return np.where(probs[:, positive] >= post["threshold"], positive, 1 - positive)


def _check_spaces(labels: list[str | None], cfg: DataConfig, split: str) -> None:
    """'positive ' would be a class of its own beside 'positive' (and 'prob_positive ' a column).
    Refused, not stripped, as a token task's tags are: the file should say what the model learns,
    and a stray space is a faulty export or a hand edit that may have touched more than spaces."""
    found = [i for i, x in enumerate(labels) if not is_missing(x) and x != x.strip()]
    if found:
        first = labels[found[0]]
        raise DataError(f"{where(cfg, split)} row {found[0] + 1}: label {first!r} in column {cfg.label_column!r} "
                        f"starts or ends with a space ({len(found)} such cell(s)), which would make it a class of its "
                        f"own beside {first.strip()!r}; remove the spaces (a CSV needs none after its commas)")


def _check_stratifiable(data: dict[str, Dataset], cfg: DataConfig, label_names: list[str]) -> None:
    counts = Counter(data["train"]["label"])
    needed = 1 + ("validation" not in data) + ("test" not in data)
    too_few = {label_names[i]: c for i, c in counts.items() if c < needed + 1}
    if needed > 1 and too_few:
        raise DataError(
            f"{where(cfg, 'train')}: too few rows per class for a stratified split: {too_few}; each class needs "
            f"at least {needed + 1}. Add rows, merge rare classes, or provide data.validation/data.test files.")
    if cfg.max_train_rows and cfg.max_train_rows < len(label_names):
        raise DataError(f"data.max_train_rows ({cfg.max_train_rows}) is fewer than the {len(label_names)} classes; "
                        f"a stratified subsample needs a row of each")
