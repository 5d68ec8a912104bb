"""A real `mlflow server`: unreachable at start -> exit 2 at once; killed mid-study -> every trial
still finishes in Optuna, and the same command registers once the server is back."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.cli import main

pytestmark = pytest.mark.slow  # an MLflow server, killed mid-study


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(tmp_path, port):
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                             "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            # MLflow 3's job runner (huey consumers) doubles the start-up; tracking does not need it
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3).status == 200:
                return proc
        except OSError:
            time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("mlflow server did not start")


def _config(tmp_path, tiny_model, data_dir, uri):
    cfg = {"name": "down", "data": {"train": str(data_dir / "train.csv"), "test": str(data_dir / "test.csv")},
           "model": {"name_or_path": str(tiny_model)}, "training": {"epochs": 6, "learning_rate": 2e-3},
           "space": {"learning_rate": {"low": 5e-4, "high": 5e-3, "log": True}},
           "search": {"n_trials": 2, "pruner": "none", "storage": f"sqlite:///{tmp_path / 'optuna.db'}"},
           "tracking": {"uri": uri}, "registry": {"model_name": "down-clf", "export": False}}
    path = tmp_path / "down.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_unreachable_store_fails_fast_before_any_trial(tmp_path, tiny_model, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _config(tmp_path, tiny_model, data_dir, f"http://127.0.0.1:{_free_port()}")
    start = time.time()
    assert main(["search", "--config", str(path)]) == 2
    assert "tracking.uri: cannot use the MLflow store" in capsys.readouterr().err
    assert time.time() - start < 60
    assert not (tmp_path / "optuna.db").exists()


def test_server_killed_mid_study_loses_no_optuna_result(tmp_path, tiny_model, data_dir, migrated_store):
    port = _free_port()
    shutil.copyfile(migrated_store, tmp_path / "server.db")  # the server's store, migrated already
    server = _server(tmp_path, port)
    path = _config(tmp_path, tiny_model, data_dir, f"http://127.0.0.1:{port}")
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "search", "--config", str(path)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    deadline = time.time() + 180
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            if any(t.intermediate_values for t in optuna.load_study(study_name="down", storage=storage).trials):
                break
        except Exception:  # study not created yet
            pass
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out[-3000:]
    assert "Run the same command again when the store is back" in out
    trials = optuna.load_study(study_name="down", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.value is not None for t in trials)

    server = _server(tmp_path, port)  # back again: the same command finishes the job
    try:
        done = subprocess.run([sys.executable, "-m", "orchestrator", "search", "--config", str(path)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "registered as version 1 -> alias @champion" in done.stdout
        assert len(optuna.load_study(study_name="down", storage=storage).trials) == 2
        # MLflow now agrees with Optuna: each trial has one closed run (created now if the store
        # was down when the trial started, closed now if the store went down before it could).
        client = MlflowClient(f"http://127.0.0.1:{port}")
        runs = client.search_runs([client.get_experiment_by_name("down").experiment_id])
        trial_runs = [r for r in runs if r.data.tags.get("orchestrator_role") == "trial"]
        assert sorted(r.data.tags["optuna_trial_number"] for r in trial_runs) == ["0", "1"]
        assert {r.info.status for r in runs} == {"FINISHED"}
    finally:
        os.killpg(server.pid, signal.SIGKILL)
