"""@champion compares like with like: the same metric on the same test split (real SQLite registry)."""

from __future__ import annotations

from mlflow import MlflowClient

from orchestrator.registry import versions as registry


def _champion(tmp_path, tags: dict) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    client.create_registered_model("m")
    version = client.create_model_version("m", source=str(tmp_path), tags=tags)
    client.set_registered_model_alias("m", "champion", version.version)
    return client


def test_a_champion_scored_on_the_same_split_is_compared_by_its_tag(tmp_path):
    client = _champion(tmp_path, {"test_metric": "test_f1", "test_f1": "0.700000", "test_data": "abc"})
    calls = []
    score = registry.champion_score(client, "m", "test_f1", "abc", rescore=lambda v: calls.append(v) or 0.1)
    assert score == 0.7 and calls == []  # read, not re-scored


def test_a_champion_scored_on_another_split_is_rescored_on_the_new_one(tmp_path):
    client = _champion(tmp_path, {"test_metric": "test_f1", "test_f1": "0.900000", "test_data": "old"})
    read = lambda: registry.champion_score(client, "m", "test_f1", "new", rescore=lambda v: 0.6)  # noqa: E731
    alias, previous, note = registry.choose_alias(0.8, read)
    # Its tag says 0.9 (another split), which would have kept it; on the new split it scores 0.6.
    assert (alias, previous, note) == ("champion", 0.6, None)


def test_without_a_way_to_rescore_the_new_version_is_challenger_and_says_why(tmp_path):
    client = _champion(tmp_path, {"test_metric": "test_macro_f1", "test_macro_f1": "0.1", "test_data": "old"})
    alias, previous, note = registry.choose_alias(0.99, lambda: registry.champion_score(client, "m", "test_f1", "new"))
    assert alias == "challenger" and previous is None
    assert "test_macro_f1 on test split old" in note and "test_f1 on new" in note


def test_a_champion_registered_before_tasks_is_read_as_test_macro_f1(tmp_path):
    client = _champion(tmp_path, {"test_macro_f1": "0.5"})  # no test_metric / test_data tags
    assert registry.champion_score(client, "m") == 0.5
    assert registry.choose_alias(0.4, lambda: registry.champion_score(client, "m"))[0] == "challenger"


def test_rescoring_loads_the_registered_champion_and_scores_it_on_the_new_split(registered_model, data_dir,
                                                                                 monkeypatch):
    import mlflow

    from orchestrator.search.wrap_up import _rescorer
    from orchestrator.config import DataConfig
    from orchestrator.data import load_splits
    from orchestrator.serving.predict import Classifier

    uri, checkpoint = registered_model
    # As the search's Tracker does; restored after, since another test may have set its own store in-process.
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", uri)
    monkeypatch.setattr(mlflow.tracking._model_registry.utils, "_registry_uri", uri)
    client = MlflowClient(uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("tiny-clf", "champion")
    splits = load_splits(DataConfig(train=str(data_dir / "train.csv"), test=str(data_dir / "test.csv")))
    score = _rescorer(splits, "test_macro_f1")(champion)
    expected = Classifier(checkpoint).evaluate(splits.data["test"], "test")[0].metrics["test_macro_f1"]
    assert score == expected and 0 <= score <= 1

    import pytest
    from conftest import make_rows, write_csv

    two = write_csv(data_dir / "two.csv", make_rows(60, seed=8, labels=("positive", "negative")))
    other = load_splits(DataConfig(train=str(two)))
    with pytest.raises(registry.ScoreUnreadable, match="cannot be compared"):
        _rescorer(other, "test_macro_f1")(champion)  # another label set: no comparison
