"""Sentence pairs (`data.text_pair_column`): reading, encoding as (text, text_pair), the pair
baseline's features, the config's rules, and the prediction rule for a row missing one side."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestrator.config import ConfigError
from orchestrator.data import DataError
from orchestrator.data.missing_rows import predict_rows
from orchestrator.tasks import experiment_from_dict, get_task
from orchestrator.tasks import text_pairs


ROWS = [("a man sleeps on a bench", "a man is sleeping", "entailment"),
        ("a man sleeps on a bench", "a dog barks at a cat", "contradiction"),
        ("two kids play football", "kids are playing", "entailment"),
        ("two kids play football", "a woman cooks dinner", "contradiction")] * 6


def _pairs(path, rows=ROWS):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["premise", "hypothesis", "label"]).to_csv(path, index=False)
    return path


def _cfg(tmp_path, **data):
    train = _pairs(tmp_path / "train.csv")
    return experiment_from_dict({"name": "nli", "data": {"train": str(train), "text_column": "premise",
                                                         "text_pair_column": "hypothesis", **data}})


def test_pairs_are_read_into_text_and_text_pair_and_keep_their_column_in_the_fingerprint(tmp_path):
    cfg = _cfg(tmp_path)
    task = get_task("single_label", cfg)
    splits = task.load_splits(cfg.data)
    assert splits.data["train"].column_names == ["text", "text_pair", "label"]
    row = splits.data["test"][0]
    assert (row["text"], row["text_pair"]) in {(a, b) for a, b, _ in ROWS}
    assert splits.record["settings"]["text_pair_column"] == "hypothesis"
    assert task.saved_settings(splits) == {"text_pair": True, "truncation": "longest_first"}
    assert task.input_columns(task.saved_settings(splits)) == ("text", "text_pair")
    single = experiment_from_dict({"name": "x", "data": {"train": cfg.data.train, "text_column": "premise"}})
    alone = get_task("single_label", single).load_splits(single.data)
    assert alone.data["train"].column_names == ["text", "label"] and "text_pair_column" not in alone.record["settings"]
    assert alone.digest != splits.digest


def test_the_second_text_gets_segment_one_and_the_longer_side_is_cut(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]  # as BERT's own tokenizer
    task = get_task("single_label", _cfg(tmp_path))
    examples = text_pairs.examples([("good great", "bad awful terrible")], {"text_pair": True})
    enc = task.encode(examples, tokenizer, 64, with_labels=False)[0]
    sep = tokenizer.sep_token_id
    first_sep = enc["input_ids"].index(sep)
    assert set(enc["token_type_ids"][:first_sep + 1]) == {0} and set(enc["token_type_ids"][first_sep + 1:]) == {1}
    long = text_pairs.examples([("good " * 40, "bad awful")], {"text_pair": True})
    cut = task.encode(long, tokenizer, 16, with_labels=False)[0]
    assert len(cut["input_ids"]) == 16 and cut["input_ids"].count(sep) == 2  # both texts kept, the long one cut
    assert cut["input_ids"][-3:-1] == tokenizer("bad awful", add_special_tokens=False)["input_ids"]


def test_a_row_missing_either_text_is_dropped_and_an_empty_pair_column_is_refused(tmp_path):
    rows = ROWS + [("a lone premise", "", "neutral")]
    _pairs(tmp_path / "train.csv", rows)
    cfg = experiment_from_dict({"name": "nli", "data": {"train": str(tmp_path / "train.csv"), "text_column": "premise",
                                                        "text_pair_column": "hypothesis"}})
    splits = get_task("single_label", cfg).load_splits(cfg.data)
    assert sum(len(splits.data[s]) for s in splits.data) == len(ROWS)
    _pairs(tmp_path / "empty.csv", [(a, "", y) for a, _, y in ROWS])
    empty = experiment_from_dict({"name": "nli", "data": {"train": str(tmp_path / "empty.csv"), "text_column": "premise",
                                                          "text_pair_column": "hypothesis"}})
    with pytest.raises(DataError, match=r"empty.csv: column 'hypothesis' \(data.text_pair_column\) is empty in all"):
        get_task("single_label", empty).load_splits(empty.data)
    absent = experiment_from_dict({"name": "nli", "data": {"train": str(tmp_path / "train.csv"), "text_column": "premise",
                                                           "text_pair_column": "sentence2"}})
    with pytest.raises(DataError, match=r"column\(s\) \['sentence2'\] not found"):
        get_task("single_label", absent).load_splits(absent.data)


def test_pair_settings_are_refused_where_they_cannot_work(tmp_path):
    base = {"name": "x", "data": {"train": "t.csv", "text_pair_column": "b"}}
    with pytest.raises(ConfigError, match="data.text_pair_column: 'b' makes each example a pair of texts, which only"):
        experiment_from_dict({**base, "task": "multi_label"})
    with pytest.raises(ConfigError, match="data.text_pair_column and data.text_column are both 'text'"):
        experiment_from_dict({"name": "x", "data": {"train": "t.csv", "text_pair_column": "text"}})
    with pytest.raises(ConfigError, match="training.truncation"):
        experiment_from_dict({**base, "training": {"truncation": "middle"}})


def test_the_pair_baseline_sees_overlap_and_beats_one_side_alone():
    # Entailment here is only visible in the overlap: each side alone has the same words in both classes.
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    pairs, labels = [], []
    for _ in range(300):
        a = list(rng.choice(words, 6, replace=False))
        same = rng.random() < 0.5
        b = a[:4] if same else list(rng.choice([w for w in words if w not in a], 4, replace=False))
        pairs.append((" ".join(a), " ".join(b)))
        labels.append(int(same))
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(text_pairs.features(pairs[:200]), LogisticRegression(max_iter=2000))
    pipe.fit(pairs[:200], labels[:200])
    assert pipe.score(pairs[200:], labels[200:]) > 0.95
    side = make_pipeline(text_pairs.features([b for _, b in pairs[:200]]), LogisticRegression(max_iter=2000))
    side.fit([b for _, b in pairs[:200]], labels[:200])
    assert side.score([b for _, b in pairs[200:]], labels[200:]) < 0.8


def test_a_row_missing_either_input_gets_no_prediction():
    seen = []

    def predict(rows):
        seen.extend(rows)
        return pd.DataFrame({"label": ["x"] * len(rows), "prob_x": [1.0] * len(rows)})

    out = predict_rows({"text": ["a", None, "c", "d"], "text_pair": ["b", "b", "  ", "e"]}, predict)
    assert seen == [("a", "b"), ("d", "e")]
    assert out["label"].tolist() == ["x", None, None, "x"] and np.isnan(out["prob_x"][1])
    with pytest.raises(DataError, match="column 'text_pair'"):
        predict_rows({"text": ["a"], "text_pair": [["b"]]}, predict)


def test_only_first_cuts_the_first_text_and_a_pair_it_cannot_cut_so_is_cut_longest_first(tiny_model):
    """Was: one pair whose second text alone filled the window failed the whole batch (training
    after the study existed, and every row of a prediction) with the tokenizer's truncation error."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    batch = {"text": ["good " * 30, "good great"], "text_pair": ["bad", "bad " * 40]}
    enc = text_pairs.encode_texts(tokenizer, batch, 16, "only_first")
    bad = tokenizer("bad", add_special_tokens=False)["input_ids"]
    assert len(enc["input_ids"][0]) == 16 and enc["input_ids"][0][-1 - len(bad):-1] == bad  # only the first cut
    assert len(enc["input_ids"][1]) == 16  # the second alone fills the window: both cut, longest first
    assert enc["input_ids"][1] == tokenizer("good great", "bad " * 40, truncation="longest_first",
                                            max_length=16)["input_ids"]
    with pytest.raises(ConfigError, match="space.truncation"):
        experiment_from_dict({"name": "x", "data": {"train": "t.csv", "text_pair_column": "b"},
                              "space": {"truncation": {"choices": ["only_first", "longest_first"]}}})
    with pytest.raises(ConfigError, match="training.truncation: only_second says which text of a pair is cut"):
        experiment_from_dict({"name": "x", "data": {"train": "t.csv"}, "training": {"truncation": "only_second"}})
