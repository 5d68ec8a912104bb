"""single_label scores from true labels and class probabilities; one implementation for trials, champion
and baseline."""

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

from orchestrator.tasks.base import safe_name

PER_CLASS = ("precision", "recall", "f1")


def metric_names(label_names: list[str], prefix: str = "val") -> list[str]:
    """Every validation metric a trial produces for these labels: what `search.metric` may name."""
    names = [f"{prefix}_macro_f1", f"{prefix}_accuracy", f"{prefix}_loss"]
    names += [f"{prefix}_{kind}_{safe_name(n)}" for n in label_names for kind in PER_CLASS]
    if len(label_names) == 2:
        names += [f"{prefix}_pr_auc", f"{prefix}_roc_auc"]
    return names


def metric_form_ok(metric: str) -> bool:
    """Could `metric` be one of `metric_names` for some labels?"""
    if not metric.startswith("val_"):
        return False
    name = metric[4:]
    return name in ("macro_f1", "accuracy", "loss", "pr_auc", "roc_auc") or name.startswith(
        tuple(f"{k}_" for k in PER_CLASS))


def classification_metrics(labels: np.ndarray, probs: np.ndarray, label_names: list[str],
                           prefix: str, preds: np.ndarray | None = None) -> dict[str, float]:
    """Plain, stable names: `{prefix}_macro_f1`, `{prefix}_accuracy`, per-class P/R/F1, binary AUCs.
    `preds` defaults to the most probable class (a tuned threshold decides otherwise)."""
    preds = probs.argmax(-1) if preds is None else preds
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
