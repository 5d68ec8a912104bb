"""single_label figures and tables for runs: confusion matrices and misclassified examples. No tracking here."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files, never to a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from orchestrator.tasks.single_label.metrics import confusion  # noqa: E402


def confusion_figure(labels: np.ndarray, preds: np.ndarray, label_names: list[str], title: str):
    matrix = confusion(labels, preds, len(label_names))
    size = max(4.0, 0.7 * len(label_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(matrix, display_labels=label_names).plot(ax=ax, colorbar=False, cmap="Blues")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def misclassified(texts: list[str], labels: np.ndarray, probs: np.ndarray, preds: np.ndarray,
                  label_names: list[str]) -> pd.DataFrame:
    """Wrong predictions, most confident first: where a model is surely wrong is worth reading."""
    wrong = np.flatnonzero(preds != labels)
    frame = pd.DataFrame({
        "text": [texts[i] for i in wrong],
        "true_label": [label_names[labels[i]] for i in wrong],
        "predicted_label": [label_names[preds[i]] for i in wrong],
        "confidence": probs[wrong, preds[wrong]].astype(float),
    })
    return frame.sort_values("confidence", ascending=False, ignore_index=True)
