"""Bootstrap CIs and the paired bootstrap from per-row counts (`tasks/bootstrap.py`, `Task.row_stats`).

The key check: for every task, the score of the summed per-row counts is exactly what the task's own
`evaluate` reports, for every metric it covers; the bootstrap is only as right as that.
"""

from __future__ import annotations

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Sequence, Value

from orchestrator.tasks import experiment_from_dict
from orchestrator.tasks.base import Task
from orchestrator.tasks.bootstrap import (
    PairedResult,
    RowStats,
    confidence_intervals,
    distinct_rows,
    paired_bootstrap,
    resample_weights,
)
from orchestrator.tasks.multi_label.task import MultiLabel
from orchestrator.tasks.single_label.task import SingleLabel
from orchestrator.tasks.token_classification import tagging
from orchestrator.tasks.token_classification.task import TokenClassification

# ---------------------------------------------------------------- synthetic evaluations, one per task case


def noisy_probs(rng, truth: np.ndarray, n: int, skill: float) -> np.ndarray:
    """Class probabilities that favour the true class with strength `skill` (0: chance)."""
    logits = rng.normal(size=(len(truth), n))
    logits[np.arange(len(truth)), truth] += skill
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def single_label_case(rows=400, seed=0, skill=1.5):
    # "never" is never the true class; "rare" has a handful of rows; "odd name" needs safe_name.
    names = ["neg", "pos", "neutral", "rare", "odd name", "never"]
    rng = np.random.default_rng(seed)
    truth = rng.choice(5, size=rows, p=[0.4, 0.3, 0.2, 0.02, 0.08])
    probs = noisy_probs(rng, truth, len(names), skill)
    examples = Dataset.from_dict({"text": ["t"] * rows, "label": truth.tolist()},
                                 features=Features({"text": Value("string"), "label": ClassLabel(names=names)}))
    return SingleLabel(), probs, examples, names


def binary_tuned_case(rows=300, seed=1):
    names = ["ham", "spam"]
    rng = np.random.default_rng(seed)
    truth = (rng.random(rows) < 0.3).astype(int)
    p_spam = np.clip(0.25 + 0.35 * truth + rng.normal(scale=0.2, size=rows), 0, 1)
    probs = np.stack([1 - p_spam, p_spam], 1)
    task = SingleLabel(experiment_from_dict({"name": "x", "data": {"train": "t.csv"},
                                             "postprocess": {"threshold": "tune"}}))
    examples = Dataset.from_dict({"text": ["t"] * rows, "label": truth.tolist()},
                                 features=Features({"text": Value("string"), "label": ClassLabel(names=names)}))
    return task, probs, examples, names


def multi_label_case(rows=300, seed=2, skill=0.35):
    names = ["joy", "anger", "fear", "rare label", "never"]
    rng = np.random.default_rng(seed)
    truth = rng.random((rows, len(names))) < np.array([0.4, 0.3, 0.2, 0.03, 0.0])
    truth[:20] = False  # rows without any label (samples F1 0 unless nothing is predicted either)
    probs = np.clip(0.3 + skill * truth + rng.normal(scale=0.2, size=truth.shape), 0, 1)
    probs[:10] = 0.01  # ... and some of them with nothing predicted
    features = Features({"text": Value("string"), "labels": Sequence(ClassLabel(names=names))})
    examples = Dataset.from_dict({"text": ["t"] * rows, "labels": [np.flatnonzero(r).tolist() for r in truth]},
                                 features=features)
    return MultiLabel(None), probs, examples, names


TYPES = ["LOC", "PER", "ORG.x"]


def gold_sentence(rng, scheme: str) -> tuple[list[tuple[str, int, int]], int]:
    """(spans, length) of one sentence: a few entities (words for BMES) among O tokens."""
    spans, i = [], int(rng.integers(0, 3))
    while i < 25:
        length = int(rng.integers(1, 4))
        if scheme == "BMES" or rng.random() < 0.5:
            spans.append((rng.choice(TYPES) if scheme != "BMES" else "_", i, i + length))
            i += length
        i += 0 if scheme == "BMES" else int(rng.integers(1, 4))
    return spans, i


def token_case(scheme: str, sentences=120, seed=3, noise=0.15):
    rng = np.random.default_rng(seed)
    if scheme == "BMES":
        names = tagging.tag_names([], "BMES")
    else:
        names = tagging.tag_names([f"B-{t}" for t in TYPES], scheme)
    index = {t: i for i, t in enumerate(names)}
    gold_ids, outputs = [], []
    for s in range(sentences):
        spans, length = gold_sentence(rng, scheme)
        tags = tagging.tags_from_spans(spans, length, scheme)
        ids = [index[t] for t in tags]
        # Predictions: the gold tag, or any tag at random (ill-formed sequences included: orphan
        # I-, unclosed B-, which each reading treats its own way).
        pred = [i if rng.random() > noise else int(rng.integers(len(names))) for i in ids]
        probs = np.full((length, len(names)), 0.02, dtype=np.float32)
        probs[np.arange(length), pred] = 0.9
        if s % 17 == 0:
            probs = probs[:-2]  # words the tokenizer dropped: evaluate pads them with O (S)
        gold_ids.append(ids)
        outputs.append(probs)
    examples = Dataset.from_dict({"tokens": [["x"] * len(g) for g in gold_ids], "tags": gold_ids})
    return TokenClassification(), outputs, examples, names


CASES = {
    "single_label": single_label_case,
    "single_label_tuned_threshold": binary_tuned_case,
    "multi_label": multi_label_case,
    "token_bio": lambda: token_case("BIO"),
    "token_bioes": lambda: token_case("BIOES"),
    "token_bmes": lambda: token_case("BMES"),
}
LEFT_OUT = {  # metrics of evaluate that are no function of per-row counts
    "single_label": {"loss"},
    "single_label_tuned_threshold": {"loss", "pr_auc", "roc_auc"},
    "multi_label": {"loss"},
    "token_bio": {"loss"},
    "token_bioes": {"loss"},
    "token_bmes": {"loss"},
}


def evaluated(case: str, prefix="test"):
    task, outputs, examples, names = CASES[case]()
    post = None
    if case == "single_label_tuned_threshold":
        post = task.evaluate(outputs, examples, names, "val").post  # fitted, then passed as for a test set
        assert "threshold" in post
    evaluation = task.evaluate(outputs, examples, names, prefix, post)
    return task, evaluation, task.row_stats(evaluation, examples, names), examples, names


# ---------------------------------------------------------------- the key check


@pytest.mark.parametrize("case", sorted(CASES))
def test_score_of_summed_counts_is_evaluate_exactly(case):
    task, evaluation, stats, _, _ = evaluated(case)
    reported = {k.removeprefix("test_"): v for k, v in evaluation.metrics.items()}
    point = stats.score(stats.counts.sum(0))
    assert set(point) == set(reported) - LEFT_OUT[case]
    for name, value in point.items():
        assert float(value) == pytest.approx(reported[name], abs=1e-9, rel=0), name
    assert stats.point() == pytest.approx({k: reported[k] for k in point}, abs=1e-9, rel=0)
    # Something non-trivial is measured: not every score is 0 or 1.
    assert any(0 < v < 1 for v in stats.point().values())


def test_edge_values_are_exercised():
    """The synthetic cases reach the zero-division rules they are meant to test."""
    _, ev, _, _, _ = evaluated("single_label")
    assert ev.metrics["test_recall_never"] == 0.0 and ev.metrics["test_f1_never"] == 0.0
    _, ev, _, _, _ = evaluated("multi_label")
    assert ev.metrics["test_recall_never"] == 0.0


def test_the_base_task_has_no_row_form():
    task, evaluation, _, examples, names = evaluated("single_label")
    assert Task.row_stats(task, evaluation, examples, names) is None


def test_predictions_that_do_not_match_the_examples_are_refused():
    task, evaluation, _, examples, names = evaluated("single_label")
    evaluation.predictions = evaluation.predictions[:-1]
    with pytest.raises(ValueError, match="predictions"):
        task.row_stats(evaluation, examples, names)


# ---------------------------------------------------------------- confidence intervals


@pytest.mark.parametrize("case", sorted(CASES))
def test_intervals_contain_the_point_value(case):
    _, _, stats, _, _ = evaluated(case)
    cis = confidence_intervals(stats, rounds=500, seed=1)
    point = stats.point()
    assert set(cis) == set(point)
    for name, (low, high) in cis.items():
        assert low <= high and np.isfinite(low) and np.isfinite(high), name
        assert low - 1e-12 <= point[name] <= high + 1e-12, (name, low, point[name], high)


def test_intervals_shrink_with_more_rows():
    def widths(rows):
        task, probs, examples, names = single_label_case(rows=rows)
        stats = task.row_stats(task.evaluate(probs, examples, names, "test"), examples, names)
        return {k: hi - lo for k, (lo, hi) in confidence_intervals(stats).items()}

    small, large = widths(200), widths(5000)
    for name in ("macro_f1", "accuracy", "f1_neg", "precision_pos", "recall_neutral"):
        assert large[name] < small[name] / 2, name  # ~ 1/sqrt(25) = 1/5 as wide


def test_intervals_are_deterministic_for_a_seed_and_follow_the_level():
    _, _, stats, _, _ = evaluated("multi_label")
    assert confidence_intervals(stats, seed=4) == confidence_intervals(stats, seed=4)
    wide, narrow = confidence_intervals(stats, level=0.99), confidence_intervals(stats, level=0.5)
    assert wide["micro_f1"][1] - wide["micro_f1"][0] > narrow["micro_f1"][1] - narrow["micro_f1"][0]


def test_no_rows_no_intervals_and_bad_settings_are_refused():
    empty = RowStats(np.zeros((0, 3)), lambda s: {"m": s[..., 0]})
    assert confidence_intervals(empty) == {}
    _, _, stats, _, _ = evaluated("single_label")
    with pytest.raises(ValueError, match="rounds"):
        confidence_intervals(stats, rounds=0)
    with pytest.raises(ValueError, match="level"):
        confidence_intervals(stats, level=95)
    with pytest.raises(ValueError, match=r"\(rows, k\)"):
        RowStats(np.zeros(3), lambda s: {})


def test_a_resample_without_a_class_scores_it_zero():
    # One row of class "rare" among 40: about a third of the resamples miss it, where its recall
    # and F1 have nothing to divide by and are 0 (zero_division=0), never nan.
    task, probs, examples, names = single_label_case(rows=40, seed=5)
    truth = np.asarray(examples["label"])
    assert (truth == names.index("rare")).sum() <= 2
    stats = task.row_stats(task.evaluate(probs, examples, names, "test"), examples, names)
    w = next(resample_weights(stats.rows, 200, seed=0))
    values = stats.score(w @ stats.counts)
    for name, v in values.items():
        assert v.shape == (200,) and np.isfinite(v).all() and (0 <= v).all() and (v <= 1).all(), name
    missed = w[:, truth == names.index("rare")].sum(1) == 0
    assert missed.any() and (values["recall_rare"][missed] == 0).all()
    assert (values["f1_never"] == 0).all()


def test_resample_weights_are_multinomial_counts_in_chunks():
    chunks = list(resample_weights(1000, 37, seed=0, max_cells=5000))
    assert [len(w) for w in chunks] == [5] * 7 + [2]
    w = np.concatenate(chunks)
    assert (w.sum(1) == 1000).all() and w.min() >= 0 and np.array_equal(w, np.round(w))
    assert 0.55 < (w > 0).mean() < 0.71  # a row is in a resample with probability 1 - 1/e = 0.632
    again = np.concatenate(list(resample_weights(1000, 37, seed=0, max_cells=5000)))
    assert np.array_equal(w, again)


def test_grouping_identical_rows_keeps_the_sums_and_the_distribution():
    _, _, stats, _, _ = evaluated("single_label")
    unique, multiplicity = distinct_rows(stats.counts)
    assert len(unique) <= 6 * 6 and multiplicity.sum() == stats.rows
    np.testing.assert_array_equal(multiplicity @ unique, stats.counts.sum(0))
    w = np.concatenate(list(resample_weights(multiplicity, 300, seed=0, max_cells=1000)))
    assert w.shape == (300, len(unique)) and (w.sum(1) == stats.rows).all()
    # Grouped draws (what the bootstraps do) and row-by-row draws give the same intervals, up to
    # the bootstrap's own noise.
    grouped = confidence_intervals(stats, rounds=2000, seed=0)
    by_row = np.concatenate(list(resample_weights(stats.rows, 2000, seed=1))) @ stats.counts
    for name in ("macro_f1", "accuracy", "recall_rare"):
        low, high = np.percentile(stats.score(by_row)[name], [2.5, 97.5])
        assert grouped[name] == pytest.approx((low, high), abs=0.015), name


# ---------------------------------------------------------------- paired bootstrap


@pytest.mark.parametrize("case,metric", [("single_label", "macro_f1"), ("multi_label", "micro_f1"),
                                         ("token_bio", "f1"), ("token_bmes", "f1")])
def test_a_model_against_itself_is_a_tie(case, metric):
    _, _, stats, _, _ = evaluated(case)
    result = paired_bootstrap(stats, stats, metric, rounds=300)
    assert isinstance(result, PairedResult)
    assert result.difference == 0 and result.ci == (0.0, 0.0) and result.p_better == 0.5
    assert result.rounds == 300


def test_a_clearly_better_model_wins_and_direction_counts():
    task, probs, examples, names = single_label_case(rows=500, skill=0.8)
    _, better_probs, _, _ = single_label_case(rows=500, skill=3.0)  # same rows and truth (same seed)
    a = task.row_stats(task.evaluate(probs, examples, names, "test"), examples, names)
    b = task.row_stats(task.evaluate(better_probs, examples, names, "test"), examples, names)
    for metric in ("macro_f1", "accuracy"):
        result = paired_bootstrap(a, b, metric)
        assert result.difference == pytest.approx(b.point()[metric] - a.point()[metric])
        assert result.difference > 0.1 and result.p_better > 0.95 and result.ci[0] > 0
        assert paired_bootstrap(b, a, metric).p_better < 0.05
        # Were the metric better when lower, b would be the worse model.
        assert paired_bootstrap(a, b, metric, maximize=False).p_better < 0.05


def test_paired_resamples_share_rows():
    # Two models that differ on a single row: paired, the difference is that row's share whenever
    # it is drawn and 0 otherwise, so it is never negative (unpaired resampling would swing both ways).
    rows = 200
    hit_b = np.ones(rows)
    hit_a = hit_b.copy()
    hit_a[7] = 0
    score = lambda s: {"accuracy": s[..., 0] / s[..., 1]}  # noqa: E731
    a = RowStats(np.column_stack([hit_a, np.ones(rows)]), score)
    b = RowStats(np.column_stack([hit_b, np.ones(rows)]), score)
    result = paired_bootstrap(a, b, "accuracy", rounds=400)
    assert result.difference == pytest.approx(1 / rows) and result.ci[0] >= 0
    # ~63% of resamples draw row 7 (b better), the rest are ties (half each): p_better ~0.82.
    assert 0.75 < result.p_better < 0.9


def test_paired_bootstrap_refuses_different_rows_empty_sets_and_unknown_metrics():
    _, _, stats, _, _ = evaluated("single_label")
    fewer = RowStats(stats.counts[:-1], stats.score)
    with pytest.raises(ValueError, match="same test rows"):
        paired_bootstrap(stats, fewer, "macro_f1")
    empty = RowStats(stats.counts[:0], stats.score)
    with pytest.raises(ValueError, match="0 rows"):
        paired_bootstrap(empty, empty, "macro_f1")
    with pytest.raises(ValueError, match="loss"):
        paired_bootstrap(stats, stats, "loss")
