"""Decision thresholds tuned on validation, shared by the tasks that predict "is label X on?".

One threshold per label (multi_label) or for the positive class (binary single_label), chosen
among the scores themselves: the midpoints between consecutive distinct validation scores.

A threshold is tuned only where the validation scores separate the classes (`separation`), and
every decision says what it reached (`Decision`): the threshold, its validation precision, recall
and F1, whether a `postprocess.target` was missed and why this threshold. A model whose scores
carry no signal keeps the default rather than a cut fitted to noise, and a missed target is
reported, never hidden behind the nearest miss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

DEFAULT = 0.5
# Tune only where the ranking beats chance at the usual 5% level. A rank test, because a cut is
# only as good as the order of the scores it splits, whatever their scale: an undertrained model
# whose scores all lie in 0.0843-0.0847 in random order gets no cut fitted inside that noise,
# while a badly calibrated but well-ordered one (all scores in 0.08-0.09, positives on top) still
# gets one. Its p-value accounts for the size of validation: a handful of rows needs a nearly
# perfect order (6 rows, 3 of each: only a perfect one, p = 0.05), 600 rows need a ROC AUC of
# about 0.55. Ties (scores equal to the float's precision) count as half, as in the AUC.
ALPHA = 0.05


def unused_settings(post, tuned: bool, why: str, fix: str = "remove it") -> list[str]:
    """postprocess keys that are set but would change nothing, one line each: an objective or
    target where no threshold is tuned (`why` says why not), a target for the F1 objective (which
    has none). Refused rather than ignored: whoever set `objective: recall, target: 0.95` expects
    a model that reaches 0.95 recall, and would otherwise get the argmax or the best-F1 cut."""
    if not tuned:
        return [f"postprocess.{key}: {value!r} is used only where a threshold is tuned, and {why}; {fix}"
                for key, value in (("objective", None if post.objective == "f1" else post.objective),
                                   ("target", post.target)) if value is not None]
    if post.objective == "f1" and post.target is not None:
        return [f"postprocess.target: {post.target} has no effect with postprocess.objective f1 (the threshold of "
                f"best F1 has no target); set postprocess.objective=precision or =recall, or remove the target"]
    return []


@dataclass
class Decision:
    """How one label's threshold was chosen, and what it gives on validation."""

    threshold: float
    tuned: bool  # False: the default was kept (reason says why)
    objective: str  # f1, precision or recall
    target: float | None  # the precision / recall asked for (postprocess.target); None for f1
    precision: float  # on validation, at `threshold`
    recall: float
    f1: float
    missed: bool | None  # the target was not reached on validation; None: no target (f1)
    reason: str  # one sentence: why this threshold
    roc_auc: float | None = None  # the separation test's numbers (None: not computable)
    p_value: float | None = None

    @property
    def reached(self) -> float:
        """The objective's value at the threshold."""
        return {"precision": self.precision, "recall": self.recall}.get(self.objective, self.f1)

    def to_dict(self) -> dict:
        """Plain JSON, kept in `post` with the model."""
        return asdict(self)


def separation(scores: np.ndarray, truth: np.ndarray) -> tuple[float | None, float | None, str | None]:
    """(ROC AUC, one-sided Mann-Whitney p-value, why the scores cannot be tuned on or None)."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth).astype(bool)
    if not truth.any() or truth.all():
        missing = "positive" if not truth.any() else "negative"
        return None, None, f"validation has no {missing} example, so there is nothing to tune on"
    if np.ptp(scores) == 0:
        return None, None, f"every validation score is {scores[0]:.6g}: the scores do not tell rows apart"
    u, p = mannwhitneyu(scores[truth], scores[~truth], alternative="greater")
    auc = float(u) / (truth.sum() * (~truth).sum())
    if not p < ALPHA:
        return auc, float(p), (f"validation scores do not separate the classes (ROC AUC {auc:.3f}, one-sided "
                               f"Mann-Whitney p={float(p):.2g}, needs p < {ALPHA}); a threshold tuned on them "
                               f"would fit noise")
    return auc, float(p), None


def tune(scores: np.ndarray, truth: np.ndarray, objective: str = "f1", target: float | None = None) -> float:
    """The threshold for one label: scores >= threshold predict it. The cut alone, without the
    separation test (`decide` runs both).

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


def decide(scores: np.ndarray, truth: np.ndarray, objective: str = "f1", target: float | None = None) -> Decision:
    """The threshold for one label and the record of how it was chosen: tuned (`tune`) where the
    scores separate the classes, else the default."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth).astype(bool)
    auc, p, problem = separation(scores, truth) if len(scores) else (None, None, "validation is empty")
    threshold = DEFAULT if problem else tune(scores, truth, objective, target)
    precision, recall, f1 = _scores_at(scores, truth, threshold)
    reached = {"precision": precision, "recall": recall}.get(objective, f1)
    missed = None if objective == "f1" or target is None else bool(reached < target - 1e-12)
    if problem:
        reason = f"default {DEFAULT} kept: {problem}"
    elif objective == "f1":
        reason = "tuned on validation: the best F1"
    elif not missed:
        other = "recall" if objective == "precision" else "precision"
        reason = f"tuned on validation: the most {other} with {objective} >= {target:g}"
    else:
        reason = (f"no threshold reaches {objective} {target:g} on validation; this one comes closest "
                  f"({objective} {reached:.3f})")
    return Decision(threshold, problem is None, objective, target, precision, recall, f1, missed, reason, auc, p)


def decide_all(probs: np.ndarray, truth: np.ndarray, objective: str = "f1",
               target: float | None = None) -> list[Decision]:
    """One decision per column of `probs` (examples x labels) against multi-hot `truth`."""
    return [decide(probs[:, j], truth[:, j], objective, target) for j in range(probs.shape[1])]


def tune_all(probs: np.ndarray, truth: np.ndarray, objective: str = "f1", target: float | None = None) -> list[float]:
    """One threshold per column of `probs` (examples x labels) against multi-hot `truth`, each
    tuned only where its scores separate the classes."""
    return [d.threshold for d in decide_all(probs, truth, objective, target)]


def _scores_at(scores: np.ndarray, truth: np.ndarray, threshold: float) -> tuple[float, float, float]:
    predicted = scores >= threshold
    tp = float(np.sum(predicted & truth))
    precision = tp / predicted.sum() if predicted.any() else 0.0
    recall = tp / truth.sum() if truth.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return float(precision), float(recall), float(f1)


# ---------------------------------------------------------------------------- what a run says about them


def tags(post: dict, label_names: list[str]) -> dict[str, str]:
    """MLflow tags of the decisions in `post` (none when nothing was tuned). One label: every
    number; several: counts and the labels concerned (the whole table is an artifact)."""
    decisions = post.get("tuning")
    if not decisions:
        return {}
    if isinstance(decisions, dict):  # single_label: the positive class
        d = decisions
        out = {"threshold": f"{d['threshold']:.6g}", "threshold_tuned": str(d["tuned"]).lower(),
               "threshold_objective": d["objective"], "threshold_val_precision": f"{d['precision']:.4f}",
               "threshold_val_recall": f"{d['recall']:.4f}", "threshold_val_f1": f"{d['f1']:.4f}",
               "threshold_reason": d["reason"][:500]}
        if d["target"] is not None:
            out.update({"threshold_target": f"{d['target']:g}", "threshold_target_missed": str(d["missed"]).lower()})
        return out
    kept = [n for n, d in zip(label_names, decisions) if not d["tuned"]]
    missed = [n for n, d in zip(label_names, decisions) if d["missed"]]
    out = {"threshold_objective": decisions[0]["objective"],
           "threshold_labels_tuned": f"{len(decisions) - len(kept)}/{len(decisions)}",
           "threshold_labels_default": _names(kept)}
    if decisions[0]["target"] is not None:
        out.update({"threshold_target": f"{decisions[0]['target']:g}",
                    "threshold_target_missed": str(bool(missed)).lower(),
                    "threshold_labels_missed": _names(missed)})
    return out


def describe(post: dict, label_names: list[str]) -> str | None:
    """One line for the search's summary: the threshold(s) validation chose, and any target missed."""
    decisions = post.get("tuning")
    if not decisions:
        return None
    if isinstance(decisions, dict):
        d = decisions
        positive = label_names[post.get("positive", 1)] if len(label_names) > 1 else "?"
        target = ""
        if d["target"] is not None:
            target = (f"; TARGET {d['objective']} {d['target']:g} MISSED" if d["missed"]
                      else f"; target {d['objective']} {d['target']:g} reached")
        return (f"decision threshold for {positive!r}: {d['threshold']:.6g} (validation precision {d['precision']:.3f}, "
                f"recall {d['recall']:.3f}, F1 {d['f1']:.3f}){target}; {d['reason']}")
    kept = [(n, d) for n, d in zip(label_names, decisions) if not d["tuned"]]
    missed = [n for n, d in zip(label_names, decisions) if d["missed"]]
    line = f"decision thresholds: {len(decisions) - len(kept)} of {len(decisions)} label(s) tuned on validation"
    if kept:
        line += (f"; {len(kept)} kept {DEFAULT} because their validation scores do not separate the classes "
                 f"({_names([n for n, _ in kept], 5)})")
    objective, target = decisions[0]["objective"], decisions[0]["target"]
    if target is not None:
        line += (f"; TARGET {objective} {target:g} MISSED by {len(missed)} label(s) ({_names(missed, 5)})" if missed
                 else f"; target {objective} {target:g} reached by every label")
    return line + " (per label: thresholds_validation.json on the trial's run)"


def table(post: dict, label_names: list[str]) -> pd.DataFrame | None:
    """The decisions as a DataFrame, one row per label (None when nothing was tuned)."""
    decisions = post.get("tuning")
    if not decisions:
        return None
    rows = [decisions] if isinstance(decisions, dict) else decisions
    names = [label_names[post.get("positive", 1)]] if isinstance(decisions, dict) else label_names
    return pd.DataFrame([{"label": n, **d} for n, d in zip(names, rows)])


def _names(names: list[str], most: int = 20) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "") if names else "none"
