"""Scores from true labels and class probabilities; one implementation for trials, champion and baseline."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

LOWER_IS_BETTER = ("loss",)
PER_CLASS = ("precision", "recall", "f1")


def safe_name(label: str) -> str:
    """A label as it appears in a metric name (MLflow keys allow only some characters)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def metric_names(label_names: list[str], prefix: str = "val") -> list[str]:
    """Every validation metric a trial produces for these labels: what `search.metric` may name."""
    names = [f"{prefix}_macro_f1", f"{prefix}_accuracy", f"{prefix}_loss"]
    names += [f"{prefix}_{kind}_{safe_name(n)}" for n in label_names for kind in PER_CLASS]
    if len(label_names) == 2:
        names += [f"{prefix}_pr_auc", f"{prefix}_roc_auc"]
    return names


def metric_problem(metric: str, direction: str, label_names: list[str] | None = None) -> str | None:
    """Why `metric` cannot be optimised in `direction`, or None. Without labels, checks the form only."""
    if label_names is not None:
        known = metric_names(label_names)
        if metric not in known:
            return (f"{metric!r} is not a metric the trials produce for labels {label_names}; "
                    f"choose one of {', '.join(known)}")
    elif not metric.startswith("val_") or not (
            metric[4:] in ("macro_f1", "accuracy", "loss", "pr_auc", "roc_auc")
            or metric[4:].startswith(tuple(f"{k}_" for k in PER_CLASS))):
        return (f"{metric!r} is not a metric the trials produce; use val_macro_f1, val_accuracy, val_loss, "
                f"val_pr_auc / val_roc_auc (two classes) or val_f1_<label> / val_precision_<label> / "
                f"val_recall_<label>")
    wanted = "minimize" if metric.endswith(LOWER_IS_BETTER) else "maximize"
    if direction != wanted:
        better = "lower" if wanted == "minimize" else "higher"
        return f"{metric} is better when {better}; set search.direction: {wanted}"
    return None


def classification_metrics(labels: np.ndarray, probs: np.ndarray, label_names: list[str],
                           prefix: str) -> dict[str, float]:
    """Plain, stable names: `{prefix}_macro_f1`, `{prefix}_accuracy`, per-class P/R/F1, binary AUCs."""
    preds = probs.argmax(-1)
    ids = list(range(len(label_names)))
    out = {
        f"{prefix}_macro_f1": float(f1_score(labels, preds, average="macro", labels=ids, zero_division=0)),
        f"{prefix}_accuracy": float(accuracy_score(labels, preds)),
    }
    p, r, f, _ = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    for i, name in enumerate(label_names):
        safe = safe_name(name)
        out[f"{prefix}_precision_{safe}"] = float(p[i])
        out[f"{prefix}_recall_{safe}"] = float(r[i])
        out[f"{prefix}_f1_{safe}"] = float(f[i])
    if len(label_names) == 2 and len(np.unique(labels)) == 2:
        out[f"{prefix}_pr_auc"] = float(average_precision_score(labels, probs[:, 1]))
        out[f"{prefix}_roc_auc"] = float(roc_auc_score(labels, probs[:, 1]))
    return out


def confusion(labels: np.ndarray, preds: np.ndarray, num_labels: int) -> np.ndarray:
    return confusion_matrix(labels, preds, labels=list(range(num_labels)))


def report(labels: np.ndarray, preds: np.ndarray, label_names: list[str]) -> str:
    return classification_report(labels, preds, labels=list(range(len(label_names))),
                                 target_names=label_names, zero_division=0, digits=4)
