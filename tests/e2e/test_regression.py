"""A regression search of sentence pairs end to end: a slice of STS-B captions (../shared) on a tiny
BERT built here, through search, registry, predict, status and report."""

from __future__ import annotations

import csv
import json

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.cli import main

from . import SHARED

STSB = SHARED / "stsb_captions"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (STSB / "train.csv").exists(), reason=f"{STSB} not present (CI has ../shared)")]
ROWS = {"train": 60, "validation": 30, "test": 30}  # a slice: the test checks the plumbing, not the score


@pytest.fixture
def pair_model(tmp_path_factory):
    """A tiny BERT whose WordPiece vocabulary is trained on the captions, with segment ids for pairs."""
    from conftest import train_tiny_bert

    with open(STSB / "train.csv", encoding="utf-8") as f:
        corpus = [text for row in csv.DictReader(f) for text in (row["sentence1"], row["sentence2"])]
    return train_tiny_bert(corpus, tmp_path_factory.mktemp("tiny-pair-bert"), 400, segments=True)


def test_regression_of_pairs_searches_registers_and_predicts_numbers(tmp_path, monkeypatch, pair_model, store):
    monkeypatch.chdir(tmp_path)
    for split, n in ROWS.items():
        with open(STSB / f"{split}.csv", encoding="utf-8") as f, open(tmp_path / f"{split}.csv", "w", newline="",
                                                                     encoding="utf-8") as out:
            rows = list(csv.DictReader(f))[:n]
            writer = csv.DictWriter(out, ["sentence1", "sentence2", "score"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    cfg = {
        "name": "sts", "task": "regression",
        "data": {**{s: str(tmp_path / f"{s}.csv") for s in ROWS}, "text_column": "sentence1",
                 "text_pair_column": "sentence2", "label_column": "score"},
        "model": {"name_or_path": str(pair_model)},
        "training": {"epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "max_length": 48, "head": "mean"},
        "space": {"learning_rate": {"low": 1e-3, "high": 5e-3, "log": True}},
        "search": {"n_trials": 2, "pruner": "none"},
        "registry": {"model_name": "sts-reg", "export": False},
    }
    (tmp_path / "sts.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["search", "--config", "sts.yaml"]) == 0

    study = optuna.load_study(study_name="sts", storage="sqlite:///mlruns/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # val_pearson
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("sts-reg", "champion")
    assert champion.tags["test_metric"] == "test_pearson"
    run = client.get_run(champion.run_id)
    metrics = run.data.metrics
    assert {"test_pearson", "test_spearman", "test_rmse", "test_loss", "val_pearson", "val_rmse"} <= set(metrics)
    assert metrics["test_pearson_ci_low"] <= metrics["test_pearson"] <= metrics["test_pearson_ci_high"]
    assert metrics["test_rmse_ci_low"] <= metrics["test_rmse"] <= metrics["test_rmse_ci_high"]
    assert not any(k.startswith("test_spearman_ci") for k in metrics)  # no per-row form
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"predicted_vs_true_test.png", "largest_errors_test.json", "predicted_vs_true_validation.png"} <= files
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert {"baseline_test_pearson", "baseline_val_rmse", "champion_test_pearson"} <= set(parent.data.metrics)
    # The registered model reads its outputs with the target scale its trial trained at: it scores
    # validation as the trial did.
    import mlflow

    from orchestrator.tasks import get_task, load_experiment

    experiment = load_experiment("sts.yaml")
    splits = get_task("regression", experiment).load_splits(experiment.data)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    classifier = mlflow.pyfunc.load_model(f"models:/sts-reg/{champion.version}").unwrap_python_model().classifier
    assert classifier.saved["target"]["standardized"] is True and classifier.input_columns == ("text", "text_pair")
    again, _ = classifier.evaluate(splits.data["validation"], "val")
    assert again.metrics["val_pearson"] == pytest.approx(study.best_value, abs=1e-4)

    lines = [{"text": "A man is playing a guitar.", "text_pair": "A man plays the guitar."},
             {"text": "A dog runs on the grass.", "text_pair": "A woman is slicing an onion."},
             {"text": "A cat sleeps.", "text_pair": None}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert main(["predict", "--model", "models:/sts-reg@champion", "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "out.jsonl"), "--tracking-uri", uri]) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [isinstance(r["predicted_value"], float) for r in out] == [True, True, False]
    assert out[2]["predicted_value"] is None  # a pair without its second text is not predicted
    scores = [float(r["score"]) for split in ROWS for r in csv.DictReader(open(tmp_path / f"{split}.csv"))]
    assert all(min(scores) - 3 < r["predicted_value"] < max(scores) + 3 for r in out[:2])  # in the target's units

    assert main(["status", "--config", "sts.yaml"]) == 0
    assert main(["report", "--config", "sts.yaml", "--output", str(tmp_path / "report.html")]) == 0
    assert "test_pearson" in (tmp_path / "report.html").read_text(encoding="utf-8")
