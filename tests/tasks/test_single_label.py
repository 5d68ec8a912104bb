"""single_label: the default task; threshold post-processing for two classes."""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset, Features, Value

from orchestrator.tasks import experiment_from_dict
from orchestrator.tasks import thresholds
from orchestrator.tasks.single_label.task import SingleLabel, predict


def _examples(labels):
    return Dataset.from_dict({"text": ["t"] * len(labels), "label": labels},
                             features=Features({"text": Value("string"), "label": ClassLabel(names=["ham", "spam"])}))


def _task(**post):
    return SingleLabel(experiment_from_dict({"name": "x", "data": {"train": "t.csv"}, "postprocess": post}))


# Six validation rows: P(spam) and the truth. At the usual argmax (0.5) only 0.9 and 0.6 count as
# spam: precision 2/2, recall 2/4, F1 0.667. From 0.4 up: precision 1, recall 3/4, F1 0.857. From
# 0.3 up all four spam rows with one false alarm (0.35): precision 4/5, recall 1, F1 0.889, the
# best; the cut sits halfway to the next score, 0.2.
P_SPAM = np.array([0.9, 0.6, 0.4, 0.35, 0.3, 0.1])
TRUTH = [1, 1, 1, 0, 1, 0]


def test_tuned_threshold_is_the_best_f1_cut_and_is_applied():
    # The six rows three times: six rows alone are too few to show the scores separate the classes
    # (thresholds.ALPHA), and the cuts and rates of three copies are those of one.
    p_spam, truth = np.tile(P_SPAM, 3), TRUTH * 3
    probs = np.stack([1 - p_spam, p_spam], axis=1)
    untuned = _task().evaluate(probs, _examples(truth), ["ham", "spam"], "val")
    assert untuned.post == {} and round(untuned.metrics["val_f1_spam"], 3) == 0.667
    tuned = _task(threshold="tune").evaluate(probs, _examples(truth), ["ham", "spam"], "val")
    assert tuned.post["positive"] == 1 and tuned.post["threshold"] == 0.2
    assert round(tuned.metrics["val_f1_spam"], 3) == 0.889
    assert predict(probs, tuned.post).tolist() == [1, 1, 1, 1, 1, 0] * 3
    # Test evaluation passes the fitted post-processing: it is applied, not fitted again.
    again = _task(threshold="tune").evaluate(probs[::-1], _examples(truth[::-1]), ["ham", "spam"], "test",
                                             tuned.post)
    assert again.post == tuned.post


def test_target_precision_picks_the_cut_with_most_recall_at_that_precision():
    # precision 1.0 holds for the top one, two and three; the top three keep the most recall (3/4).
    t = thresholds.tune(P_SPAM, np.array(TRUTH, bool), "precision", 1.0)
    assert t == 0.375
    t = thresholds.tune(P_SPAM, np.array(TRUTH, bool), "recall", 1.0)  # all spam caught, fewest false alarms
    assert t == 0.2


def test_more_than_two_classes_keep_argmax_and_output_names_the_label():
    task = _task(threshold="tune")
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    frame = task.output_frame(probs, ["a", "b"], ["x", "y", "z"], {}, {})
    assert frame["label"].tolist() == ["y", "x"] and list(frame.columns) == ["label", "prob_x", "prob_y", "prob_z"]
    ev = task.evaluate(probs, Dataset.from_dict({"text": ["a", "b"], "label": [1, 2]}), ["x", "y", "z"], "val")
    assert ev.post == {} and ev.metrics["val_accuracy"] == 0.5


def test_objective_precision_without_a_target_is_a_config_problem():
    import pytest

    from orchestrator.config import ConfigError

    with pytest.raises(ConfigError, match="postprocess.target"):
        _task(threshold="tune", objective="precision")
