"""The champion's test evidence: predictions kept, confidence intervals, paired comparisons.

- Test predictions: the evaluated model's predictions on the test split are logged on its run as
  `test_predictions.json` (the task's own form, post-processed, with the split's fingerprint), so
  any comparison made with them can be redone.
- Confidence intervals: every test metric with a per-row form (`Task.row_stats`) gets a 95%
  percentile bootstrap interval over the test rows, logged beside it as `<metric>_ci_low` and
  `<metric>_ci_high`.
- Paired comparisons (`tasks.bootstrap.paired_bootstrap`): the challenger against the current
  champion on the same rows (`registry/gate.py` decides whether @champion moves), and the model
  against the study's baseline (whether it beats it beyond noise).

The current champion's predictions come from its run's `test_predictions.json` when they were
made on this very test split (same fingerprint); otherwise its model is loaded and predicts the
split, and those predictions are logged on the challenger's run (`champion_v<N>_test_predictions.json`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.data import Splits
from orchestrator.registry import versions as registry
from orchestrator.registry.gate import Comparison, decide
from orchestrator.registry.lookup import load_classifier
from orchestrator.tasks import Evaluation, Task
from orchestrator.tasks.bootstrap import RowStats, confidence_intervals, paired_bootstrap
from orchestrator.tracking.client import Tracker, TrackingStoreError, is_outage

log = logging.getLogger(__name__)

PREDICTIONS = "test_predictions.json"
BASELINE_PREDICTIONS = "baseline_test_predictions.json"  # on the study's run
ROUNDS = 1000  # resamples: the 2.5% and 97.5% percentiles rest on 25 resamples each
SEED = 0  # the same resamples every time: a comparison redone gives the same answer


def predictions_text(evaluation: Evaluation, test_data: str) -> str:
    """The evaluation's predictions as JSON: {test_data, form, predictions}."""
    predictions = evaluation.predictions
    if isinstance(predictions, np.ndarray):
        record = {"form": "array", "dtype": str(predictions.dtype), "predictions": predictions.tolist()}
    else:
        record = {"form": "list", "predictions": [list(p) if not isinstance(p, str) else p for p in predictions]}
    return json.dumps({"test_data": test_data, **record}, ensure_ascii=False, separators=(",", ":"))


def evaluation_from_text(text: str) -> tuple[str | None, Evaluation]:
    """(the test split's fingerprint, an `Evaluation` holding the saved predictions)."""
    record = json.loads(text)
    predictions = record["predictions"]
    if record.get("form") == "array":
        predictions = np.asarray(predictions, dtype=record.get("dtype"))
    return record.get("test_data"), Evaluation({}, {}, predictions)


def row_stats(task: Task, evaluation: Evaluation, splits: Splits) -> RowStats | None:
    return task.row_stats(evaluation, splits.data["test"], splits.label_names)


def intervals(task: Task, evaluation: Evaluation, splits: Splits) -> dict[str, float]:
    """`test_<metric>_ci_low` / `_ci_high` for every metric with a per-row form."""
    stats = row_stats(task, evaluation, splits)
    if stats is None:
        return {}
    out = {}
    for name, (low, high) in confidence_intervals(stats, ROUNDS, seed=SEED).items():
        out[f"test_{name}_ci_low"], out[f"test_{name}_ci_high"] = low, high
    return out


def is_interval(metric: str) -> bool:
    return metric.endswith(("_ci_low", "_ci_high"))


def saved_evaluation(tracker: Tracker, run_id: str, test_data: str, name: str = PREDICTIONS) -> Evaluation | None:
    """The predictions a run logged on this test split, or None (none logged, or another split)."""
    try:
        if not tracker.has_artifacts(run_id, name):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            text = Path(tracker.download_artifacts(run_id, name, tmp)).read_text()
    except TrackingStoreError as e:
        if is_outage(e):
            raise
        return None
    digest, evaluation = evaluation_from_text(text)
    return evaluation if digest == test_data else None


@dataclass
class Evidence:
    """What the comparisons need of the study: its task, splits, tracker and test split."""

    task: Task
    splits: Splits
    tracker: Tracker
    metric: str  # the test metric compared, e.g. test_macro_f1

    @property
    def test_data(self) -> str:
        return self.splits.split_digest("test")

    @property
    def name(self) -> str:  # the metric's name in `row_stats` (no prefix)
        return self.metric.removeprefix("test_")

    def compare(self, champion: RowStats, challenger: RowStats) -> Comparison:
        maximize = self.task.maximize(self.metric)
        paired = paired_bootstrap(champion, challenger, self.name, ROUNDS, SEED, maximize)
        return Comparison(self.metric, challenger.point()[self.name], champion.point()[self.name], paired.difference,
                          paired.ci, paired.p_better, paired.rounds, maximize, challenger.rows)

    def gate(self, challenger: Evaluation, run_id: str, min_confidence: float, min_improvement: float | None,
             study: str):
        """`registry.register`'s gate: the challenger against the champion version it is given."""
        mine = row_stats(self.task, challenger, self.splits)

        def gate(current) -> tuple[bool, str, Comparison]:
            if mine is None:
                raise registry.ScoreUnreadable(f"task {self.task.name} has no per-row form of {self.metric} for a "
                                               f"paired comparison")
            theirs = self.champion_evaluation(current, run_id)
            stats = row_stats(self.task, theirs, self.splits)
            if stats is None or stats.rows != mine.rows:
                raise registry.ScoreUnreadable(f"version {current.version}'s test predictions do not cover this "
                                               f"test split's {mine.rows} rows")
            comparison = self.compare(stats, mine)
            moves, why = decide(comparison, min_confidence, min_improvement)
            return moves, f"study {study}: {why}", comparison
        return gate

    def champion_evaluation(self, current, run_id: str) -> Evaluation:
        """The champion version's predictions on this test split: kept on its run, else made now
        (and then kept on the challenger's run `run_id`, so the comparison can be redone)."""
        if current.run_id:
            saved = saved_evaluation(self.tracker, current.run_id, self.test_data)
            if saved is not None:
                return saved
        try:
            classifier = load_classifier(current.source)
        except Exception as e:  # noqa: BLE001 - any failure to load means: cannot compare
            raise registry.ScoreUnreadable(f"version {current.version} (the current champion) could not be loaded "
                                           f"to predict this test split ({type(e).__name__}: {e})") from e
        if classifier.label_names != self.splits.label_names:
            raise registry.ScoreUnreadable(
                f"version {current.version} (the current champion) predicts labels {classifier.label_names[:10]}, "
                f"this study {self.splits.label_names[:10]}; they cannot be compared on one test split")
        evaluation, _ = classifier.evaluate(self.splits.data["test"], "test")
        self.tracker.log_text(run_id, predictions_text(evaluation, self.test_data),
                              f"champion_v{current.version}_{PREDICTIONS}")
        return evaluation

    def against_baseline(self, model: Evaluation, baseline: Evaluation | None) -> Comparison | None:
        """The model against the baseline on the test rows; None where either has no per-row form."""
        if baseline is None:
            return None
        mine, theirs = row_stats(self.task, model, self.splits), row_stats(self.task, baseline, self.splits)
        if mine is None or theirs is None or mine.rows != theirs.rows or mine.rows == 0:
            return None
        return self.compare(theirs, mine)


def baseline_verdict(comparison: Comparison, min_confidence: float) -> str:
    """One line: whether the champion beats the baseline beyond noise."""
    if comparison.improvement > 0 and comparison.p_better >= min_confidence:
        verdict = "beats the baseline beyond noise"
    elif comparison.improvement < 0 and 1 - comparison.p_better >= min_confidence:
        verdict = "TRAILS the baseline beyond noise"
    else:
        verdict = "is not distinguishable from the baseline (within noise)"
    return (f"champion {verdict}: {comparison.metric} {comparison.challenger:.4f} vs {comparison.champion:.4f}, "
            f"{comparison.difference:+.4f} (95% CI {comparison.ci[0]:+.4f} to {comparison.ci[1]:+.4f}), better in "
            f"{comparison.p_better:.1%} of {comparison.rounds} paired resamples of the {comparison.rows} test rows")
