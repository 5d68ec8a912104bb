"""Sentence pairs end to end on a slice of SNLI (../shared): a search over (premise, hypothesis)
pairs, the pair baseline, the champion registered with both input columns and its ONNX export,
and `predict` reading both columns from a file, a row missing either side left unpredicted."""

import json

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.cli import main
from conftest import tiny_experiment, train_tiny_bert

from . import SHARED

SNLI = SHARED / "snli"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SNLI.exists(), reason=f"{SNLI} not present")]


def _slice(name: str, rows: int, folder):
    frame = pd.read_csv(SNLI / f"{name}.csv", dtype=str, keep_default_na=False).head(rows)
    frame = frame.rename(columns={"sentence1": "premise", "sentence2": "hypothesis"})
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_a_pair_search_registers_a_two_input_model_that_predicts_pairs(tmp_path, monkeypatch, store):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    _, train = _slice("train", 150, data)
    _slice("validation", 45, data)
    _, test = _slice("test", 45, data)
    model = train_tiny_bert(list(train["premise"]) + list(train["hypothesis"]), tmp_path / "tiny", segments=True)
    path = tiny_experiment(tmp_path / "nli.yaml", model, data, "nli", training={"epochs": 1, "max_length": 48},
                           search={"n_trials": 2, "seed": 0}, registry={"model_name": "nli-clf", "export": True})
    cfg = yaml.safe_load(path.read_text())
    cfg["data"].update(text_column="premise", text_pair_column="hypothesis")
    path.write_text(yaml.safe_dump(cfg))
    assert main(["search", "--config", "nli.yaml"]) == 0

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias("nli-clf", "champion")
    study_run = client.get_run(client.get_run(version.run_id).data.tags["mlflow.parentRunId"])
    assert "baseline_test_macro_f1" in study_run.data.metrics  # the pair baseline
    assert "test_macro_f1_ci_low" in client.get_run(version.run_id).data.metrics
    assert set(version.tags["export_formats"].split()) == {"pytorch", "onnx", "int8"}  # token_type_ids traced too

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    info = mlflow.models.get_model_info(f"models:/nli-clf/{version.version}")
    assert info.signature.inputs.input_names() == ["text", "text_pair"]
    classifier = mlflow.pyfunc.load_model(f"models:/nli-clf/{version.version}").unwrap_python_model().classifier
    assert classifier.saved == {"text_pair": True, "truncation": "longest_first"}

    # A file with its own column names, a row missing its hypothesis and one missing its premise.
    rows = test.head(6).copy()
    rows.loc[1, "hypothesis"] = ""
    rows.loc[2, "premise"] = "   "
    rows.to_csv(tmp_path / "in.csv", index=False)
    assert main(["predict", "--model", "models:/nli-clf@champion", "--input", "in.csv", "--output", "out.jsonl",
                 "--tracking-uri", uri, "--text-column", "premise", "--column", "text_pair=hypothesis"]) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["predicted_label"] is None for r in out] == [False, True, True, False, False, False]
    assert {r["predicted_label"] for r in out if r["predicted_label"]} <= {"contradiction", "entailment", "neutral"}
    # The same pairs straight through the model: the file's columns are only renamed.
    direct = classifier.predict_frame({"text": list(test["premise"][:6]), "text_pair": list(test["hypothesis"][:6])})
    assert out[0]["predicted_label"] == direct["label"][0] and out[3]["prob_neutral"] == pytest.approx(
        direct["prob_neutral"][3], abs=1e-6)
    assert main(["predict", "--model", "models:/nli-clf@champion", "--input", "in.csv", "--output", "onnx.csv",
                 "--tracking-uri", uri, "--text-column", "premise", "--column", "text_pair=hypothesis",
                 "--format", "onnx"]) == 0
    onnx = pd.read_csv(tmp_path / "onnx.csv")
    assert onnx["prob_neutral"][0] == pytest.approx(out[0]["prob_neutral"], abs=1e-4)

    # Without the second column: exit 2, naming what the model takes and the flag.
    assert main(["predict", "--model", "models:/nli-clf@champion", "--input", "in.csv", "--output", "x.csv",
                 "--tracking-uri", uri, "--text-column", "premise"]) == 2
    assert not (tmp_path / "x.csv").exists()


def test_chinese_pairs_on_an_ocnli_slice_train_and_predict_without_a_guess(tmp_path, monkeypatch, store):
    """OCNLI (Chinese, ../shared): a pair of texts written without spaces, read character by
    character; the pair baseline's overlap is then character overlap."""
    ocnli = SHARED / "ocnli"
    if not ocnli.exists():
        pytest.skip(f"{ocnli} not present")
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    frames = {}
    for split, rows in (("train", 90), ("validation", 30), ("test", 30)):
        frames[split] = pd.read_csv(ocnli / f"{split}.csv", dtype=str, keep_default_na=False).head(rows)
        frames[split].to_csv(data / f"{split}.csv", index=False)
    texts = list(frames["train"]["sentence1"]) + list(frames["train"]["sentence2"])
    model = train_tiny_bert(texts, tmp_path / "tiny", segments=True)  # one token per CJK character
    path = tiny_experiment(tmp_path / "ocnli.yaml", model, data, "ocnli", training={"epochs": 1, "max_length": 64},
                           search={"n_trials": 1, "seed": 0})
    cfg = yaml.safe_load(path.read_text())
    cfg["data"].update(text_column="sentence1", text_pair_column="sentence2")
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    assert main(["search", "--config", "ocnli.yaml"]) == 0

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias("ocnli-clf", "champion")
    parent = client.get_run(client.get_run(version.run_id).data.tags["mlflow.parentRunId"])
    assert 0.0 < parent.data.metrics["baseline_test_accuracy"] <= 1.0
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model("models:/ocnli-clf@champion")
    test = frames["test"]
    out = model.predict(pd.DataFrame({"text": [test["sentence1"][0], test["sentence1"][1], None],
                                      "text_pair": [test["sentence2"][0], None, test["sentence2"][2]]}))
    assert out["label"].iloc[0] in {"contradiction", "entailment", "neutral"}
    assert out["label"].iloc[1] is None and out["label"].iloc[2] is None
