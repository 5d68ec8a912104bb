"""Trials in their own processes: CPU workers, a 2-process Accelerate (gloo) launch, a killed trial."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import tiny_experiment
from mlflow import MlflowClient

from orchestrator.cli import main
from orchestrator.search.study import retried_from

pytestmark = pytest.mark.slow  # whole searches over several processes


def _write(tmp_path, tiny_model, data_dir, epochs=2, **search):
    return tiny_experiment(tmp_path / "par.yaml", tiny_model, data_dir, "par", training={"epochs": epochs},
                           search={"n_trials": 4, "seed": 2, **search}, registry={"register": False})


def _study(tmp_path):
    return optuna.load_study(study_name="par", storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")


def _trial_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("par")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("orchestrator_role") == "study"]
    return parent, [r for r in runs if r.data.tags.get("orchestrator_role") == "trial"]


def test_two_cpu_workers_run_each_trial_in_its_own_process(tmp_path, tiny_model, data_dir, monkeypatch, store):
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--config", str(_write(tmp_path, tiny_model, data_dir)), "--workers", "2"]) == 0
    trials = _study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 4 and os.getpid() not in pids  # a fresh process per trial
    assert {t.user_attrs["slot"] for t in trials} == {"cpu0", "cpu1"}
    parent, runs = _trial_runs(tmp_path)
    assert len(parent) == 1 and len(runs) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent[0].info.run_id}
    assert sorted(int(r.data.tags["optuna_trial_number"]) for r in runs) == [0, 1, 2, 3]
    # Trials overlapped in time: the two slots really ran at once.
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))


def test_one_trial_as_a_two_process_gloo_launch(tmp_path, tiny_model, data_dir, monkeypatch, store):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, tiny_model, data_dir, n_trials=1, gpus_per_trial=2)
    assert main(["search", "--config", str(path)]) == 0
    (trial,) = _study(tmp_path).trials
    assert trial.state.name == "COMPLETE" and 0.0 <= trial.value <= 1.0
    assert len(trial.intermediate_values) == 2
    assert trial.user_attrs["processes"] == 2  # Accelerate's world size, as the trained model saw it


def test_a_killed_trial_process_fails_only_its_trial(tmp_path, tiny_model, data_dir, store):
    path = _write(tmp_path, tiny_model, data_dir, epochs=12, n_trials=3)  # long enough to catch mid-training
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "search", "--config", str(path), "--workers", "2"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    deadline = time.time() + 240
    while killed is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            trials = _study(tmp_path).trials
        except Exception:  # the study does not exist yet
            continue
        for t in trials:
            if t.state.name == "RUNNING" and "pid" in t.user_attrs and t.intermediate_values:
                os.kill(t.user_attrs["pid"], signal.SIGKILL)
                killed = t.number
                break
    out, _ = proc.communicate(timeout=600)
    assert killed is not None, out
    trials = {t.number: t for t in _study(tmp_path).trials}
    assert trials[killed].state.name == "FAIL"
    assert "killed by SIGKILL" in trials[killed].user_attrs["fail_reason"]
    others = [t for n, t in trials.items() if n != killed]
    assert [t.state.name for t in others] == ["COMPLETE"] * 3  # the study went on to its 3 finished trials
    (retry,) = [t for t in others if retried_from(t) == killed]
    assert retry.params == trials[killed].params  # re-queued once with the same parameters
    _, runs = _trial_runs(tmp_path)
    by_number = {int(r.data.tags["optuna_trial_number"]): r for r in runs}
    assert by_number[killed].info.status == "FAILED"
    assert "SIGKILL" in by_number[killed].data.tags["fail_reason"]
    assert all(by_number[n].info.status == "FINISHED" for n in trials if n != killed)
