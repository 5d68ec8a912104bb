"""When @champion moves: better beyond noise (`registry/gate.py`), from a paired bootstrap of
real predictions of a single-label task (`search/evidence.py`)."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value

from orchestrator.data import Splits
from orchestrator.registry.gate import Comparison, decide
from orchestrator.search import evidence
from orchestrator.tasks import Evaluation, get_task

LABELS = ["negative", "neutral", "positive"]


def _splits(n: int, seed: int = 0) -> Splits:
    rng = np.random.default_rng(seed)
    test = Dataset.from_dict({"text": [f"t{i}" for i in range(n)], "label": rng.integers(0, 3, n).tolist()},
                             features=Features({"text": Value("string"), "label": ClassLabel(names=LABELS)}))
    return Splits({"test": test}, LABELS, {"sources": {}, "settings": {}})


def _predictions(splits: Splits, accuracy: float, seed: int) -> Evaluation:
    """Predictions right on about `accuracy` of the rows, wrong (another class) on the others."""
    rng = np.random.default_rng(seed)
    truth = np.asarray(splits.data["test"]["label"])
    wrong = rng.random(len(truth)) > accuracy
    return Evaluation({}, {}, np.where(wrong, (truth + 1) % 3, truth))


def _comparison(improvement: float, p_better: float, maximize: bool = True) -> Comparison:
    difference = improvement if maximize else -improvement
    return Comparison("test_macro_f1", 0.5 + difference, 0.5, difference, (difference - 0.05, difference + 0.05),
                      p_better, 1000, maximize, 200)


@pytest.mark.parametrize("improvement, p_better, min_confidence, min_improvement, moves", [
    (0.05, 0.97, 0.95, None, True),    # better, and sure enough
    (0.05, 0.90, 0.95, None, False),   # better, maybe: noise
    (0.05, 0.90, 0.95, 0.04, True),    # ... but by more than the improvement asked for
    (0.01, 0.90, 0.95, 0.04, False),   # neither
    (-0.02, 0.10, 0.95, 0.01, False),  # worse
    (0.0, 0.5, 0.6, None, False),      # a tie never moves it
])
def test_champion_moves_only_when_better_beyond_noise(improvement, p_better, min_confidence, min_improvement, moves):
    for maximize in (True, False):  # a loss: lower is better, the same rule in its direction
        decided, why = decide(_comparison(improvement, p_better, maximize), min_confidence, min_improvement)
        assert decided is moves
        assert f"{p_better:.1%}" in why and "paired resamples" in why


def test_the_reason_says_what_was_missing():
    _, why = decide(_comparison(0.03, 0.8), 0.95, 0.05)
    assert "not the 95% required (registry.min_confidence), nor better by registry.min_improvement 0.05" in why


def test_a_clearly_better_model_passes_and_a_copy_does_not():
    splits = _splits(400)
    task, base = get_task("single_label"), _predictions(splits, 0.6, 1)
    check = evidence.Evidence(task, splits, tracker=None, metric="test_macro_f1")
    stats = evidence.row_stats(task, base, splits)
    same = check.compare(stats, stats)
    assert same.difference == 0 and same.p_better == 0.5 and not decide(same, 0.95, None)[0]
    better = check.compare(stats, evidence.row_stats(task, _predictions(splits, 0.85, 2), splits))
    assert better.difference > 0.15 and better.p_better > 0.99 and decide(better, 0.95, None)[0]
    assert better.rows == 400 and better.ci[0] > 0


def test_a_small_gain_on_few_rows_is_noise():
    splits = _splits(60)
    task = get_task("single_label")
    check = evidence.Evidence(task, splits, tracker=None, metric="test_macro_f1")
    a, b = _predictions(splits, 0.70, 3), _predictions(splits, 0.74, 4)
    comparison = check.compare(evidence.row_stats(task, a, splits), evidence.row_stats(task, b, splits))
    assert comparison.ci[0] < 0 < comparison.ci[1] and not decide(comparison, 0.95, None)[0]


def test_kept_predictions_read_back_as_they_were_for_every_task_form():
    arrays = (np.array([0, 2, 1]), np.array([[True, False], [False, False]]))
    for predictions in (*arrays, [["B-PER", "O"], ["O"]]):
        text = evidence.predictions_text(Evaluation({}, {}, predictions), "abc")
        digest, back = evidence.evaluation_from_text(text)
        assert digest == "abc"
        if isinstance(predictions, np.ndarray):
            assert back.predictions.dtype == predictions.dtype and (back.predictions == predictions).all()
        else:
            assert back.predictions == predictions


def test_intervals_are_logged_beside_each_metric():
    splits = _splits(200)
    task = get_task("single_label")
    out = evidence.intervals(task, _predictions(splits, 0.7, 5), splits)
    assert {"test_macro_f1_ci_low", "test_macro_f1_ci_high", "test_accuracy_ci_low"} <= set(out)
    assert out["test_macro_f1_ci_low"] < out["test_macro_f1_ci_high"]
    assert not any("loss" in k or "auc" in k for k in out)
