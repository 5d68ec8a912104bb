"""regression: numeric targets read or refused by row, quantile-stratified splits, the target scale kept
with the model, metrics against scipy and their per-row form, directions, the ridge baseline, pairs."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Value
from scipy import stats

from orchestrator.config import ConfigError
from orchestrator.data import DataError
from orchestrator.tasks import experiment_from_dict, get_task
from orchestrator.tasks.bootstrap import confidence_intervals, paired_bootstrap
from orchestrator.tasks.regression.targets import quantile_bins
from orchestrator.tasks.regression.task import Regression

GOOD = "great excellent love wonderful best".split()
BAD = "awful terrible hate horrible worst".split()
FILLER = "the a this it was is product movie day service".split()


def scored_rows(n: int, seed: int = 0) -> list[dict]:
    """Texts whose score is (good words - bad words) plus a little noise: learnable from the words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        good, bad = rng.randint(0, 3), rng.randint(0, 3)
        words = rng.choices(GOOD, k=good) + rng.choices(BAD, k=bad) + rng.choices(FILLER, k=rng.randint(2, 5))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "other": " ".join(rng.choices(FILLER, k=3)),
                     "score": round(good - bad + rng.gauss(0, 0.3), 2)})
    return rows


def write(path, rows, columns=("text", "other", "score")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([r[c] for c in columns])
    return str(path)


def experiment(data: dict, **sections):
    return experiment_from_dict({"name": "x", "task": "regression", "data": {"label_column": "score", **data},
                                 **sections})


def splits_of(cfg):
    task = get_task("regression", cfg)
    return task, task.load_splits(cfg.data)


def examples(truth, texts=None):
    return Dataset.from_dict({"text": texts or ["t"] * len(truth), "label": list(map(float, truth))},
                             features=Features({"text": Value("string"), "label": Value("float64")}))


# ---------------------------------------------------------------- config and directions


def test_defaults_direction_and_metric_problems():
    cfg = experiment({"train": "t.csv"})
    assert (cfg.search.metric, cfg.search.direction, cfg.training.head) == ("val_pearson", "maximize", "cls")
    task = Regression(cfg)
    assert task.maximize("val_pearson") and task.maximize("test_spearman")
    assert not task.maximize("val_rmse") and not task.maximize("test_rmse") and not task.maximize("val_loss")
    assert task.metric_problem("val_rmse", None) is None
    assert "set search.direction: minimize" in task.metric_problem("val_rmse", "maximize")
    assert "set search.direction: maximize" in task.metric_problem("val_spearman", "minimize")
    assert "val_pearson" in task.metric_problem("val_macro_f1", None)
    assert experiment({"train": "t.csv"}, search={"metric": "val_rmse"}).search.direction == "minimize"


def test_regression_settings_are_refused_where_they_would_be_ignored():
    with pytest.raises(ConfigError, match=r"training.loss is read only by task regression"):
        experiment_from_dict({"name": "x", "data": {"train": "t.csv"}, "training": {"loss": "huber"}})
    with pytest.raises(ConfigError, match=r"training.standardize_target is read only by task regression"):
        experiment_from_dict({"name": "x", "data": {"train": "t.csv"}, "training": {"standardize_target": False}})
    with pytest.raises(ConfigError, match=r"training.imbalance: 'class_weights' is not available for task regression"):
        experiment({"train": "t.csv"}, training={"imbalance": "class_weights"})
    with pytest.raises(ConfigError, match=r"postprocess.threshold: 'tune' sets a decision threshold"):
        experiment({"train": "t.csv"}, postprocess={"threshold": "tune"})
    with pytest.raises(ConfigError, match=r"space.loss: the trials of one study share training.loss"):
        experiment({"train": "t.csv"}, space={"loss": ["mse", "huber"]})
    assert experiment({"train": "t.csv"}, training={"loss": "huber"}).training.loss == "huber"


# ---------------------------------------------------------------- reading


def test_reads_numbers_and_carves_splits_stratified_by_quantiles(tmp_path):
    cfg = experiment({"train": write(tmp_path / "train.csv", scored_rows(400)), "seed": 3})
    task, splits = splits_of(cfg)
    assert splits.label_names == ["score"] and task.label_counts(splits, "train") == {}
    assert {k: len(v) for k, v in splits.data.items()} == {"train": 272, "validation": 48, "test": 80}
    assert splits.data["train"].features["label"].dtype == "float64"
    everything = np.concatenate([splits.data[s]["label"] for s in splits.data])
    edges = np.quantile(everything, [0.1, 0.5, 0.9])
    for split in ("validation", "test"):  # each carved split spans the target as the whole does
        y = np.asarray(splits.data[split]["label"])
        assert np.quantile(y, [0.1, 0.5, 0.9]) == pytest.approx(edges, abs=0.75)
    again = splits_of(cfg)[1]
    assert again.data["test"]["text"] == splits.data["test"]["text"]  # seeded by data.seed
    assert "target 'score' (train: mean" in task.describe(splits)
    capped = splits_of(experiment({"train": cfg.data.train, "max_train_rows": 50, "seed": 3}))[1]
    assert len(capped.data["train"]) == 50 and np.ptp(capped.data["train"]["label"]) > 4


def test_quantile_bins_are_equal_sized_whatever_the_ties():
    values = np.array([5.0] * 6 + [0.0] * 4 + [2.5, 3.0])
    bins = quantile_bins(values, 4)
    assert np.bincount(bins).tolist() == [3, 3, 3, 3]
    assert bins[values == 0.0].max() <= bins[values == 5.0].min()


@pytest.mark.parametrize("cell, found", [("", "nothing"), ("high", "'high'"), ("nan", "'nan'"), ("inf", "'inf'")])
def test_a_target_that_is_no_finite_number_is_refused_naming_its_row(tmp_path, cell, found):
    rows = scored_rows(30)
    rows[6]["score"] = cell
    path = write(tmp_path / "train.csv", rows)
    with pytest.raises(DataError, match=rf"train.csv row 7: column 'score' holds {found}.*not a finite number"):
        splits_of(experiment({"train": path}))


def test_too_few_rows_or_a_constant_target_is_refused(tmp_path):
    with pytest.raises(DataError, match="at least 10 training rows"):
        splits_of(experiment({"train": write(tmp_path / "a.csv", scored_rows(12))}))  # 8 left after carving
    flat = [{**r, "score": 2} for r in scored_rows(40)]
    with pytest.raises(DataError, match="is 2 in every row"):
        splits_of(experiment({"train": write(tmp_path / "b.csv", flat)}))


def test_an_empty_text_is_dropped_like_any_task_but_an_empty_target_is_not(tmp_path):
    rows = scored_rows(60)
    rows[3]["text"] = ""
    _, splits = splits_of(experiment({"train": write(tmp_path / "t.csv", rows)}))
    assert sum(len(v) for v in splits.data.values()) == 59


# ---------------------------------------------------------------- the target's scale


def test_standardised_training_and_the_scale_kept_with_the_checkpoint(tmp_path):
    cfg = experiment({"train": write(tmp_path / "t.csv", scored_rows(100))})
    task, splits = splits_of(cfg)
    saved = task.saved_settings(splits)
    y = np.asarray(splits.data["train"]["label"])
    assert saved["target"] == {"mean": pytest.approx(y.mean()), "std": pytest.approx(y.std()), "standardized": True}
    assert saved["loss"] == "mse" and "text_pair" not in saved
    task.restore(saved)
    # A model that outputs the standardised truth has zero loss, and gather gives the truth back.
    z = torch.tensor((y - y.mean()) / y.std(), dtype=torch.float32).reshape(-1, 1)
    assert task.loss(z, torch.tensor(y, dtype=torch.float32)).item() == pytest.approx(0, abs=1e-10)
    assert task.gather(z.numpy(), None) == pytest.approx(y, abs=1e-5)
    # A checkpoint's task, built without the experiment, reads its outputs the same way.
    predicting = get_task("regression")
    predicting.restore(saved)
    assert predicting.gather(z.numpy(), None) == pytest.approx(y, abs=1e-5)
    frame = predicting.output_frame(predicting.gather(z.numpy()[:2], None), ["a", "b"], ["score"], {}, saved)
    assert list(frame.columns) == ["value"] and frame["value"].to_numpy() == pytest.approx(y[:2], abs=1e-5)
    with pytest.raises(RuntimeError, match="scale"):
        get_task("regression").gather(z.numpy(), None)

    raw = Regression(experiment({"train": cfg.data.train}, training={"standardize_target": False, "loss": "huber"}))
    kept = raw.saved_settings(splits)
    assert kept["target"]["standardized"] is False and kept["loss"] == "huber"
    later = get_task("regression")
    later.restore(kept)
    assert later.scale == (0.0, 1.0) and later.loss_name == "huber"
    assert later.gather(np.array([[1.5]]), None).tolist() == [1.5]


def test_huber_is_gentler_than_mse_on_outliers():
    task = get_task("regression")
    task.restore({"target": {"mean": 0.0, "std": 1.0, "standardized": True}, "loss": "huber"})
    logits, labels = torch.zeros(4, 1), torch.tensor([0.0, 0.0, 0.0, 10.0])
    huber = task.loss(logits, labels).item()
    task.restore({"target": {"mean": 0.0, "std": 1.0, "standardized": True}, "loss": "mse"})
    assert huber == pytest.approx((10 - 0.5) / 4) and task.loss(logits, labels).item() == pytest.approx(25.0)
    # The GPU memory probe's dummy batch meets a task that has seen no data yet (no scale).
    fresh = get_task("regression")
    assert fresh.loss(torch.ones(3, 1, requires_grad=True), fresh.dummy_labels(3, 8, 1, "cpu")).item() == 1.0


# ---------------------------------------------------------------- metrics


def noisy(n=300, seed=0, noise=0.8):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0, 5, n)
    return truth, truth + rng.normal(0, noise, n)


def test_metrics_match_scipy_and_row_stats_reproduce_them():
    truth, predictions = noisy()
    task = get_task("regression")
    task.restore({"target": {"mean": 2.5, "std": 1.4, "standardized": True}})
    evaluation = task.evaluate(predictions, examples(truth), ["score"], "test")
    m = evaluation.metrics
    assert set(m) == {"test_pearson", "test_spearman", "test_rmse", "test_loss"}
    assert m["test_pearson"] == pytest.approx(stats.pearsonr(predictions, truth).statistic, abs=1e-12)
    assert m["test_spearman"] == pytest.approx(stats.spearmanr(predictions, truth).statistic, abs=1e-12)
    assert m["test_rmse"] == pytest.approx(np.sqrt(np.mean((predictions - truth) ** 2)), abs=1e-12)
    assert m["test_loss"] == pytest.approx(np.mean(((predictions - truth) / 1.4) ** 2), rel=1e-5)
    row = task.row_stats(evaluation, examples(truth), ["score"])
    point = row.score(row.counts.sum(0))
    assert set(point) == {"pearson", "rmse"}  # spearman ranks all rows at once; the loss is left out too
    for name, value in point.items():
        assert float(value) == pytest.approx(m[f"test_{name}"], abs=1e-9, rel=0), name
    cis = confidence_intervals(row, rounds=300)
    assert cis["pearson"][0] <= m["test_pearson"] <= cis["pearson"][1]


def test_large_offsets_keep_their_digits_and_constant_predictions_score_zero():
    truth, predictions = noisy(noise=0.3)
    task = get_task("regression")
    task.restore({"target": {"mean": 0.0, "std": 1.0}})
    far = task.evaluate(predictions + 1e6, examples(truth + 1e6), ["y"], "val")
    near = task.evaluate(predictions, examples(truth), ["y"], "val")
    assert far.metrics["val_pearson"] == pytest.approx(near.metrics["val_pearson"], abs=1e-9)
    flat = task.evaluate(np.full(len(truth), 2.0), examples(truth), ["y"], "val")
    assert flat.metrics["val_pearson"] == 0.0 and flat.metrics["val_spearman"] == 0.0


def test_paired_bootstrap_prefers_the_lower_rmse():
    truth, good = noisy(noise=0.3, seed=1)
    bad = truth + np.random.default_rng(2).normal(0, 1.5, len(truth))
    task = get_task("regression")
    task.restore({"target": {"mean": 0.0, "std": 1.0}})
    a, b = (task.row_stats(task.evaluate(p, examples(truth), ["y"], "test"), examples(truth), ["y"])
            for p in (bad, good))
    result = paired_bootstrap(a, b, "rmse", rounds=300, maximize=task.maximize("test_rmse"))
    assert result.difference < 0 and result.p_better > 0.99


# ---------------------------------------------------------------- baseline and artifacts


def test_ridge_baseline_beats_a_constant(tmp_path):
    cfg = experiment({"train": write(tmp_path / "t.csv", scored_rows(300))})
    task, splits = splits_of(cfg)
    scores, test = task.baseline_run(splits, 42)
    assert scores["baseline_test_pearson"] > 0.7 and scores["baseline_val_pearson"] > 0.7
    y = np.asarray(splits.data["test"]["label"])
    assert scores["baseline_test_rmse"] < np.sqrt(np.mean((y - np.mean(splits.data["train"]["label"])) ** 2)) * 0.8
    assert test.predictions.shape == (len(splits.data["test"]),) and test.predictions.dtype == np.float64
    task.restore(task.saved_settings(splits))
    evaluation = task.evaluate(test.predictions, splits.data["test"], splits.label_names, "test")
    kinds = {a.name: a.kind for a in task.artifacts(evaluation, test.predictions, splits.data["test"],
                                                    splits.label_names, "test")}
    assert kinds == {"predicted_vs_true_test.png": "figure", "largest_errors_test.json": "table"}


# ---------------------------------------------------------------- sentence pairs


def test_pairs_are_read_encoded_with_segment_ids_and_predicted_from_tuples(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    path = write(tmp_path / "t.csv", scored_rows(60))
    cfg = experiment({"train": path, "text_column": "text", "text_pair_column": "other"}, training={"max_length": 24})
    task, splits = splits_of(cfg)
    assert splits.data["train"].column_names == ["text", "text_pair", "label"]
    saved = task.saved_settings(splits)
    assert saved["text_pair"] is True and task.input_columns(saved) == ("text", "text_pair")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    tokenizer.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]  # as BERT's own tokenizer
    encoded = task.encode(splits.data["train"].select(range(4)), tokenizer, 24)
    assert encoded.features["labels"].dtype == "float32"
    for row, example in zip(encoded, splits.data["train"].select(range(4))):
        second = tokenizer(example["text_pair"], add_special_tokens=False)["input_ids"]
        segments = np.asarray(row["token_type_ids"])
        assert segments[0] == 0 and segments[-1] == 1 and (segments == 1).sum() == len(second) + 1  # + its [SEP]
    task.restore(saved)
    pairs = task.examples_from_texts([("great movie", "the day")], saved)
    assert pairs.column_names == ["text", "text_pair"]
    assert "token_type_ids" in task.encode(pairs, tokenizer, 24, with_labels=False).column_names
