"""What a run was made from (`tracking/lineage.py`), read back from a real SQLite MLflow store."""

from __future__ import annotations

from mlflow import MlflowClient

from orchestrator.tracking import lineage
from orchestrator.tracking.study_runs import StudyRuns

DATA = [{"split": "train", "digest": "aaa", "source": "/data/train.csv", "rows": 120},
        {"split": "validation", "digest": "bbb", "source": "/data/train.csv (carved, seed 42)", "rows": 30},
        {"split": "test", "digest": "ccc", "source": "hub:imdb", "rows": 45}]


def test_splits_are_dataset_inputs_with_their_context_digest_source_and_rows(store):
    client = MlflowClient(store)
    run = client.create_run(client.create_experiment("lineage")).info.run_id
    lineage.log_datasets(client, run, DATA)
    lineage.log_datasets(client, run, DATA)  # a resumed study logs them again: no duplicates
    inputs = client.get_run(run).inputs.dataset_inputs
    assert sorted((d.dataset.name, d.dataset.digest, d.tags[0].value) for d in inputs) == \
        [("test", "ccc", "testing"), ("train", "aaa", "training"), ("validation", "bbb", "validation")]
    read = {d["name"]: d for d in StudyRuns(store).datasets(run)}
    assert read["test"]["source"] == "hub:imdb" and read["train"]["rows"] == 120
    assert read["validation"]["source"] == "/data/train.csv (carved, seed 42)"
    kinds = {d.dataset.name: d.dataset.source_type for d in inputs}
    assert kinds == {"train": "local", "validation": "local", "test": "hugging_face"}


def test_the_code_version_is_this_checkout_or_the_package():
    tags = lineage.code_version()
    if tags["code_version"].startswith("git:"):  # tests run from the repository
        commit = tags["mlflow.source.git.commit"]
        assert len(commit) == 40 and tags["code_version"].removeprefix("git:").startswith(commit)
    else:
        assert tags["code_version"].startswith("orchestrator ")
