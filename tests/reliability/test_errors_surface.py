"""Errors are not swallowed: only a store outage is retried, anything else surfaces with its
traceback; `@champion` moves only when both scores were read and the new one is better. Real MLflow
stores throughout: a SQLite one, and a port where no server listens for the outage."""

import socket

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from orchestrator.registry import versions as registry
from orchestrator.training import trial as trial_mod
from orchestrator.tracking.client import BestEffort, Tracker, is_missing, is_outage


@pytest.fixture
def dead_server(monkeypatch):
    """An MLflow client URL where nothing listens (MLflow's retries cut short)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _error(call) -> BaseException:
    try:
        call()
    except BaseException as e:  # noqa: BLE001 - the test inspects whatever was raised
        return e
    raise AssertionError("no error")


def test_outages_and_refusals_are_told_apart(tmp_path, dead_server):
    down = _error(lambda: MlflowClient(dead_server).get_run("abc"))
    assert is_outage(down)
    store = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}", registry_uri=f"sqlite:///{tmp_path / 'm.db'}")
    missing = _error(lambda: store.get_run("0123456789abcdef0123456789abcdef"))
    assert not is_outage(missing) and is_missing(missing)
    refused = _error(lambda: store.create_registered_model("bad/name"))
    assert isinstance(refused, MlflowException) and not is_outage(refused)
    assert not is_outage(OSError(28, "No space left on device"))  # a full disk is not a tracking outage


def test_best_effort_retries_outages_and_raises_anything_else(tmp_path, dead_server):
    calls = []

    class Flaky:
        def log_metrics(self, *a):
            calls.append("metrics")
            return MlflowClient(dead_server).get_run("abc")

        def set_tags(self, *a):
            calls.append("tags")
            raise TypeError("a bug, not an outage")

    tracker = BestEffort(Flaky, attempts=3, wait=0.01, pause=60)
    assert tracker.log_metrics("run", {}) is None  # skipped after 3 tries: the trial goes on
    assert calls == ["metrics"] * 3 and tracker.failures == 1
    calls.clear()
    tracker = BestEffort(Flaky, attempts=3, wait=0.01)
    with pytest.raises(TypeError, match="a bug"):
        tracker.set_tags("run", {})
    assert calls == ["tags"]  # raised at once, never retried


def test_a_failed_trial_keeps_its_whole_traceback_in_its_log(trial_job, monkeypatch, capfd):
    job, study = trial_job

    def broken(*args, **kwargs):
        def inner():
            raise ValueError("shape mismatch in the head")
        inner()

    monkeypatch.setattr(trial_mod.loop, "train", broken)
    outcome = trial_mod.run_trial(job)
    assert outcome.state == "FAIL" and outcome.reason == "ValueError: shape mismatch in the head"
    log = capfd.readouterr()
    text = log.out + log.err
    assert "Traceback (most recent call last)" in text and "in inner" in text  # where it happened, not just what


def _store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    return MlflowClient(uri, registry_uri=uri)


def test_champion_moves_only_to_a_better_score_read_on_both_sides(tmp_path, dead_server):
    better, worse = registry.choose_alias(0.8, lambda: 0.7), registry.choose_alias(0.6, lambda: 0.7)
    assert better[:2] == ("champion", 0.7) and worse[:2] == ("challenger", 0.7)
    assert registry.choose_alias(0.7, lambda: 0.7)[0] == "challenger"  # equal stays
    assert registry.choose_alias(0.1, lambda: None)[0] == "champion"  # no champion yet
    assert registry.choose_alias(float("nan"), lambda: None)[0] == "challenger"

    client = _store(tmp_path)
    client.create_registered_model("m")
    version = client.create_model_version("m", source=str(tmp_path), tags={"test_macro_f1": "not-a-number"})
    client.set_registered_model_alias("m", "champion", version.version)
    alias, previous, note = registry.choose_alias(0.99, lambda: registry.champion_score(client, "m"))
    assert alias == "challenger" and previous is None and "@champion stays" in note and "not-a-number" in note

    down = MlflowClient(dead_server, registry_uri=dead_server)
    alias, _, note = registry.choose_alias(0.99, lambda: registry.champion_score(down, "m"))
    assert alias == "challenger" and "reading the current champion" in note


def test_register_sets_the_alias_by_the_rule_on_a_real_registry(tmp_path, tiny_model):
    from orchestrator.models.heads import TextClassifier, load_encoder, load_tokenizer
    from orchestrator.training.saved_model import Classifier

    checkpoint = TextClassifier(load_encoder(str(tiny_model)), 2).save(
        tmp_path / "ckpt", load_tokenizer(str(tiny_model)), {"label_names": ["a", "b"], "max_length": 16})
    tracker = Tracker(f"sqlite:///{tmp_path / 'r.db'}", "rule", str(tmp_path / "artifacts"))
    parent = tracker.study_run("rule", None, {})
    example = ["x", "y"]
    frame = Classifier(checkpoint).predict_frame(example)
    aliases = []
    for trial, score in enumerate([0.5, 0.4, 0.5, 0.9]):
        run = tracker.start_trial(parent, "rule", trial, {})
        r = registry.register(tracker.client, "rule-clf", run, checkpoint, score, example, frame,
                              tags={"optuna_trial_number": str(trial)})
        aliases.append(r.alias)
    assert aliases == ["champion", "challenger", "challenger", "champion"]
    assert str(tracker.client.get_model_version_by_alias("rule-clf", "champion").version) == "4"
