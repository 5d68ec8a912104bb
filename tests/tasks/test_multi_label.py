"""multi_label: reading label sets, iterative stratification, thresholds, scores, loss weights, baseline."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

from orchestrator.config.schema import DataConfig, ExperimentConfig, PostprocessConfig
from orchestrator.data.read import DataError
from orchestrator.data.splits import Splits
from orchestrator.tasks import get_task
from orchestrator.tasks.multi_label.task import MultiLabel, label_set

NAMES = ["a", "b", "c"]
WORDS = {"joy": "happy glad smile".split(), "anger": "angry mad furious".split(), "fear": "scared afraid panic".split()}
FILLER = "the a this it was is day and but very".split()


def examples(label_ids: list[list[int]], names=NAMES, texts=None) -> Dataset:
    features = Features({"text": Value("string"), "labels": Sequence(ClassLabel(names=names))})
    texts = texts or [f"text {i}" for i in range(len(label_ids))]
    return Dataset.from_dict({"text": texts, "labels": label_ids}, features=features)


def splits_of(train, validation, test, names=NAMES) -> Splits:
    data = DatasetDict({s: examples(ids, names, texts) for s, (ids, texts) in
                        {"train": train, "validation": validation, "test": test}.items()})
    return Splits(data, names, {})


def rows(n: int, seed: int, rare_every: int | None = None) -> list[dict]:
    """Texts whose emotions are learnable from their words; `rare_every`-th rows also get `grief`."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        labels = rng.sample(sorted(WORDS), rng.choice([1, 1, 2]))
        words = [w for name in labels for w in rng.choices(WORDS[name], k=2)] + rng.choices(FILLER, k=4)
        if rare_every and i % rare_every == 0:
            labels.append("grief")
            words.append("mourning")
        rng.shuffle(words)
        out.append({"text": " ".join(words), "labels": sorted(labels)})
    return out


def write_csv(path: Path, data: list[dict], sep: str = ";") -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "labels"])
        for r in data:
            w.writerow([r["text"], sep.join(r["labels"]) if isinstance(r["labels"], list) else r["labels"]])
    return str(path)


def write_jsonl(path: Path, data: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------- scores


def hand_case():
    # truth            preds            per label (tp fp fn)       per example (tp fp fn)
    # e0  a . c        a . .            a: 2 0 0 -> F1 1           e0: 1 0 1 -> 2/3
    # e1  . b .        . b c            b: 1 0 1 -> F1 2/3         e1: 1 1 0 -> 2/3
    # e2  a b .        a . .            c: 1 1 1 -> F1 1/2         e2: 1 0 1 -> 2/3
    # e3  . . c        . . c                                       e3: 1 0 0 -> 1
    # micro: tp 4, fp 1, fn 2 -> 8/11; macro (1 + 2/3 + 1/2)/3 = 13/18; samples (3 * 2/3 + 1)/4 = 3/4;
    # exact match: e3 only -> 1/4.
    truth = [[0, 2], [1], [0, 1], [2]]
    preds = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]], dtype=bool)
    probs = np.where(preds, 0.9, 0.1)
    return truth, preds, probs


def test_scores_by_hand():
    truth, preds, probs = hand_case()
    result = MultiLabel(None).evaluate(probs, examples(truth), NAMES, "val", post={"thresholds": [0.5] * 3})
    m = result.metrics
    assert m["val_micro_f1"] == pytest.approx(8 / 11)
    assert m["val_macro_f1"] == pytest.approx(13 / 18)
    assert m["val_samples_f1"] == pytest.approx(3 / 4)
    assert m["val_exact_match"] == pytest.approx(1 / 4)
    # 9 cells right at p=0.9 (or 0.1 when absent), 3 wrong: mean BCE.
    assert m["val_loss"] == pytest.approx((9 * -math.log(0.9) + 3 * -math.log(0.1)) / 12)
    assert m["val_precision_c"] == pytest.approx(0.5) and m["val_recall_b"] == pytest.approx(0.5)
    assert m["val_f1_a"] == pytest.approx(1.0) and m["val_f1_b"] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(result.predictions, preds)
    assert all(isinstance(v, float) for v in m.values())
    assert list(m) == MultiLabel(None).metric_names(NAMES, "val")


def tuning_case():
    # Label a is separable but low-scored: at 0.5 nothing is predicted (F1 0); a tuned cut between
    # the negatives' 0.2 and the positives' 0.3 gets F1 1. Label b is fine at 0.5 and stays near it.
    truth = [[0, 1], [0], [1], [], [1], []]
    probs = np.array([[0.3, 0.8], [0.35, 0.2], [0.1, 0.9], [0.2, 0.1], [0.15, 0.7], [0.05, 0.3]])
    # Three copies: six rows are too few to show a label's scores separate it (thresholds.ALPHA).
    return truth * 3, np.tile(probs, (3, 1))


def test_thresholds_are_tuned_on_validation_and_beat_half():
    truth, probs = tuning_case()
    task = MultiLabel(None)  # no config: the task default, tune
    fixed = task.evaluate(probs, examples(truth, ["a", "b"]), ["a", "b"], "val", post={"thresholds": [0.5, 0.5]})
    tuned = task.evaluate(probs, examples(truth, ["a", "b"]), ["a", "b"], "val")
    cut_a, cut_b = tuned.post["thresholds"]
    assert 0.2 < cut_a <= 0.3 and 0.3 < cut_b <= 0.7
    assert fixed.metrics["val_f1_a"] == 0.0 and tuned.metrics["val_f1_a"] == 1.0
    assert tuned.metrics["val_macro_f1"] > fixed.metrics["val_macro_f1"]
    np.testing.assert_array_equal(tuned.predictions, probs >= np.array([cut_a, cut_b]))


def test_given_post_is_applied_not_refitted():
    truth, probs = tuning_case()
    post = {"thresholds": [0.9, 0.05]}
    result = MultiLabel(None).evaluate(probs, examples(truth, ["a", "b"]), ["a", "b"], "test", post=post)
    assert result.post == post
    assert not result.predictions[:, 0].any() and result.predictions[:, 1].all()
    assert result.metrics["test_recall_a"] == 0.0 and result.metrics["test_recall_b"] == 1.0


def test_threshold_none_keeps_half_and_objective_needs_target():
    truth, probs = tuning_case()
    task = MultiLabel(ExperimentConfig(task="multi_label", postprocess=PostprocessConfig(threshold="none")))
    assert task.evaluate(probs, examples(truth, ["a", "b"]), ["a", "b"], "val").post == {"thresholds": [0.5, 0.5]}
    cfg = ExperimentConfig(task="multi_label", postprocess=PostprocessConfig(objective="precision"))
    problems = MultiLabel(cfg).config_problems(cfg)
    assert len(problems) == 1 and "postprocess.target" in problems[0]
    ok = ExperimentConfig(task="multi_label", postprocess=PostprocessConfig(objective="precision", target=0.8))
    assert MultiLabel(ok).config_problems(ok) == []


def test_metric_names_and_problems():
    task = get_task("multi_label")
    assert isinstance(task, MultiLabel)
    assert task.metric_problem("val_macro_f1", "maximize") is None
    assert task.metric_problem("val_f1_grief", "maximize") is None
    assert "minimize" in task.metric_problem("val_loss", "maximize")
    assert "val_samples_f1" in task.metric_problem("val_accuracy", "maximize")
    assert "val_f1_x" in task.metric_problem("val_f1_x", "maximize", ["a", "b"])


# ---------------------------------------------------------------------------- reading


def test_csv_with_separator_and_jsonl_with_lists_give_the_same_examples(tmp_path):
    train, test = rows(60, seed=1), rows(20, seed=2)
    from_csv = DataConfig(train=write_csv(tmp_path / "train.csv", train), test=write_csv(tmp_path / "test.csv", test),
                          label_column="labels", label_separator=";")
    from_jsonl = DataConfig(train=write_jsonl(tmp_path / "train.jsonl", train),
                            test=write_jsonl(tmp_path / "test.jsonl", test), label_column="labels")
    a, b = MultiLabel(None).load_splits(from_csv), MultiLabel(None).load_splits(from_jsonl)
    assert a.label_names == b.label_names == ["anger", "fear", "joy"]
    for split in ("train", "validation", "test"):
        assert a.data[split].to_dict() == b.data[split].to_dict()
    assert len(a.data["test"]) == 20 and len(a.data["train"]) + len(a.data["validation"]) == 60
    assert a.record["settings"]["label_separator"] == ";" and a.record["settings"]["task"] == "multi_label"
    row = train[0]
    names = [a.label_names[i] for i in a.data["test"]["labels"][0]]
    assert names == test[0]["labels"] and row["labels"] == sorted(row["labels"])


def test_label_cells():
    assert label_set(" a ; b;;a ", ";") == ["a", "b"]
    assert label_set(["x", " y "], None) == ["x", "y"]
    assert label_set([], ";") == []
    assert label_set(None, ";") is None and label_set("  ", ";") is None
    assert label_set('["a", "b"]', None) == ["a", "b"]
    assert label_set("a", None) == ["a"]


def test_empty_list_is_an_example_missing_cell_is_dropped(tmp_path):
    data = rows(40, seed=3)
    data[0]["labels"] = []
    data[1]["labels"] = None
    cfg = DataConfig(train=write_jsonl(tmp_path / "train.jsonl", data), label_column="labels")
    splits = MultiLabel(None).load_splits(cfg)
    every = [ids for s in ("train", "validation", "test") for ids in splits.data[s]["labels"]]
    assert len(every) == 39 and [] in every


def test_missing_separator_names_the_key(tmp_path):
    cfg = DataConfig(train=write_csv(tmp_path / "train.csv", rows(30, seed=4)), label_column="labels")
    with pytest.raises(DataError, match=r"data\.label_separator: ';'") as e:
        MultiLabel(None).load_splits(cfg)
    assert "train.csv" in str(e.value)


def test_unseen_label_in_test_names_the_file(tmp_path):
    test = rows(20, seed=6)
    test[3]["labels"] = ["joy", "boredom"]
    cfg = DataConfig(train=write_csv(tmp_path / "train.csv", rows(40, seed=5)),
                     test=write_csv(tmp_path / "test.csv", test), label_column="labels", label_separator=";")
    with pytest.raises(DataError, match="boredom") as e:
        MultiLabel(None).load_splits(cfg)
    assert "test.csv" in str(e.value) and "training split" in str(e.value)


def test_a_single_label_in_train_is_refused(tmp_path):
    data = [{"text": f"t {i}", "labels": ["joy"]} for i in range(10)]
    cfg = DataConfig(train=write_jsonl(tmp_path / "train.jsonl", data), label_column="labels")
    with pytest.raises(DataError, match="at least two"):
        MultiLabel(None).load_splits(cfg)


def test_iterative_stratification_spreads_a_rare_label(tmp_path):
    data = rows(200, seed=7, rare_every=34)  # grief on 6 of 200 rows
    assert sum("grief" in r["labels"] for r in data) == 6
    task = MultiLabel(None)
    # A random split of these sizes reaches all three splits with grief for about 1 seed in 3.
    for seed in range(5):
        cfg = DataConfig(train=write_jsonl(tmp_path / "train.jsonl", data), label_column="labels", seed=seed)
        splits = task.load_splits(cfg)
        counts = {s: task.label_counts(splits, s)["grief"] for s in ("train", "validation", "test")}
        assert all(c >= 1 for c in counts.values()) and sum(counts.values()) == 6, (seed, counts)
        sizes = {s: len(splits.data[s]) for s in splits.data}
        assert sizes == {"train": 136, "validation": 24, "test": 40}  # ceil(0.2 * 200), ceil(0.15 * 160)
    capped = task.load_splits(DataConfig(train=cfg.train, label_column="labels", seed=3, max_train_rows=50))
    assert len(capped.data["train"]) == 50 and task.label_counts(capped, "train")["grief"] >= 1
    assert task.label_counts(capped, "train", np.array([0, 1])) == task.label_counts(
        Splits(DatasetDict({"train": capped.data["train"].select([0, 1])}), capped.label_names), "train")


# ---------------------------------------------------------------------------- loss, encoding, outputs


def test_loss_weights_are_negatives_over_positives():
    # 4 training rows: a on 2 (2/2 = 1), b on 3 (1/3), c on 1 (3/1).
    splits = splits_of(([[0], [0, 1], [1], [1, 2]], None), ([[0]], None), ([[1]], None))
    task = MultiLabel(None)
    weights = task.loss_weights(splits, SimpleNamespace(imbalance="class_weights"))
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, torch.tensor([1.0, 1 / 3, 3.0]))
    assert task.loss_weights(splits, SimpleNamespace(imbalance="none")) is None
    logits, labels = torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[1.0, 0.0, 1.0]])
    by_hand = -(1.0 * math.log(torch.sigmoid(torch.tensor(2.0))) + math.log(1 - torch.sigmoid(torch.tensor(-1.0)))
                + 3.0 * math.log(torch.sigmoid(torch.tensor(0.5)))) / 3
    assert task.loss(logits, labels, weights).item() == pytest.approx(by_hand, rel=1e-5)
    assert task.dummy_labels(2, 7, 3, "cpu").shape == (2, 3)


def test_encode_and_collate_multi_hot(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    task = MultiLabel(None)
    ex = examples([[0, 2], [], [1]], texts=["great day", "awful", "okay fine normal plain"])
    encoded = task.encode(ex, tokenizer, max_length=4)
    assert encoded[0]["labels"] == [1.0, 0.0, 1.0] and encoded[1]["labels"] == [0.0, 0.0, 0.0]
    assert max(len(r) for r in encoded["input_ids"]) <= 4 and "text" not in encoded.column_names
    batch = task.collator(tokenizer)([encoded[i] for i in range(3)])
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (3, 3)
    assert batch["input_ids"].shape[0] == 3
    raw = task.encode(task.examples_from_texts(["great", "sad day"], {}), tokenizer, max_length=8, with_labels=False)
    assert "labels" not in raw.column_names and len(raw) == 2


def test_gather_output_frame_and_artifacts():
    task = MultiLabel(None)
    probs = task.gather(np.array([[0.0, 2.0, -2.0]], dtype=np.float32), None)
    np.testing.assert_allclose(probs, [[0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))]], rtol=1e-6)
    frame = task.output_frame(np.array([[0.9, 0.1, 0.6], [0.2, 0.3, 0.1]]), ["x", "y"], NAMES,
                              {"thresholds": [0.5, 0.5, 0.7]}, {})
    assert frame["labels"].tolist() == [["a"], []]
    assert list(frame.columns) == ["labels", "prob_a", "prob_b", "prob_c"] and frame["prob_c"][0] == 0.6

    truth, preds, probs = hand_case()
    probs = probs.copy()
    probs[1, 2] = 0.99  # e1's extra c: the most confident mistake
    ex = examples(truth)
    result = task.evaluate(probs, ex, NAMES, "test", post={"thresholds": [0.5] * 3})
    per_label, errors = (a.value for a in task.artifacts(result, probs, ex, NAMES, "test"))
    assert per_label["support"].tolist() == [2, 2, 2] and per_label["f1"].tolist() == pytest.approx([1, 2 / 3, 0.5])
    assert per_label["threshold"].tolist() == [0.5] * 3
    assert errors["text"].tolist()[0] == "text 1" and set(errors["text"]) == {"text 0", "text 1", "text 2"}
    first = errors.iloc[0]
    assert first["extra"] == ["c"] and first["missed"] == [] and first["predicted_labels"] == ["b", "c"]


def test_baseline_runs_and_survives_a_label_without_training_positives():
    train = rows(80, seed=8)
    val, test = rows(30, seed=9), rows(30, seed=10)
    names = ["anger", "fear", "grief", "joy"]  # grief: never on a training row, once in validation and test

    def part(data, grief_row=None):
        ids = [[names.index(n) for n in r["labels"]] for r in data]
        if grief_row is not None:
            ids[grief_row] = ids[grief_row] + [2]
        return ids, [r["text"] for r in data]

    splits = splits_of(part(train), part(val, 0), part(test, 0), names)
    scores = MultiLabel(None).baseline(splits, seed=0)
    assert set(scores) == {"baseline_val_macro_f1", "baseline_test_macro_f1", "baseline_val_micro_f1",
                           "baseline_test_micro_f1"}
    assert all(math.isfinite(v) and 0 <= v <= 1 for v in scores.values())
    assert scores["baseline_test_micro_f1"] > 0.8  # the words give the emotions away
