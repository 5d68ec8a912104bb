"""regression scores from true and predicted numbers; one implementation for trials, champion and baseline.

Pearson's r and the RMSE are functions of seven per-row sums (`sums_row`, `of_sums`), which is
how the bootstrap scores its resamples (`Task.row_stats`); `evaluate` computes them from the
same sums, so the point estimate and the intervals agree. Spearman's rho ranks all rows at
once and has no per-row form.

A constant side (every prediction the same: an untrained head) has no correlation: r and rho
are 0 there, as a ratio with nothing to divide by is 0 everywhere else (`bootstrap.ratio`), not NaN,
which would fail a trial that merely learned nothing yet.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

NAMES = ("pearson", "spearman", "rmse", "loss")
LOWER_IS_BETTER = ("rmse", "loss")  # minimised (`Regression.maximize`); the rest maximised
SUMS = ("n", "x", "y", "xx", "yy", "xy", "dd")  # of predictions x, true values y and their differences d


def metric_names(prefix: str = "val") -> list[str]:
    return [f"{prefix}_{name}" for name in NAMES]


def sums_row(predictions: np.ndarray, truth: np.ndarray, center: float = 0.0) -> np.ndarray:
    """Per row: 1, x, y, x^2, y^2, xy, (x - y)^2, with x and y shifted by `center` (the true
    values' mean: r does not change, and the sums of squares stay small, so their differences
    keep their digits)."""
    x = np.asarray(predictions, dtype=np.float64) - center
    y = np.asarray(truth, dtype=np.float64) - center
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y, (x - y) ** 2], axis=-1)


def of_sums(sums: np.ndarray) -> dict[str, np.ndarray]:
    """{pearson, rmse} of summed `sums_row` columns: (7,) or (B, 7) -> floats or (B,) arrays."""
    n, x, y, xx, yy, xy, dd = np.moveaxis(np.asarray(sums, dtype=np.float64), -1, 0)
    vx, vy = np.maximum(n * xx - x * x, 0.0), np.maximum(n * yy - y * y, 0.0)
    # A side constant up to rounding has a variance of rounding's size next to its sum of squares.
    zero = (vx <= 1e-12 * n * xx) | (vy <= 1e-12 * n * yy)
    pearson = np.where(zero, 0.0, (n * xy - x * y) / np.where(zero, 1.0, np.sqrt(vx * vy)))
    rmse = np.sqrt(np.where(n > 0, dd, 0.0) / np.maximum(n, 1.0))
    return {"pearson": np.clip(pearson, -1.0, 1.0), "rmse": rmse}


def spearman(predictions: np.ndarray, truth: np.ndarray) -> float:
    x, y = np.asarray(predictions, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(stats.spearmanr(x, y).statistic)


def regression_metrics(predictions: np.ndarray, truth: np.ndarray, prefix: str) -> dict[str, float]:
    """`{prefix}_pearson`, `{prefix}_spearman`, `{prefix}_rmse` (in the target's units)."""
    truth = np.asarray(truth, dtype=np.float64)
    center = float(truth.mean()) if len(truth) else 0.0
    scores = of_sums(sums_row(predictions, truth, center).sum(0))
    return {f"{prefix}_pearson": float(scores["pearson"]), f"{prefix}_spearman": spearman(predictions, truth),
            f"{prefix}_rmse": float(scores["rmse"])}
