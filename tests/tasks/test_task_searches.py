"""Whole searches for the tasks beyond single_label, on tiny models built here (fast; no ../shared):
the same `search` and `predict` commands, a registered champion, the task's output."""

from __future__ import annotations

import json
import random

import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.cli import main

pytestmark = pytest.mark.slow  # whole searches, one per task


def _search(tmp_path, cfg: dict) -> MlflowClient:
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["search", "--config", str(tmp_path / "exp.yaml")]) == 0
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    return MlflowClient(uri, registry_uri=uri)


def _predict(tmp_path, model: str, lines: list[str]) -> list[dict]:
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in lines))
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert main(["predict", "--model", f"models:/{model}@champion", "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "out.jsonl"), "--tracking-uri", uri]) == 0
    return [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]


def test_token_classification_search_registers_a_champion_whose_spans_point_into_the_text(
        tmp_path, monkeypatch, tiny_zh_model, ner_dir, store):
    monkeypatch.chdir(tmp_path)
    client = _search(tmp_path, {
        "name": "ner", "task": "token_classification",
        "data": {split: str(ner_dir / f"{split}.jsonl") for split in ("train", "validation", "test")},
        "model": {"name_or_path": str(tiny_zh_model)},
        "training": {"epochs": 2, "batch_size": 8, "learning_rate": 5e-3, "max_length": 16, "window_overlap": 4},
        "space": {"learning_rate": {"low": 3e-3, "high": 8e-3, "log": True}},
        "search": {"n_trials": 2, "pruner": "none"},
        "registry": {"model_name": "ner-tagger"},
    })
    champion = client.get_model_version_by_alias("ner-tagger", "champion")
    assert champion.tags["test_metric"] == "test_f1"
    run = client.get_run(champion.run_id)
    assert {"test_f1", "test_precision", "test_recall", "test_f1_PER", "test_f1_LOC"} <= set(run.data.metrics)
    assert run.data.params["head"] == "linear"  # the task's default head
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert "baseline_test_f1" in parent.data.metrics  # the CRF

    # Sentences longer than max_length (16 subwords) go through windows, not truncation.
    texts = ["我们今天去了北京和张三吃饭很好", "张三" + "我们今天去了吃饭很好的是在和说他她也都要会看" * 2 + "上海"]
    rows = _predict(tmp_path, "ner-tagger", texts)
    assert len(rows) == 2
    for text, row in zip(texts, rows):
        for span in row["predicted_spans"]:
            assert text[span["start"]:span["end"]] == span["text"] and span["label"] in ("PER", "LOC")


def test_multi_label_search_registers_a_champion_that_predicts_label_sets(tmp_path, monkeypatch, tiny_model, store):
    from conftest import FILLER, WORDS

    monkeypatch.chdir(tmp_path)
    rng = random.Random(5)

    def rows(n):
        out = []
        for _ in range(n):
            labels = sorted(rng.sample(list(WORDS), rng.choice([1, 1, 2])))
            words = [w for label in labels for w in rng.choices(WORDS[label], k=2)] + rng.choices(FILLER, k=4)
            rng.shuffle(words)
            out.append({"text": " ".join(words), "tags": labels})
        return out

    for split, n in (("train", 120), ("validation", 40), ("test", 40)):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(n)))
    client = _search(tmp_path, {
        "name": "multi", "task": "multi_label",
        "data": {**{s: str(tmp_path / f"{s}.jsonl") for s in ("train", "validation", "test")},
                 "label_column": "tags"},
        "model": {"name_or_path": str(tiny_model)},
        "training": {"epochs": 3, "batch_size": 16, "learning_rate": 3e-3, "head": "mean"},
        "space": {"learning_rate": {"low": 2e-3, "high": 5e-3, "log": True}},
        "search": {"n_trials": 2, "pruner": "none"},
        "registry": {"model_name": "multi-clf"},
    })
    champion = client.get_model_version_by_alias("multi-clf", "champion")
    run = client.get_run(champion.run_id)
    assert champion.tags["test_metric"] == "test_macro_f1"
    assert float(champion.tags["test_macro_f1"]) == pytest.approx(run.data.metrics["test_macro_f1"], abs=1e-6)
    assert {"test_micro_f1", "test_samples_f1", "test_f1_positive"} <= set(run.data.metrics)
    out = _predict(tmp_path, "multi-clf", ["great excellent awful terrible the movie", "okay plain a day"])
    for row in out:
        assert set(row["predicted_labels"]) <= set(WORDS)
        assert {k for k in row if k.startswith("prob_")} == {f"prob_{n}" for n in WORDS}
