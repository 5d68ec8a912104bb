"""The driver-trial contract: TrialJob and TrialOutcome as JSON, and what travels beside them."""

import dataclasses

import pytest

from orchestrator.config import from_dict
from orchestrator.config.secrets import public
from orchestrator.execution.job import EVENT, TrialJob, TrialOutcome, parse_event, secret_environment


def _job(config: dict) -> TrialJob:
    return TrialJob(number=3, params={"learning_rate": 1e-4}, config=config, source="x.yaml",
                    model_path="/models/m", model_fingerprint="f", parent_run_id="r", data_dir="/d",
                    checkpoint_dir="/c", keep_local_checkpoint=False, keep_checkpoints=2)


def test_jobs_and_outcomes_round_trip_through_json():
    job = _job({"name": "x"})
    assert TrialJob.from_json(job.to_json()) == job
    outcome = TrialOutcome("COMPLETE", 0.8, metrics={"val_macro_f1": 0.8, "val_loss": 0.4})
    assert TrialOutcome.from_json(outcome.to_json()) == outcome
    assert TrialOutcome.from_json(TrialOutcome("FAIL", reason="gone", lost=True).to_json()).lost


def test_an_outcome_state_must_be_one_optuna_records():
    with pytest.raises(ValueError, match="RUNNING"):
        TrialOutcome("RUNNING")


def test_a_job_carries_no_password_the_environment_does(monkeypatch):
    password = "Pg-Secret-8812"
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "Mlf-Secret-3301")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    cfg = from_dict({"data": {"train": "t.csv"}, "search": {"storage": f"postgresql://u:{password}@db/optuna"},
                     "tracking": {"uri": "http://mlflow:5000"}})
    text = _job(public(cfg.to_dict())).to_json()
    assert password not in text and "Mlf-Secret-3301" not in text
    monkeypatch.setenv("PGPASSWORD", password)
    env = secret_environment(cfg)
    # The study's storage is the driver's alone: neither its URL nor PostgreSQL's password go to a trial.
    assert "ORCHESTRATOR_STORAGE" not in env and "PGPASSWORD" not in env and password not in str(env)
    assert env["ORCHESTRATOR_TRACKING_URI"] == "http://mlflow:5000"
    # What a trial on another machine (a Ray node, which does not inherit this environment) needs to log in.
    assert env["MLFLOW_TRACKING_PASSWORD"] == "Mlf-Secret-3301" and env["MLFLOW_TRACKING_USERNAME"] == "alice"


def test_events_are_lines_with_a_prefix_and_garbled_ones_are_recognised():
    assert parse_event("an ordinary log line\n") is None
    assert parse_event(EVENT + '{"type": "eval", "trial": 1}\n') == {"type": "eval", "trial": 1}
    assert parse_event(EVENT + "{not json\n") == {}


def test_the_job_lists_every_field_the_trial_reads():
    fields = {f.name for f in dataclasses.fields(TrialJob)}
    assert {"params", "config", "data_dir", "model_path", "checkpoint_dir", "keep_checkpoints", "probes"} <= fields
    assert "trial_id" not in fields  # the trial never re-attaches to the study


def test_postgresql_credentials_go_to_a_trial_only_for_a_postgresql_tracking_store(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "Pg-Secret-8812")
    cfg = from_dict({"data": {"train": "t.csv"}, "search": {"storage": "postgresql://u@db/optuna"},
                     "tracking": {"uri": "postgresql://u@db/mlflow"}})
    assert secret_environment(cfg)["PGPASSWORD"] == "Pg-Secret-8812"  # MLflow's own store needs it
    assert "ORCHESTRATOR_STORAGE" not in secret_environment(cfg)


def test_a_trial_process_inherits_no_way_into_the_study_storage(monkeypatch, tmp_path):
    """A real child process, started as every trial is: the driver's environment has the study's
    URL and PostgreSQL's password; the child's does not."""
    import sys

    import orchestrator.execution.processes as processes
    from orchestrator.execution.processes import run_child
    from orchestrator.execution.slots import make_slots

    monkeypatch.setenv("ORCHESTRATOR_STORAGE", "postgresql://u:Pg-Secret-8812@db/optuna")
    monkeypatch.setenv("PGPASSWORD", "Pg-Secret-8812")
    script = tmp_path / "child.py"
    script.write_text("import json, os\nprint('@@orchestrator ' + json.dumps({'type': 'env', 'trial': 0, "
                      "'names': sorted(os.environ)}))\n")
    monkeypatch.setattr(processes, "command", lambda slot, job, result: [sys.executable, str(script)])
    events = []
    run_child(make_slots("none", available=[])[0], tmp_path / "j.json", tmp_path / "r.json", tmp_path / "t.log",
              events.append, secrets={"ORCHESTRATOR_TRACKING_URI": "http://mlflow:5000"})
    (event,) = events
    assert "ORCHESTRATOR_TRACKING_URI" in event["names"]
    assert "ORCHESTRATOR_STORAGE" not in event["names"] and "PGPASSWORD" not in event["names"]


def test_an_event_is_found_after_text_another_writer_left_on_its_line():
    """Ranks of a multi-process launch share one pipe: another's text may run into an event's line."""
    from orchestrator.execution.job import text_before_event

    line = 'warning: x' + EVENT + '{"type": "eval", "trial": 1, "ask": true, "seq": 3} trailing\n'
    assert parse_event(line) == {"type": "eval", "trial": 1, "ask": True, "seq": 3}
    assert text_before_event(line) == "warning: x"


def test_a_job_names_no_study_storage(monkeypatch):
    from orchestrator.execution.job import STUDY_PLACEHOLDER, config_for_job

    cfg = from_dict({"data": {"train": "t.csv"}, "search": {"storage": "postgresql://u@db.internal/optuna"}})
    config = config_for_job(public(cfg.to_dict()))
    assert config["search"]["storage"] == STUDY_PLACEHOLDER and "db.internal" not in str(config)
    assert from_dict(config).search.metric == cfg.search.metric  # still a whole config for the trial
