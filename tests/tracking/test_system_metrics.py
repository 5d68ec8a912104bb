"""A trial run's system metrics (MLflow's monitor, on a real SQLite store): sampled while the trial
runs, stopped when it finishes, and a run its process never closed is left RUNNING for the
driver, not marked FINISHED by MLflow's exit hook. No GPU here: only the machine's CPU, memory,
disk and network are sampled (MLflow skips GPU metrics without NVML)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import mlflow
import pytest

from orchestrator.tracking.client import Tracker


@pytest.fixture
def tracker(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.25")
    yield Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "system", str(tmp_path / "artifacts"))
    if mlflow.active_run() is not None:  # a failed test must not leave its run active for the next
        mlflow.end_run()


def _monitors() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"]


def test_a_watched_trial_run_gets_system_metrics_until_it_finishes(tracker):
    parent = tracker.study_run("s", None, {})
    run_id = tracker.start_trial(parent, "s", 0, {"learning_rate": 0.001})
    assert tracker.watch_system(run_id)
    time.sleep(1.5)  # several samples at 0.25 s
    tracker.finish_trial(run_id, "COMPLETE")
    assert not _monitors() and mlflow.active_run() is None
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["trial_state"] == "COMPLETE"
    assert run.data.params == {"learning_rate": "0.001"} and run.data.tags["mlflow.parentRunId"] == parent
    assert 0 <= run.data.metrics["system/cpu_utilization_percentage"] <= 100
    assert run.data.metrics["system/system_memory_usage_megabytes"] > 0
    assert tracker.client.get_run(parent).data.metrics == {}  # the parent run is not sampled

    # A failed trial stops its monitor as well; switched off, nothing is sampled or made active.
    failed = tracker.start_trial(parent, "s", 1, {})
    assert tracker.watch_system(failed)
    tracker.finish_trial(failed, "FAIL", "RuntimeError: boom")
    assert not _monitors() and tracker.client.get_run(failed).info.status == "FAILED"


def test_switched_off_by_mlflows_variable(tracker, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    run_id = tracker.start_trial(tracker.study_run("s", None, {}), "s", 0, {})
    assert not tracker.watch_system(run_id)
    assert mlflow.active_run() is None and not _monitors()


def test_a_run_its_process_never_closed_stays_running_for_the_driver(tmp_path):
    """The trial's process raises where nothing catches it: Python runs the exit hooks, and the
    run stays RUNNING (the driver closes it with the trial's fate), not FINISHED."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = (f"from orchestrator.tracking.client import Tracker\n"
              f"t = Tracker({uri!r}, 'system', {str(tmp_path / 'artifacts')!r})\n"
              f"run = t.start_trial(t.study_run('s', None, {{}}), 's', 0, {{}})\n"
              f"assert t.watch_system(run)\n"
              f"print(run, flush=True)\n"
              f"raise RuntimeError('a bug the trial does not catch')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "a bug the trial does not catch" in done.stderr
    run_id = done.stdout.split()[-1]
    assert Tracker(uri, "system", str(tmp_path / "artifacts")).client.get_run(run_id).info.status == "RUNNING"
