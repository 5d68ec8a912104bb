"""@champion moved by hand (`promote`, `rollback`) and by the search, each move recorded with who,
why, when, how and from which version; and what a registered version's page says about it.
Real SQLite registries: one built here (two versions registered as a search registers them), and
the session's finished search (read only)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime

import pytest
from mlflow import MlflowClient

from orchestrator.registry import versions as registry
from orchestrator.cli import main


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, tiny_model):
    """A store where a search made version 1 champion, then version 2 (a better score)."""
    from orchestrator.models.heads import TextClassifier, load_encoder, load_tokenizer
    from orchestrator.training.saved_model import Classifier
    from orchestrator.tracking.client import Tracker

    root = tmp_path_factory.mktemp("promotion")
    checkpoint = TextClassifier(load_encoder(str(tiny_model)), 3).save(
        root / "checkpoint", load_tokenizer(str(tiny_model)),
        {"label_names": ["negative", "neutral", "positive"], "max_length": 32})
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", "promotion", str(root / "artifacts"))
    example = ["great product", "awful"]
    frame = Classifier(checkpoint).predict_frame(example)
    for trial, score in enumerate([0.5, 0.6]):
        run = tracker.start_trial(tracker.study_run("promo", None, {}), "promo", trial, {})
        registry.register(tracker.client, "m", run, checkpoint, score, example, frame,
                          tags={"orchestrator_study": "promo", "optuna_trial_number": str(trial)})
    return root / "mlflow.db"


@pytest.fixture
def store(two_versions, tmp_path) -> tuple[str, MlflowClient]:
    """A copy of `two_versions` for one test to change (its artifacts stay where they are)."""
    db = shutil.copy(two_versions, tmp_path / "mlflow.db")
    uri = f"sqlite:///{db}"
    return uri, MlflowClient(uri, registry_uri=uri)


def _champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias("m", "champion").version)


def _history(client: MlflowClient) -> list[dict]:
    return json.loads(client.get_registered_model("m").tags["champion_history"])


def test_the_search_records_its_own_moves(store):
    _, client = store
    history = _history(client)
    assert [(e["from"], e["version"], e["how"]) for e in history] == [(None, "1", "search"), ("1", "2", "search")]
    assert history[0]["reason"] == "study promo: first champion (test_macro_f1 0.5000)"
    assert history[1]["reason"] == "study promo: test_macro_f1 0.6000 > champion's 0.5000"
    assert client.get_model_version("m", "2").tags["score_higher_is_better"] == "true"  # register's default
    assert client.get_model_version("m", "1").tags["champion_until"] == history[1]["at"]


def test_promote_then_rollback_records_who_why_when(store, capsys):
    uri, client = store
    assert main(["promote", "--model", "m", "--version", "1", "--reason", "canary failed", "--tracking-uri", uri]) == 0
    assert "version 2 -> version 1" in capsys.readouterr().out
    assert _champion(client) == "1"
    tags = client.get_model_version("m", "1").tags
    moved = _history(client)[-1]
    assert moved == {"version": "1", "from": "2", "how": "promote", "by": tags["champion_by"],
                     "at": tags["champion_since"], "reason": "canary failed"}
    assert tags["champion_by"] and tags["champion_reason"] == "canary failed" and tags["champion_from"] == "2"
    assert "champion_until" not in tags  # champion again: no longer "until"
    assert datetime.fromisoformat(moved["at"]).utcoffset().total_seconds() == 0  # UTC, ISO 8601

    assert main(["rollback", "--model", "m", "--tracking-uri", uri]) == 0
    assert _champion(client) == "2"
    back = _history(client)[-1]
    assert (back["from"], back["version"], back["how"]) == ("1", "2", "rollback")
    assert "rollback of version 1 (promote" in back["reason"]
    # Undone moves stay undone: the next rollback goes further back, to the search's first champion.
    assert main(["rollback", "--model", "m", "--tracking-uri", uri]) == 0
    assert _champion(client) == "1"
    assert main(["rollback", "--model", "m", "--tracking-uri", uri]) == 2  # nothing before the first champion
    err = capsys.readouterr().err
    assert "no earlier champion recorded" in err and "promote --model m --version N" in err
    assert _champion(client) == "1"


@pytest.mark.parametrize("version, says", [("9", "has no version 9"), ("abc", "not a version number"),
                                           ("2", "already @champion")])
def test_promote_refuses_what_it_cannot_do(store, capsys, version, says):
    uri, client = store
    before = client.get_registered_model("m").tags["champion_history"]
    assert main(["promote", "--model", "m", "--version", version, "--tracking-uri", uri]) == 2
    assert says in capsys.readouterr().err
    assert _champion(client) == "2" and client.get_registered_model("m").tags["champion_history"] == before


def test_a_missing_store_or_model_is_an_error_and_nothing_is_created(store, tmp_path, capsys):
    uri, _ = store
    missing = tmp_path / "nothing" / "mlflow.db"
    assert main(["promote", "--model", "m", "--version", "1", "--tracking-uri", f"sqlite:///{missing}"]) == 2
    assert main(["rollback", "--model", "m", "--tracking-uri", f"sqlite:///{missing}"]) == 2
    assert not missing.parent.exists()
    assert "no MLflow store at" in capsys.readouterr().err
    assert main(["rollback", "--model", "nope", "--tracking-uri", uri]) == 2
    assert "registered models: m" in capsys.readouterr().err


def test_the_history_is_trimmed_to_fit_the_stores_column(store):
    _, client = store
    for i in range(12):  # long reasons: the oldest moves go, the newest stay
        registry.move_champion(client, "m", "1" if i % 2 else "2", "promote", f"move {i} " + "x" * 600)
    text = client.get_registered_model("m").tags["champion_history"]
    history = json.loads(text)
    assert len(text) <= registry.HISTORY_LIMIT < len(text) + 700 and history[-1]["reason"].startswith("move 11 ")
    assert len(history[-1]["reason"]) == registry.REASON_LIMIT


def test_the_registered_version_says_what_it_is(finished_search, monkeypatch):
    """What the registry page of the search's champion shows: its description and logged model."""
    import mlflow
    import optuna

    uri = finished_search.tracking_uri
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias(finished_search.model_name, "champion")
    text = version.description
    assert f"test_macro_f1 **{version.tags['test_macro_f1']}**" in text  # the score the tag holds
    best = optuna.load_study(study_name=finished_search.study_name, storage=finished_search.storage).best_trial
    shown = {name: f"{value:.4g}" if isinstance(value, float) else str(value) for name, value in best.params.items()}
    assert shown and all(f"{name}={value}" in text for name, value in shown.items())
    parent = client.get_run(client.get_run(version.run_id).data.tags["mlflow.parentRunId"])
    assert f"test_macro_f1 {parent.data.metrics['baseline_test_macro_f1']:.6f}" in text
    assert f"`{version.tags['test_data']}`" in text and "single_label" in text
    assert client.get_registered_model(finished_search.model_name).description.startswith("Fine-tuned")
    assert version.tags["champion_how"] == "search" and "first champion" in version.tags["champion_reason"]

    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", uri)
    monkeypatch.setattr(mlflow.tracking._model_registry.utils, "_registry_uri", uri)
    info = mlflow.models.get_model_info(f"models:/{finished_search.model_name}/{version.version}")
    assert info.signature.inputs.input_names() == ["text"]
    assert {"label", "prob_negative"} <= set(info.signature.outputs.input_names())
    assert info.saved_input_example_info is not None
