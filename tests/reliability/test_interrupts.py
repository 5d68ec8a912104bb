"""Signals and crashes at chosen points; afterwards Optuna and MLflow must agree and hold no
RUNNING record, and the same command must continue the study to its requested size."""

import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import tiny_experiment
from mlflow import MlflowClient
from orchestrator.search.study import retried_from

pytestmark = pytest.mark.slow  # whole searches, killed or signalled mid-study

N_TRIALS = 3


@pytest.fixture
def experiment(tmp_path, tiny_model, data_dir, store):
    return tiny_experiment(tmp_path / "rel.yaml", tiny_model, data_dir, "rel", training={"epochs": 6},
                           search={"n_trials": N_TRIALS, "seed": 4})


def _start(experiment):
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "search", "--config", str(experiment),
                             "--workers", "2"], cwd=experiment.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _study(tmp_path):
    return optuna.load_study(study_name="rel", storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")


def _wait_for_training(tmp_path, proc, timeout=180):
    """Block until some trial is mid-training (has reported an epoch but is still RUNNING)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            trials = _study(tmp_path).trials
        except Exception:  # study not created yet
            continue
        running = [t for t in trials if t.state.name == "RUNNING" and t.intermediate_values]
        if running:
            return running
    raise AssertionError("no trial reached training in time")


def _runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.get_experiment_by_name("rel")
    runs = client.search_runs([exp.experiment_id])
    return client, runs


def _assert_nothing_running(tmp_path):
    assert not [t.number for t in _study(tmp_path).trials if t.state.name in ("RUNNING", "WAITING")
                and retried_from(t) is None]
    _, runs = _runs(tmp_path)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []


def _finish_and_check(experiment, tmp_path, before: dict):
    """Run the same command again: the study reaches N finished trials, old results unchanged."""
    rerun = subprocess.run([sys.executable, "-m", "orchestrator", "search", "--config", str(experiment)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    trials = _study(tmp_path).trials
    assert len([t for t in trials if t.state.name == "COMPLETE"]) == N_TRIALS
    for number, (params, value) in before.items():
        assert (trials[number].params, trials[number].value) == (params, value)
    _assert_nothing_running(tmp_path)
    client, runs = _runs(tmp_path)
    assert len([r for r in runs if r.data.tags.get("orchestrator_role") == "study"]) == 1  # re-attached
    assert client.get_model_version_by_alias("rel-clf", "champion")
    return trials


def _alive(pid: int) -> bool:
    """Running, not a zombie (a container's PID 1 may never reap the dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _completed(tmp_path):
    return {t.number: (t.params, t.value) for t in _study(tmp_path).trials if t.state.name == "COMPLETE"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_one_signal_lets_running_trials_finish_and_starts_no_new_one(experiment, tmp_path, sig):
    proc = _start(experiment)
    running = _wait_for_training(tmp_path, proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    # The phase the signal came in, and the trial that finished meanwhile, not "no trial completed".
    assert "interrupted while running trials" in out and "No trial completed" not in out, out[-3000:]
    assert "best trial: " in out
    trials = _study(tmp_path).trials
    started_after = [t for t in trials if t.number > max(r.number for r in running) + 1]
    assert not started_after, [t.number for t in started_after]
    assert all(t.state.name == "COMPLETE" for t in trials if t.number in {r.number for r in running})
    _assert_nothing_running(tmp_path)
    _finish_and_check(experiment, tmp_path, _completed(tmp_path))


def test_second_sigint_stops_at_once_and_the_rerun_repeats_the_killed_trials(experiment, tmp_path):
    proc = _start(experiment)
    running = _wait_for_training(tmp_path, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    killed = [t for t in _study(tmp_path).trials if t.number in {r.number for r in running}]
    assert any(t.state.name == "FAIL" for t in killed), [t.state.name for t in killed]
    _, runs = _runs(tmp_path)
    statuses = {r.data.tags.get("optuna_trial_number"): r.info.status for r in runs}
    for t in killed:
        if t.state.name == "FAIL":
            assert statuses[str(t.number)] == "KILLED"
    _assert_nothing_running(tmp_path)
    trials = _finish_and_check(experiment, tmp_path, _completed(tmp_path))
    for t in killed:
        if t.state.name == "FAIL":
            (retry,) = [r for r in trials if retried_from(r) == t.number]
            assert retry.params == t.params and retry.state.name == "COMPLETE"


def test_kill_9_of_the_driver_then_the_same_command_resumes(experiment, tmp_path):
    proc = _start(experiment)
    running = _wait_for_training(tmp_path, proc)
    proc.kill()  # SIGKILL: no handler runs; trial processes die with their driver
    proc.communicate(timeout=60)
    time.sleep(1)
    for t in running:
        assert not _alive(t.user_attrs["pid"]), "a trial process outlived its driver"
    before = _completed(tmp_path)
    trials = _finish_and_check(experiment, tmp_path, before)
    for t in running:
        assert trials[t.number].state.name == "FAIL"
        assert "died" in trials[t.number].user_attrs["fail_reason"]  # the summary and MLflow say why
        (retry,) = [r for r in trials if retried_from(r) == t.number]
        assert retry.params == trials[t.number].params
    _, runs = _runs(tmp_path)
    statuses = {r.data.tags.get("optuna_trial_number"): r.info.status for r in runs}
    assert all(statuses[str(t.number)] == "KILLED" for t in running)
