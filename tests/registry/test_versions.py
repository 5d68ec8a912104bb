"""@champion compares like with like: the same metric on the same test split, better in the
metric's direction (real SQLite registries, copies of the migrated `store`)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from orchestrator.cli import main
from orchestrator.registry import versions as registry


@pytest.fixture
def client(store) -> MlflowClient:
    """A client of a real store (a copy of the migrated empty one) holding registered model "m"."""
    client = MlflowClient(store, registry_uri=store)
    client.create_registered_model("m")
    return client


def _version(client: MlflowClient, tags: dict, alias: str | None = "champion") -> str:
    """A new version of "m" with `tags` (no model behind it: only its tags are read), given `alias`."""
    version = str(client.create_model_version("m", source="unused", tags=tags).version)
    if alias:
        client.set_registered_model_alias("m", alias, version)
    return version


def test_a_champion_scored_on_the_same_split_is_compared_by_its_tag(client):
    _version(client, {"test_metric": "test_f1", "test_f1": "0.700000", "test_data": "abc"})
    calls = []
    score = registry.champion_score(client, "m", "test_f1", "abc", rescore=lambda v: calls.append(v) or 0.1)
    assert score == 0.7 and calls == []  # read, not re-scored


def test_a_champion_scored_on_another_split_is_rescored_on_the_new_one(client):
    _version(client, {"test_metric": "test_f1", "test_f1": "0.900000", "test_data": "old"})
    read = lambda: registry.champion_score(client, "m", "test_f1", "new", rescore=lambda v: 0.6)  # noqa: E731
    alias, previous, note = registry.choose_alias(0.8, read)
    # Its tag says 0.9 (another split), which would have kept it; on the new split it scores 0.6.
    assert (alias, previous, note) == ("champion", 0.6, None)


def test_without_a_way_to_rescore_the_new_version_is_challenger_and_says_why(client):
    _version(client, {"test_metric": "test_macro_f1", "test_macro_f1": "0.1", "test_data": "old"})
    alias, previous, note = registry.choose_alias(0.99, lambda: registry.champion_score(client, "m", "test_f1", "new"))
    assert alias == "challenger" and previous is None
    assert "test_macro_f1 on test split old" in note and "test_f1 on new" in note


def test_a_champion_registered_before_tasks_is_read_as_test_macro_f1(client):
    _version(client, {"test_macro_f1": "0.5"})  # no test_metric / test_data tags
    assert registry.champion_score(client, "m") == 0.5
    assert registry.choose_alias(0.4, lambda: registry.champion_score(client, "m"))[0] == "challenger"


def test_rescoring_loads_the_registered_champion_and_scores_it_on_the_new_split(registered_model, data_dir,
                                                                                 monkeypatch):
    import mlflow

    from orchestrator.search.wrap_up import _rescorer
    from orchestrator.config import DataConfig
    from orchestrator.data import load_splits
    from orchestrator.tasks.single_label.task import SingleLabel
    from orchestrator.training.saved_model import Classifier

    uri, checkpoint = registered_model
    # As the search's Tracker does; restored after, since another test may have set its own store in-process.
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", uri)
    monkeypatch.setattr(mlflow.tracking._model_registry.utils, "_registry_uri", uri)
    client = MlflowClient(uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("tiny-clf", "champion")
    splits = load_splits(DataConfig(train=str(data_dir / "train.csv"), test=str(data_dir / "test.csv")), SingleLabel())
    score = _rescorer(splits, "test_macro_f1")(champion)
    expected = Classifier(checkpoint).evaluate(splits.data["test"], "test")[0].metrics["test_macro_f1"]
    assert score == expected and 0 <= score <= 1

    import pytest
    from conftest import make_rows, write_csv

    two = write_csv(data_dir / "two.csv", make_rows(60, seed=8, labels=("positive", "negative")))
    other = load_splits(DataConfig(train=str(two)), SingleLabel())
    with pytest.raises(registry.ScoreUnreadable, match="cannot be compared"):
        _rescorer(other, "test_macro_f1")(champion)  # another label set: no comparison


# ---------------------------------------------------------------- the metric's direction

LOSS = {"test_metric": "test_loss", "test_loss": "0.350000", "test_data": "abc"}  # a lower-is-better score


def _read(client: MlflowClient, metric: str = "test_loss", maximize: bool = False, rescore=None):
    return lambda: registry.champion_score(client, "m", metric, "abc", rescore, maximize=maximize)


def test_a_minimised_champion_is_beaten_by_a_lower_score_only(client):
    _version(client, {**LOSS, "score_higher_is_better": "false"})
    assert registry.choose_alias(0.31, _read(client), maximize=False) == ("champion", 0.35, None)
    assert registry.choose_alias(0.40, _read(client), maximize=False) == ("challenger", 0.35, None)
    assert registry.choose_alias(0.35, _read(client), maximize=False)[0] == "challenger"  # a tie keeps it
    assert registry._search_reason("s", "test_loss", 0.31, 0.35, maximize=False) == \
        "study s: test_loss 0.3100 < champion's 0.3500 (lower is better)"


def test_a_champion_without_the_direction_tag_is_read_as_higher_is_better(client):
    _version(client, {"test_metric": "test_f1", "test_f1": "0.500000", "test_data": "abc"})  # registered before it
    read = _read(client, "test_f1", maximize=True)
    assert registry.choose_alias(0.6, read, maximize=True)[:2] == ("champion", 0.5)
    assert registry.choose_alias(0.4, read, maximize=True)[:2] == ("challenger", 0.5)
    # The same metric said to be lower-is-better now: not compared (0.4 would have won that way).
    alias, previous, note = registry.choose_alias(0.4, _read(client, "test_f1", maximize=False), maximize=False)
    assert alias == "challenger" and previous is None
    assert "read, without tag score_higher_is_better, as higher is better" in note and "not comparable" in note


@pytest.mark.parametrize("rescore", [None, lambda v: 0.9], ids=["without-rescore", "with-rescore"])
def test_a_champion_of_the_other_direction_is_not_compared_even_rescored(client, rescore):
    _version(client, {**LOSS, "score_higher_is_better": "true"})
    alias, previous, note = registry.choose_alias(0.31, _read(client, rescore=rescore), maximize=False)
    assert alias == "challenger" and previous is None
    assert "test_loss recorded higher is better, this one lower is better: not comparable" in note
    assert "@champion stays" in note and "move it by hand" in note


def test_a_champion_of_another_metric_and_direction_is_rescored_in_the_new_ones(client):
    _version(client, {"test_metric": "test_macro_f1", "test_macro_f1": "0.800000", "test_data": "abc",
                      "score_higher_is_better": "true"})
    # Re-scored on test_loss (0.5), compared lower-is-better: 0.4 wins though 0.8 > 0.4 on its tag.
    assert registry.choose_alias(0.4, _read(client, rescore=lambda v: 0.5), maximize=False) == \
        ("champion", 0.5, None)
    alias, _, note = registry.choose_alias(0.4, _read(client), maximize=False)  # nothing to re-score with
    assert alias == "challenger"
    assert "(test_macro_f1: higher is better; test_loss: lower is better): not comparable" in note


def test_a_direction_tag_that_is_no_boolean_keeps_the_champion(client):
    _version(client, {**LOSS, "score_higher_is_better": "lower"})
    alias, _, note = registry.choose_alias(0.01, _read(client), maximize=False)
    assert alias == "challenger" and "score_higher_is_better='lower'" in note


def test_a_version_registered_before_the_tag_gets_it_when_its_registration_is_finished(client):
    """A run that stopped between registering and setting the alias, under the code before the tag:
    re-running the study records the direction before the version may become champion."""
    tags = {"orchestrator_study": "s", "optuna_trial_number": "3"}
    version = _version(client, {**tags, **LOSS}, alias=None)
    r = registry.register(client, "m", "no-run", "no-checkpoint", 0.35, [], None, tags, metric="test_loss",
                          test_data="abc", maximize=False)
    assert (r.version, r.alias, r.reused) == (version, "champion", True)
    got = client.get_model_version("m", version).tags
    assert got["score_higher_is_better"] == "false"
    assert got["champion_reason"] == "study s: first champion (test_loss 0.3500, lower is better)"
    with pytest.raises(TypeError, match="expected True or False"):
        registry.register(client, "m", "no-run", "no-checkpoint", 0.35, [], None, tags, maximize="minimize")


def test_register_moves_champion_to_a_lower_loss_on_a_real_registry(store, tmp_path, tiny_model, capsys):
    from orchestrator.models.heads import TextClassifier, load_encoder, load_tokenizer
    from orchestrator.training.saved_model import Classifier
    from orchestrator.tracking.client import Tracker

    checkpoint = TextClassifier(load_encoder(str(tiny_model)), 2).save(
        tmp_path / "ckpt", load_tokenizer(str(tiny_model)), {"label_names": ["a", "b"], "max_length": 16})
    tracker = Tracker(store, "loss", str(tmp_path / "artifacts"))
    parent = tracker.study_run("loss", None, {})
    example = ["x", "y"]
    frame = Classifier(checkpoint).predict_frame(example)
    aliases = []
    for trial, score in enumerate([0.35, 0.40, 0.31]):
        run = tracker.start_trial(parent, "loss", trial, {})
        r = registry.register(tracker.client, "loss-clf", run, checkpoint, score, example, frame,
                              tags={"orchestrator_study": "loss", "optuna_trial_number": str(trial)},
                              metric="test_loss", test_data="abc", maximize=False)
        aliases.append(r.alias)
    assert aliases == ["champion", "challenger", "champion"]
    client = tracker.client
    v1, v2, v3 = (client.get_model_version("loss-clf", str(n)).tags for n in (1, 2, 3))
    assert v1["score_higher_is_better"] == v2["score_higher_is_better"] == v3["score_higher_is_better"] == "false"
    assert v2["challenger_reason"] == "study loss: test_loss 0.4000 does not beat champion's 0.3500 (lower is better)"
    assert v3["champion_reason"] == "study loss: test_loss 0.3100 < champion's 0.3500 (lower is better)"

    # Moved by hand, the challenger is champion: its page no longer says why it was not.
    assert main(["promote", "--model", "loss-clf", "--version", "2", "--tracking-uri", store]) == 0
    assert "version 3 -> version 2" in capsys.readouterr().out
    assert "challenger_reason" not in client.get_model_version("loss-clf", "2").tags


def test_a_version_registered_before_the_layout_by_stage_still_loads(registered_model, tmp_path):
    """A registered model runs the copy of `pyfunc_model.py` stored with it: versions registered
    before 2026-12-07 import `orchestrator.serve.ClassifierPyfunc`. Logged here with that very
    code (the old file's text) and loaded back through MLflow, as deployment loads it."""
    import mlflow

    _, checkpoint = registered_model
    old = tmp_path / "pyfunc_model.py"
    old.write_text("import mlflow\n\nfrom orchestrator.serve import ClassifierPyfunc\n\n"
                   "mlflow.models.set_model(ClassifierPyfunc())\n")
    uri = f"sqlite:///{tmp_path / 'old.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=str(old), artifacts={"classifier": str(checkpoint)})
        model = mlflow.pyfunc.load_model(info.model_uri)
        out = model.predict(__import__("pandas").DataFrame({"text": ["great product", None]}))
    finally:
        mlflow.set_tracking_uri(None)
    assert list(out.columns)[:1] == ["label"] and out["label"].iloc[0] in ("negative", "neutral", "positive")
    assert out["label"].iloc[1] is None  # the old path applies today's rules: no guess for a missing text
