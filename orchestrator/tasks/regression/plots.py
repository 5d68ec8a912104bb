"""regression figures and tables for runs: predicted against true values, and the largest errors. No tracking here."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files, never to a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def scatter_figure(truth: np.ndarray, predictions: np.ndarray, title: str):
    """Each row a point; the diagonal is a perfect model, so distance from it is the error."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(truth, predictions, s=8, alpha=0.5)
    if len(truth):
        low = float(min(np.min(truth), np.min(predictions)))
        high = float(max(np.max(truth), np.max(predictions)))
        ax.plot([low, high], [low, high], color="grey", linewidth=1, linestyle="--")
    ax.set_xlabel("true value")
    ax.set_ylabel("predicted value")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def largest_errors(texts: list[str], truth: np.ndarray, predictions: np.ndarray, most: int = 100) -> pd.DataFrame:
    """The rows the model is furthest off, worst first: where it is most wrong is worth reading."""
    error = np.asarray(predictions, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    worst = np.argsort(-np.abs(error), kind="stable")[:most]
    return pd.DataFrame({
        "text": [texts[i] for i in worst],
        "true_value": np.asarray(truth, dtype=np.float64)[worst],
        "predicted_value": np.asarray(predictions, dtype=np.float64)[worst],
        "error": error[worst],
    })
