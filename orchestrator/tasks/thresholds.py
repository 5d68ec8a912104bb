"""Decision thresholds tuned on validation, shared by the tasks that predict "is label X on?".

One threshold per label (multi_label) or for the positive class (binary single_label), chosen
among the scores themselves: the midpoints between consecutive distinct validation scores, so a
threshold never sits on a score and tiny validation sets still get a sensible cut.
"""

from __future__ import annotations

import numpy as np

DEFAULT = 0.5


def tune(scores: np.ndarray, truth: np.ndarray, objective: str = "f1", target: float | None = None) -> float:
    """The threshold for one label: scores >= threshold predict it.

    objective f1: the best F1 (ties: the threshold nearest 0.5).
    objective precision: among thresholds reaching precision >= target, the one with the most
    recall; recall: among those reaching recall >= target, the most precision. When none reaches
    the target, the threshold closest to it. With no positive (or no negative) example the label
    keeps 0.5, as does one whose scores are all equal: there is nothing to tune on.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth).astype(bool)
    if len(scores) == 0 or truth.all() or not truth.any() or np.ptp(scores) == 0:
        return DEFAULT  # nothing to tune on: one class only, or scores that do not tell rows apart
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    tp = np.cumsum(t)  # predicting the top k as positive
    fp = np.cumsum(~t)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the end of each run of equal scores
    tp, fp = tp[last], fp[last]
    cuts = np.r_[(s[last[:-1]] + s[last[:-1] + 1]) / 2, s[-1] / 2 if s[-1] > 0 else s[-1] - 1e-6]
    precision = tp / (tp + fp)
    recall = tp / t.sum()
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    if objective == "f1":
        score = f1
    else:
        reached, other = (precision, recall) if objective == "precision" else (recall, precision)
        goal = target if target is not None else 1.0
        ok = reached >= goal - 1e-12
        # Reaching the target comes first; then the other measure; short of it, the nearest miss.
        score = np.where(ok, 1.0 + other, reached - goal)
    best = np.flatnonzero(score >= score.max() - 1e-12)
    return float(cuts[best[np.argmin(np.abs(cuts[best] - DEFAULT))]])


def tune_all(probs: np.ndarray, truth: np.ndarray, objective: str = "f1", target: float | None = None) -> list[float]:
    """One threshold per column of `probs` (examples x labels) against multi-hot `truth`."""
    return [tune(probs[:, j], truth[:, j], objective, target) for j in range(probs.shape[1])]
