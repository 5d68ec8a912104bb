"""multi_label: any number of labels per text (emotions, tags, topics), each label a yes/no.

A label cell is a JSON list (json/jsonl/parquet, or a hub `Sequence(ClassLabel)`) or a string of
names joined by `data.label_separator`; `[]` is an example with no label. Missing splits are
carved from train by iterative stratification (Sechidis et al., 2011), so a rare label still
reaches every split. The model is a `TextClassifier` with one logit per label, trained with
binary cross-entropy (optionally `pos_weight` per label); a label is predicted when its
probability reaches its threshold, tuned per label on validation by default
(`postprocess.threshold`), because one global 0.5 starves the rare labels.

Past ~400 lines because its label parsing and error-analysis tables are its own: no other task
reads label sets or scores them.
"""

from __future__ import annotations

import json
import logging
import math
import warnings

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

from orchestrator.config.schema import HEADS, DataConfig, ExperimentConfig
from orchestrator.data import fingerprint
from orchestrator.data.read import DataError, as_text, check_scalars, is_missing
from orchestrator.data.splits import Splits, carve, drop_empty, read_columns, sort_labels, warn_overlap, where
from orchestrator.tasks import thresholds
from orchestrator.tasks.base import Artifact, Evaluation, Task, safe_name
from orchestrator.tasks.bootstrap import RowStats, f1_of_counts, ratio

log = logging.getLogger(__name__)

AVERAGES = ("micro_f1", "macro_f1", "samples_f1", "loss", "exact_match")
PER_LABEL = ("precision", "recall", "f1")
LIKELY_SEPARATORS = (";", "|", ",")  # in the order they are suggested: ',' also occurs inside names
EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] for the loss: log(0) is a metric of infinity


class MultiLabel(Task):
    name = "multi_label"
    heads = HEADS
    imbalance = ("none", "class_weights")  # resampling rows cannot balance 28 labels at once
    main_metric = "macro_f1"
    columns = ("text", "labels")
    baseline_name = "TF-IDF + one-vs-rest logistic regression, tuned thresholds"
    splits_label_cells = True

    # ---- config
    def metric_names(self, label_names: list[str], prefix: str = "val") -> list[str]:
        names = [f"{prefix}_{m}" for m in AVERAGES]
        return names + [f"{prefix}_{kind}_{safe_name(n)}" for n in label_names for kind in PER_LABEL]

    def metric_form_ok(self, metric: str) -> bool:
        rest = metric.removeprefix("val_")
        return metric.startswith("val_") and (
            rest in AVERAGES or any(rest.startswith(f"{k}_") and len(rest) > len(k) + 1 for k in PER_LABEL))

    def metric_help(self) -> str:
        return ("use val_macro_f1, val_micro_f1, val_samples_f1, val_exact_match, val_loss or "
                "val_f1_<label> / val_precision_<label> / val_recall_<label>")

    def config_problems(self, cfg: ExperimentConfig) -> list[str]:
        p = cfg.postprocess
        problems = thresholds.unused_settings(p, (p.threshold or "tune") == "tune",
                                              "postprocess.threshold is none (every label's threshold is 0.5)")
        if (p.threshold or "tune") == "tune" and p.objective != "f1" and p.target is None:
            problems.append(f"postprocess.target: objective {p.objective} needs the {p.objective} each label's "
                            f"threshold must reach, e.g. postprocess.target=0.9")
        if p.positive_label is not None:  # every label has its own threshold: none is "the" positive one
            problems.append(f"postprocess.positive_label: {p.positive_label!r} means nothing for multi_label, where "
                            f"every label is predicted on or off by its own threshold; remove it")
        return problems

    # ---- data
    def load_splits(self, cfg: DataConfig) -> Splits:
        columns, sources = read_columns(cfg, [cfg.text_column, cfg.label_column])
        for split, cells in columns.items():
            if cfg.label_separator is None:
                _check_no_separator(cells[cfg.label_column], cfg, split)
            else:
                _check_no_json_lists(cells[cfg.label_column], cfg, split)
        data = {}
        for split, cells in columns.items():
            check_scalars(cells[cfg.text_column], where(cfg, split), cfg.text_column)
            texts = [as_text(v) for v in cells[cfg.text_column]]
            sets = [label_set(v, cfg.label_separator) for v in cells[cfg.label_column]]
            keep = [i for i, (t, s) in enumerate(zip(texts, sets)) if not is_missing(t) and s is not None]
            drop_empty(split, cfg, len(texts), keep, "an empty text or labels cell")
            data[split] = ([texts[i] for i in keep], [sets[i] for i in keep])
        seen = {name for names in data["train"][1] for name in names}
        if len(seen) < 2:
            raise DataError(f"{where(cfg, 'train')}: column {cfg.label_column!r} has {len(seen)} distinct label(s) "
                            f"{sorted(seen)}; a classifier needs at least two")
        label_names = sort_labels(seen)
        index = {name: i for i, name in enumerate(label_names)}
        features = Features({"text": Value("string"), "labels": Sequence(ClassLabel(names=label_names))})
        for split, (texts, sets) in data.items():
            unseen = sorted({name for names in sets for name in names} - seen)
            if unseen:
                raise DataError(
                    f"{where(cfg, split)}: labels {unseen[:10]} in column {cfg.label_column!r} do not occur "
                    f"in the training split (which has {label_names}); fix the labels or add training rows")
            data[split] = Dataset.from_dict({"text": texts, "labels": [[index[n] for n in names] for names in sets]},
                                            features=features)
        _warn_rare(data, cfg, label_names)

        def split_off(dataset: Dataset, size: float | int) -> tuple[Dataset, Dataset]:
            return _stratified_split(dataset, size, len(label_names), cfg)

        record = fingerprint.describe(cfg, self.name, sources, {"label_separator": cfg.label_separator})
        splits = Splits(DatasetDict(carve(data, cfg, split_off)), label_names, record)
        warn_overlap(splits)
        return splits

    def label_counts(self, splits: Splits, split: str, rows: np.ndarray | None = None) -> dict[str, int]:
        hot = multi_hot(column(splits.data[split], "labels"), splits.num_labels)
        if rows is not None:
            hot = hot[np.asarray(rows, dtype=int)]
        return {name: int(c) for name, c in zip(splits.label_names, hot.sum(0))}

    def describe(self, splits: Splits) -> str:
        hot = multi_hot(column(splits.data["train"], "labels"), splits.num_labels)
        share = float((hot.sum(1) > 1).mean()) if len(hot) else 0.0
        return f"{super().describe(splits)}; {share:.0%} of training texts have 2 or more"

    # ---- encoding
    def encode(self, examples: Dataset, tokenizer, max_length: int, with_labels: bool = True,
               fingerprint: str | None = None) -> Dataset:
        num_labels = _num_labels(examples) if with_labels else 0

        def encode(batch):
            enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
            if with_labels:
                enc["multi_hot"] = multi_hot(batch["labels"], num_labels)
            return enc

        encoded = examples.map(encode, batched=True, remove_columns=examples.column_names,
                               desc=f"tokenizing (max_length={max_length})", new_fingerprint=fingerprint)
        # Written under another name: `map` would otherwise keep the input's `labels` feature (a list
        # of class ids) and cast the float vectors back to ints.
        return encoded.rename_column("multi_hot", "labels") if with_labels else encoded

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    # ---- model and loss
    def build_model(self, encoder, num_labels: int, params):
        from orchestrator.models.heads import TextClassifier

        return TextClassifier(encoder, num_labels, params.head, params.dropout, params.mlp_hidden)

    def loss(self, logits, labels, weights=None):
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=weights)

    def loss_weights(self, splits: Splits, params):
        if params.imbalance != "class_weights":
            return None
        hot = multi_hot(column(splits.data["train"], "labels"), splits.num_labels)
        positives = hot.sum(0).astype(np.float64)
        return torch.tensor((len(hot) - positives) / np.maximum(positives, 1), dtype=torch.float32)

    def dummy_labels(self, batch_size: int, length: int, num_labels: int, device):
        return torch.zeros(batch_size, num_labels, dtype=torch.float32, device=device)

    # ---- outputs, post-processing, metrics
    def gather(self, rows, encoded) -> np.ndarray:
        return torch.sigmoid(torch.from_numpy(np.asarray(rows, dtype=np.float32))).numpy()

    def evaluate(self, outputs: np.ndarray, examples, label_names: list[str], prefix: str,
                 post: dict | None = None) -> Evaluation:
        probs = np.asarray(outputs, dtype=np.float64).reshape(-1, len(label_names))
        truth = multi_hot(column(examples, "labels"), len(label_names)).astype(bool)
        if post is None:
            post = self._fit_post(probs, truth)
        preds = predict(probs, post)
        return Evaluation(scores(truth, preds, probs, label_names, prefix), post, preds)

    def _fit_post(self, probs: np.ndarray, truth: np.ndarray) -> dict:
        """Thresholds per label: tuned on these outputs (validation) where they separate the label's
        rows from the others, else 0.5; or 0.5 for all (`postprocess.threshold: none`). `tuning`
        records each decision (`thresholds.Decision`)."""
        p = self.cfg.postprocess if self.cfg is not None else None
        if p is not None and p.threshold == "none":
            return {"thresholds": [thresholds.DEFAULT] * probs.shape[1]}
        objective, target = (p.objective, p.target) if p is not None else ("f1", None)
        decisions = thresholds.decide_all(probs, truth, objective, target)
        return {"thresholds": [d.threshold for d in decisions], "tuning": [d.to_dict() for d in decisions]}

    def row_stats(self, evaluation: Evaluation, examples, label_names: list[str]) -> RowStats:
        """Per row: its true positive, predicted and true labels (3 x labels columns), its own F1 (the
        samples average's term), whether its label set is exact, and 1. Covers micro_f1, macro_f1,
        samples_f1, exact_match and precision/recall/f1 per label; leaves out loss (a mean of log
        probabilities, not of the predictions)."""
        truth = multi_hot(column(examples, "labels"), len(label_names)).astype(bool)
        preds = np.asarray(evaluation.predictions, dtype=bool).reshape(-1, len(label_names))
        if truth.shape != preds.shape:
            raise ValueError(f"{len(preds)} predictions for {len(truth)} examples")
        tp = truth & preds
        row_f1 = f1_of_counts(tp.sum(1), preds.sum(1), truth.sum(1))
        exact = (truth == preds).all(1)
        counts = np.column_stack([tp, preds, truth, row_f1, exact, np.ones(len(truth))]).astype(np.float64)
        n, safe = len(label_names), [safe_name(name) for name in label_names]

        def score(sums: np.ndarray) -> dict:
            tp, pred, true = sums[..., :n], sums[..., n:2 * n], sums[..., 2 * n:3 * n]
            f1_sum, exact_sum, rows = sums[..., 3 * n], sums[..., 3 * n + 1], sums[..., 3 * n + 2]
            f1 = f1_of_counts(tp, pred, true)
            out = {"micro_f1": f1_of_counts(tp.sum(-1), pred.sum(-1), true.sum(-1)), "macro_f1": f1.mean(-1),
                   "samples_f1": ratio(f1_sum, rows), "exact_match": ratio(exact_sum, rows)}
            precision, recall = ratio(tp, pred), ratio(tp, true)
            for j, name in enumerate(safe):
                out[f"precision_{name}"] = precision[..., j]
                out[f"recall_{name}"] = recall[..., j]
                out[f"f1_{name}"] = f1[..., j]
            return out

        return RowStats(counts, score)

    def artifacts(self, evaluation: Evaluation, outputs, examples, label_names: list[str],
                  split: str) -> list[Artifact]:
        truth = multi_hot(column(examples, "labels"), len(label_names)).astype(bool)
        probs = np.asarray(outputs, dtype=np.float64).reshape(-1, len(label_names))
        preds = evaluation.predictions
        out = [
            Artifact("table", f"per_label_{split}.json",
                     per_label_table(truth, preds, label_names, cuts(evaluation.post, len(label_names)))),
            Artifact("table", f"errors_{split}.json",
                     errors_table(column(examples, "text"), truth, preds, probs, label_names)),
        ]
        decisions = thresholds.table(evaluation.post, label_names)
        if split == "validation" and decisions is not None:  # how each threshold was chosen, and what it missed
            out.append(Artifact("table", "thresholds_validation.json", decisions))
        return out

    # ---- baseline
    def baseline_run(self, splits: Splits, seed: int) -> tuple[dict[str, float], Evaluation]:
        """TF-IDF + one-vs-rest class-balanced logistic regression, thresholds as the model's."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        from orchestrator.tasks.text_features import vectorizer as make_vectorizer

        n = splits.num_labels
        train = multi_hot(column(splits.data["train"], "labels"), n)
        texts = column(splits.data["train"], "text")
        vectorizer = make_vectorizer(list(texts))
        features = vectorizer.fit_transform(texts)
        # A label on no training row (carving can leave a rare one in validation/test only) or on
        # all of them has nothing to learn: it keeps its training rate as its probability.
        varying = np.flatnonzero(train.min(0) != train.max(0))
        model = None
        if len(varying):
            # liblinear: a binary problem per label on sparse features, several times faster than lbfgs.
            lr = LogisticRegression(class_weight="balanced", max_iter=2000, solver="liblinear", random_state=seed)
            # One varying label is a plain binary problem: a 1-d target, and (rows, 2) probabilities.
            target = train[:, varying] if len(varying) > 1 else train[:, varying[0]]
            model = OneVsRestClassifier(lr).fit(features, target)

        def probabilities(split: str) -> np.ndarray:
            texts = column(splits.data[split], "text")
            probs = np.tile(train.mean(0) if len(train) else np.zeros(n), (len(texts), 1))
            if model is not None and texts:
                out = model.predict_proba(vectorizer.transform(texts))
                probs[:, varying] = out[:, 1:] if len(varying) == 1 else out
            return probs

        val_probs, test_probs = probabilities("validation"), probabilities("test")
        val_truth = multi_hot(column(splits.data["validation"], "labels"), n).astype(bool)
        test_truth = multi_hot(column(splits.data["test"], "labels"), n).astype(bool)
        post = self._fit_post(val_probs, val_truth)
        # A constant score carries no signal, yet the best-F1 cut under it predicts the label on
        # every row; the constant labels keep 0.5, i.e. their training value.
        constant = np.setdiff1d(np.arange(n), varying)
        post["thresholds"] = [thresholds.DEFAULT if j in constant else t for j, t in enumerate(post["thresholds"])]
        out = {}
        for prefix, probs, truth in (("val", val_probs, val_truth), ("test", test_probs, test_truth)):
            m = scores(truth, predict(probs, post), probs, splits.label_names, prefix)
            out[f"baseline_{prefix}_macro_f1"] = m[f"{prefix}_macro_f1"]
            out[f"baseline_{prefix}_micro_f1"] = m[f"{prefix}_micro_f1"]
        return out, Evaluation({}, post, predict(test_probs, post))

    # ---- the registered model
    def examples_from_texts(self, texts: list[str], saved: dict) -> Dataset:
        return Dataset.from_dict({"text": [str(t) for t in texts]}, features=Features({"text": Value("string")}))

    def output_frame(self, outputs: np.ndarray, texts: list[str], label_names: list[str], post: dict,
                     saved: dict) -> pd.DataFrame:
        probs = np.asarray(outputs, dtype=np.float64).reshape(-1, len(label_names))
        preds = predict(probs, post)
        frame = pd.DataFrame({"labels": [[label_names[j] for j in np.flatnonzero(row)] for row in preds]})
        for j, name in enumerate(label_names):
            frame[f"prob_{name}"] = probs[:, j]
        return frame


# ---------------------------------------------------------------------------- labels


def label_set(cell, separator: str | None) -> list[str] | None:
    """The label names of one cell, in their order, without repeats; None when the cell is missing.

    A list is a list of names (`[]`: no label); a string is split on `separator`, names stripped
    and empty names ignored. Without a separator, a string that is a JSON list is read as one
    (a CSV exported with its lists written out), any other string is one name.
    """
    if isinstance(cell, (list, tuple, np.ndarray)):
        names = [as_text(x) for x in cell]
    else:
        text = as_text(cell)
        if is_missing(text):
            return None
        names = None
        if separator is None and text.lstrip().startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                names = [as_text(x) for x in parsed]
        if names is None:
            names = text.split(separator) if separator is not None else [text]
    return list(dict.fromkeys(n.strip() for n in names if n is not None and n.strip()))


def _check_no_separator(cells: list, cfg: DataConfig, split: str) -> None:
    """Without data.label_separator, 'a;b' would silently become one label named 'a;b'."""
    strings = [c for c in cells if isinstance(c, str) and not is_missing(c) and not c.lstrip().startswith("[")]
    for sep in LIKELY_SEPARATORS:
        found = [c for c in strings if sep in c]
        if found:
            raise DataError(
                f"{where(cfg, split)}: {len(found)} cell(s) of column {cfg.label_column!r} contain {sep!r} "
                f"(e.g. {found[0]!r}) but data.label_separator is not set, so each would be one label; "
                f"set data.label_separator: {sep!r} (if {sep!r} is part of the label names, set a separator that "
                f"is not), or give the labels as JSON lists in a .jsonl file")
    lists = [c for c in cells if isinstance(c, str) and c.lstrip().startswith("[")
             and label_set(c, None) == [c.strip()]]
    if lists:
        raise DataError(
            f"{where(cfg, split)}: {len(lists)} cell(s) of column {cfg.label_column!r} look like lists but are not "
            f"JSON (e.g. {lists[0]!r}); write them as JSON lists ([\"a\", \"b\"]) or join the names with a "
            f"separator and set data.label_separator")


def _check_no_json_lists(cells: list, cfg: DataConfig, split: str) -> None:
    """With data.label_separator set, '["joy"]' would be split as text into the label '["joy"]'.

    Refused rather than read as a list: the separator says how the cells are written, a JSON
    list contradicts it, and guessing per cell which of the two was meant would hide a file put
    together from two exports. The fix is one key (or one cell)."""
    found = [i for i, c in enumerate(cells) if isinstance(c, str) and _json_list(c)]
    if found:
        first = cells[found[0]]
        raise DataError(
            f"{where(cfg, split)} row {found[0] + 1}: column {cfg.label_column!r} holds the JSON list {first!r} "
            f"({len(found)} such cell(s)), but data.label_separator is {cfg.label_separator!r}, so it would become "
            f"the label(s) {label_set(first, cfg.label_separator)}; remove data.label_separator (JSON lists are "
            f"read as lists without it), or write every cell as names joined by {cfg.label_separator!r}")


def _json_list(text: str) -> bool:
    if not text.lstrip().startswith("["):
        return False
    try:
        return isinstance(json.loads(text), list)
    except json.JSONDecodeError:
        return False


def multi_hot(label_ids, num_labels: int) -> np.ndarray:
    """(examples, labels) float32 0/1 from lists of label ids."""
    out = np.zeros((len(label_ids), num_labels), dtype=np.float32)
    for i, ids in enumerate(label_ids):
        out[i, list(ids)] = 1.0
    return out


def column(examples, name: str) -> list:
    """One column as a list. A `Dataset`'s column read in one slice: iterating it goes row by row."""
    if isinstance(examples, Dataset):
        return examples.select_columns([name])[:][name]
    return list(examples[name])


def _num_labels(examples: Dataset) -> int:
    feature = examples.features.get("labels")
    inner = getattr(feature, "feature", None)
    if not isinstance(inner, ClassLabel):
        raise ValueError(f"multi_label encode: the examples' 'labels' column must be a list of class labels "
                         f"(Sequence(ClassLabel)), found {feature}; build the examples with `load_splits`")
    return inner.num_classes


def _warn_rare(data: dict[str, Dataset], cfg: DataConfig, label_names: list[str]) -> None:
    carved = ("validation" not in data) + ("test" not in data)
    if not carved:
        return
    counts = multi_hot(column(data["train"], "labels"), len(label_names)).sum(0)
    rare = {label_names[j]: int(c) for j, c in enumerate(counts) if c < carved + 1}
    if rare:
        log.warning("%s: labels %s have too few rows to reach every carved split; scores on those labels "
                    "will be missing or noisy (provide data.validation / data.test files, or add rows)",
                    where(cfg, "train"), rare)


def _stratified_split(dataset: Dataset, size: float | int, num_labels: int, cfg: DataConfig) -> tuple[Dataset, Dataset]:
    """(rest, part) with `part` holding `size` rows (a count) or share, every label spread evenly."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    hot = multi_hot(column(dataset, "labels"), num_labels)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=size, random_state=cfg.seed)
    try:
        rest, part = next(splitter.split(np.zeros((len(hot), 1)), hot))
    except ValueError as e:  # too few rows for the requested sizes
        raise DataError(f"{where(cfg, 'train')}: cannot carve {size} from {len(hot)} training rows ({e}); add rows "
                        f"or provide data.validation / data.test files") from None
    # The greedy assignment misses the requested size by a row or two; moving that many rows keeps
    # the sizes the user asked for (a cap is a cap). The rows moved are those whose rarest label is
    # the most common, so a rare label's few rows stay where the stratification put them.
    wanted = size if isinstance(size, int) else math.ceil(size * len(hot))
    rarest = np.where(hot > 0, hot.sum(0), np.inf).min(1)
    tiebreak = np.random.default_rng(cfg.seed).random(len(hot))

    def movable(source: np.ndarray, k: int) -> np.ndarray:
        return source[np.lexsort((tiebreak[source], -rarest[source]))[:k]]

    if len(part) > wanted:
        moved = movable(part, len(part) - wanted)
        part, rest = np.setdiff1d(part, moved), np.union1d(rest, moved)
    elif len(part) < wanted:
        moved = movable(rest, wanted - len(part))
        part, rest = np.union1d(part, moved), np.setdiff1d(rest, moved)
    return dataset.select(rest), dataset.select(part)


# ---------------------------------------------------------------------------- predictions and scores


def cuts(post: dict, num_labels: int) -> list[float]:
    """The thresholds `post` holds; 0.5 each when it holds none."""
    return list(post.get("thresholds") or [thresholds.DEFAULT] * num_labels)


def predict(probs: np.ndarray, post: dict) -> np.ndarray:
    """(examples, labels) bool: each label whose probability reaches its threshold."""
    probs = np.asarray(probs, dtype=np.float64)
    return probs >= np.asarray(cuts(post, probs.shape[-1]), dtype=np.float64)


def scores(truth: np.ndarray, preds: np.ndarray, probs: np.ndarray, label_names: list[str],
           prefix: str) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    truth, preds = np.asarray(truth, dtype=bool), np.asarray(preds, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero_division handles empty rows/labels; the warning is noise
        out = {f"{prefix}_{avg}_f1": float(f1_score(truth, preds, average=avg, zero_division=0))
               for avg in ("micro", "macro", "samples")}
        p, r, f, _ = precision_recall_fscore_support(truth, preds, average=None, zero_division=0)
    clipped = np.clip(probs, EPS, 1 - EPS)
    out[f"{prefix}_loss"] = float(-np.mean(np.where(truth, np.log(clipped), np.log1p(-clipped))))
    out[f"{prefix}_exact_match"] = float(accuracy_score(truth, preds))
    for j, name in enumerate(label_names):
        safe = safe_name(name)
        out[f"{prefix}_precision_{safe}"] = float(p[j])
        out[f"{prefix}_recall_{safe}"] = float(r[j])
        out[f"{prefix}_f1_{safe}"] = float(f[j])
    return out


# ---------------------------------------------------------------------------- error analysis


def per_label_table(truth: np.ndarray, preds: np.ndarray, label_names: list[str],
                    cuts: list[float]) -> pd.DataFrame:
    from sklearn.metrics import precision_recall_fscore_support

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f, support = precision_recall_fscore_support(truth, preds, average=None, zero_division=0)
    return pd.DataFrame({"label": label_names, "support": support.astype(int), "precision": p.astype(float),
                         "recall": r.astype(float), "f1": f.astype(float), "threshold": np.asarray(cuts, dtype=float)})


def errors_table(texts: list[str], truth: np.ndarray, preds: np.ndarray, probs: np.ndarray,
                 label_names: list[str]) -> pd.DataFrame:
    """Examples whose predicted label set is wrong, the most confident mistake first: how sure the
    model was of its worst wrong decision (an extra label's probability, a missed one's 1 - p)."""
    wrong = np.flatnonzero((truth != preds).any(1))
    sure = np.where(preds & ~truth, probs, np.where(truth & ~preds, 1 - probs, 0.0)).max(1)

    def names(row) -> list[str]:
        return [label_names[j] for j in np.flatnonzero(row)]

    frame = pd.DataFrame({
        "text": [texts[i] for i in wrong],
        "true_labels": [names(truth[i]) for i in wrong],
        "predicted_labels": [names(preds[i]) for i in wrong],
        "missed": [names(truth[i] & ~preds[i]) for i in wrong],
        "extra": [names(preds[i] & ~truth[i]) for i in wrong],
        "confidence": sure[wrong].astype(float),
    })
    return frame.sort_values("confidence", ascending=False, ignore_index=True, kind="stable")


__all__ = ["MultiLabel", "label_set", "multi_hot", "predict", "scores"]
