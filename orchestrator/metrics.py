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
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
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
