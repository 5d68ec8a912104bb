"""`search.executor: ray` on a real two-node Ray cluster of local processes, with the embedded
stores: Ctrl-C cancels the Ray tasks and leaves nothing RUNNING. (Trials placed on both nodes, a
killed Ray worker and the champion from the artifact store: `test_team_stack.py`.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import tiny_experiment

from .stack import wait_until

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def _experiment(tmp_path, tiny_model, data_dir, name, n_trials, epochs=2, **search):
    return tiny_experiment(tmp_path / f"{name}.yaml", tiny_model, data_dir, name,
                           training={"epochs": epochs},
                           search={"n_trials": n_trials, "executor": "ray", "cpus_per_trial": 1, **search})


def _search(experiment: Path, cluster, cwd: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "search", "--config", str(experiment),
                             "--ray-address", cluster.address], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **cluster.env, "PYTHONPATH": str(ROOT)}, **kwargs)


def _study(cwd: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'mlruns' / 'optuna.db'}")


def test_ctrl_c_cancels_the_ray_tasks_and_leaves_nothing_running(ray_cluster, tiny_model, data_dir, tmp_path):
    experiment = _experiment(tmp_path, tiny_model, data_dir, "stopped", n_trials=4, epochs=20)
    proc = _search(experiment, ray_cluster, tmp_path)
    try:
        def pids():
            return [t.user_attrs["pid"] for t in _study(tmp_path, "stopped").get_trials(
                states=(optuna.trial.TrialState.RUNNING,)) if "pid" in t.user_attrs]
        wait_until(lambda: len(pids()) == 2, "two running trials", timeout=300, proc=proc)
        trial_pids = pids()
        proc.send_signal(signal.SIGINT)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)  # the second: stop them now
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    study = _study(tmp_path, "stopped")
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in trial_pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(Path(f"/proc/{pid}").exists() for pid in trial_pids)  # the trial processes are gone
