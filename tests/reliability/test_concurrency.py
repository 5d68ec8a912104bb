"""Several `search` processes on one study, the documented way to use several machines: together
they finish exactly the requested number of trials, run each trial once, and do the one-time work
(study, parent run, registration) once; when one dies, the others make up its trials. With the
default embedded SQLite storage and with a real PostgreSQL server."""

import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from conftest import tiny_experiment
from mlflow import MlflowClient
from orchestrator.search.study import retried_from

pytestmark = pytest.mark.slow  # several whole searches on one study, one killed

N_TRIALS = 3  # two drivers each take one at once; the first one free takes the third


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(request, tmp_path, tiny_model, data_dir):
    """(experiment YAML, storage URL, study name): each test gets its own study, also on the shared server."""
    name = f"conc-{uuid.uuid4().hex[:8]}"
    storage = (f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}" if request.param == "sqlite"
               else request.getfixturevalue("postgres"))
    search = {"n_trials": N_TRIALS, "seed": 5, "heartbeat_interval": 1, "heartbeat_grace_period": 6}
    if request.param == "postgresql":
        search["storage"] = storage  # SQLite: the default, mlruns/optuna.db under the working directory
    experiment = tiny_experiment(tmp_path / "conc.yaml", tiny_model, data_dir, name, training={"epochs": 3},
                                 search=search)
    return experiment, storage, name


def _search(experiment: Path, hostname: str | None = None) -> subprocess.Popen:
    # One trial at a time per process: the scenarios are about processes sharing a study.
    cmd = [sys.executable, "-m", "orchestrator", "search", "--config", str(experiment), "--workers", "1"]
    if hostname:  # another machine, as far as the study can tell: its own hostname (a UTS namespace)
        cmd = ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh", *cmd]
    return subprocess.Popen(cmd, cwd=experiment.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _finish(*procs: subprocess.Popen) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-4000:]


def _check_stores(tmp_path: Path, storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """What every run of several processes must leave: N finished trials, unique numbers, nothing
    RUNNING or WAITING, one MLflow run per trial, one parent run, one registered version."""
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert [t.number for t in trials] == list(range(len(trials)))
    assert Counter(t.state.name for t in trials)["COMPLETE"] == N_TRIALS, [t.state.name for t in trials]
    assert not [t.number for t in trials if t.state.name in ("RUNNING", "WAITING")]
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    roles = Counter(r.data.tags.get("orchestrator_role") for r in runs)
    assert roles["study"] == 1
    per_trial = Counter(r.data.tags["optuna_trial_number"] for r in runs
                        if r.data.tags.get("orchestrator_role") == "trial")
    assert set(per_trial) == {str(t.number) for t in trials} and set(per_trial.values()) == {1}, per_trial
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    (version,) = client.search_model_versions(f"name='{name}-clf'")
    assert client.get_model_version_by_alias(f"{name}-clf", "champion").version == version.version
    return trials


def test_two_processes_on_one_study_run_exactly_the_requested_trials(setup, tmp_path):
    experiment, storage, name = setup
    first, second = _search(experiment), _search(experiment)
    _finish(first, second)
    trials = _check_stores(tmp_path, storage, name)
    assert len(trials) == N_TRIALS  # none failed, none over budget
    drivers = {t.user_attrs["driver"].rsplit(":", 1)[1] for t in trials}
    assert drivers == {str(first.pid), str(second.pid)}  # both really took part


def test_when_one_process_is_killed_the_other_makes_up_its_trial(setup, tmp_path, request, store):
    """SQLite: the survivor sees the dead driver's pid on this machine. PostgreSQL: the dead
    driver runs as another machine (its own hostname), so only its missing heartbeats tell."""
    experiment, storage, name = setup
    elsewhere = "postgresql" in request.node.callspec.id
    victim = _search(experiment, hostname="other-machine" if elsewhere else None)
    survivor = _search(experiment)
    deadline = time.time() + 300
    while True:
        assert time.time() < deadline and victim.poll() is None, "the victim never reached training"
        time.sleep(0.3)
        try:
            trials = optuna.load_study(study_name=name, storage=storage).trials
        except Exception:  # noqa: BLE001 - the storage or the study is not created yet
            continue
        training = [t for t in trials if t.state.name == "RUNNING" and t.intermediate_values
                    and t.user_attrs.get("driver", "").endswith(f":{victim.pid}")]
        if training:
            break
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    _finish(survivor)

    trials = _check_stores(tmp_path, storage, name)
    killed = trials[training[0].number]
    assert killed.state.name == "FAIL"
    (retry,) = [t for t in trials if retried_from(t) == killed.number]
    assert retry.params == killed.params and retry.state.name == "COMPLETE"
    assert retry.user_attrs["driver"].endswith(f":{survivor.pid}")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    run = MlflowClient(uri).get_run(killed.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert ("heartbeat" if elsewhere else "died") in run.data.tags["fail_reason"]
