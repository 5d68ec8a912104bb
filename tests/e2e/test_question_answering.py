"""question_answering end to end on a slice of SQuAD v1.1 from ../shared: a real search (trials,
MLflow runs, test evaluation with confidence intervals, the lexical baseline, a registered
@champion) on a tiny BERT whose WordPiece vocabulary is learned here from the slice, then answers
through the registered pyfunc. The tiny model learns little: this checks the path, not the score."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.cli import main
from conftest import train_tiny_bert

from . import SHARED

DATA = SHARED / "squad"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} not present (CI and dev machines have ../shared)")]


def _slice(split: str, target: Path, questions: int, folder: Path = DATA) -> dict:
    """The first paragraphs of `split` (in `folder`) holding `questions` questions, as SQuAD JSON in `target`."""
    source = json.loads((folder / f"{split}.json").read_text(encoding="utf-8"))
    kept, n = [], 0
    for article in source["data"]:
        for paragraph in article["paragraphs"]:
            if n >= questions:
                break
            kept.append(paragraph)
            n += len(paragraph["qas"])
    data = {"version": "1.1", "data": [{"title": split, "paragraphs": kept}]}
    target.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return data


def _tiny_reader(data: dict, out: Path) -> Path:
    """A tiny BERT whose vocabulary is every split's words: unknown words in characters would make
    50-token questions."""
    paragraphs = [p for d in data.values() for p in d["data"][0]["paragraphs"]]
    return train_tiny_bert([p["context"] for p in paragraphs] + [q["question"] for p in paragraphs for q in p["qas"]],
                           out, 3000)


def test_question_answering_search_registers_a_champion_that_answers_from_the_context(tmp_path, monkeypatch, store):
    monkeypatch.chdir(tmp_path)
    data = {split: _slice(split, tmp_path / f"{split}.json", n)
            for split, n in (("train", 40), ("validation", 20), ("test", 20))}
    model = _tiny_reader(data, tmp_path / "tiny-bert")
    cfg = {
        "name": "squad-tiny", "task": "question_answering",
        "data": {split: str(tmp_path / f"{split}.json") for split in data},
        "model": {"name_or_path": str(model)},
        # max_length 64 with doc_stride 16: most contexts take several windows.
        "training": {"epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "max_length": 64, "doc_stride": 16,
                     "max_answer_length": 20},
        "space": {"learning_rate": {"low": 1e-3, "high": 5e-3, "log": True}},
        "search": {"n_trials": 1, "pruner": "none"},
        "registry": {"model_name": "squad-reader", "export": False},
    }
    # A window too small for some question beside its context: refused before anything is created.
    small = {**cfg, "training": {**cfg["training"], "max_length": 24, "doc_stride": 8}}
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(small))
    assert main(["search", "--config", "small.yaml"]) == 2
    assert not (tmp_path / "mlruns" / "optuna.db").exists() and not (tmp_path / "mlruns" / "studies").exists()

    (tmp_path / "squad.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["search", "--config", "squad.yaml"]) == 0

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("squad-reader", "champion")
    assert champion.tags["test_metric"] == "test_f1"
    run = client.get_run(champion.run_id)
    metrics = run.data.metrics
    assert {"val_f1", "val_exact_match", "test_f1", "test_exact_match", "test_f1_ci_low", "test_f1_ci_high"} \
        <= set(metrics)
    assert 0.0 <= metrics["test_f1_ci_low"] <= metrics["test_f1"] <= metrics["test_f1_ci_high"] <= 1.0
    assert run.data.params["head"] == "linear"
    assert "qa_errors_test.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert 0.0 < parent.data.metrics["baseline_test_f1"] < 1.0  # the lexical picker finds some answers
    assert "baseline_comparison" in parent.data.tags

    # Through the registered model, as `serve` runs it: a question and its context in, an answer out.
    from orchestrator.registry.lookup import load_pyfunc

    questions = pd.DataFrame({"question": ["What is the capital of France?", None],
                              "context": ["Paris is the capital of France. " * 20, "Some context."]})
    answers = load_pyfunc("models:/squad-reader@champion", uri).predict(questions)
    assert list(answers.columns) == ["answer", "start", "end", "score"]
    first = answers.iloc[0]
    context = questions["context"][0]
    if first["start"] >= 0:
        assert context[int(first["start"]):int(first["end"])] == first["answer"]
    else:
        assert first["answer"] == ""
    assert 0.0 <= first["score"] <= 1.0
    assert answers.iloc[1]["answer"] is None  # a row without its question gets no prediction


def test_chinese_question_answering_on_a_cmrc2018_slice_scores_by_character(tmp_path, monkeypatch, store):
    """CMRC 2018 (Chinese, ../shared): answers are character spans, scored by character (CMRC's
    definition), and the registered model's answers are the context's own characters."""
    cmrc = SHARED / "cmrc2018"
    if not cmrc.exists():
        pytest.skip(f"{cmrc} not present")
    monkeypatch.chdir(tmp_path)
    data = {split: _slice(split, tmp_path / f"{split}.json", n, cmrc)
            for split, n in (("train", 30), ("validation", 10), ("test", 10))}
    model = _tiny_reader(data, tmp_path / "tiny-bert")
    cfg = {
        "name": "cmrc-tiny", "task": "question_answering",
        "data": {split: str(tmp_path / f"{split}.json") for split in data},
        "model": {"name_or_path": str(model)},
        "training": {"epochs": 1, "batch_size": 16, "learning_rate": 3e-3, "max_length": 96, "doc_stride": 32},
        "space": {},
        "search": {"n_trials": 1, "pruner": "none"},
        "registry": {"model_name": "cmrc-reader", "export": False},
    }
    (tmp_path / "cmrc.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    assert main(["search", "--config", "cmrc.yaml"]) == 0

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("cmrc-reader", "champion")
    parent = client.get_run(client.get_run(champion.run_id).data.tags["mlflow.parentRunId"])
    assert 0.0 < parent.data.metrics["baseline_test_f1"] <= 1.0  # character overlap: rarely zero
    from orchestrator.registry.lookup import load_pyfunc

    paragraph = data["test"]["data"][0]["paragraphs"][0]
    answers = load_pyfunc("models:/cmrc-reader@champion", uri).predict(
        pd.DataFrame({"question": [paragraph["qas"][0]["question"]], "context": [paragraph["context"]]}))
    first = answers.iloc[0]
    assert first["answer"] == ("" if first["start"] < 0 else paragraph["context"][int(first["start"]):int(first["end"])])
