"""A trial's own process: out-of-memory retry and failure (driven in-process), and the trial as
its executor runs it, answering to the driver.

There is no GPU here: the first `train` call raises the error class a CUDA allocator raises
(a fake OOM), then the real training runs at half the per-device batch with gradient accumulation.
"""

import dataclasses
import os
import threading
from types import SimpleNamespace

import torch

from orchestrator.config import from_dict
from orchestrator.execution.job import TrialOutcome, secret_environment
from orchestrator.execution.processes import run_child
from orchestrator.execution.slots import make_slots
from orchestrator.tracking.client import Tracker
from orchestrator.training import trial as trial_mod


def _fake_oom(monkeypatch, times):
    real = trial_mod.loop.train
    calls = []

    def train(*args, **kwargs):
        calls.append((kwargs["per_device_batch_size"], kwargs["gradient_accumulation_steps"]))
        if len(calls) <= times:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(trial_mod.loop, "train", train)
    return calls


def test_oom_retries_once_at_half_the_batch_with_accumulation(trial_job, monkeypatch):
    job, study = trial_job
    calls = _fake_oom(monkeypatch, times=1)
    outcome = trial_mod.run_trial(job)
    assert outcome.state == "COMPLETE" and 0 <= outcome.value <= 1
    assert calls == [(16, 1), (8, 2)]
    tags = Tracker(from_dict(job.config).tracking.uri, "oom", "mlruns/artifacts").client.get_run(outcome.run_id).data.tags
    assert (tags["per_device_batch_size"], tags["gradient_accumulation_steps"], tags["oom_retried"]) == ("8", "2", "True")
    assert os.path.isdir(outcome.checkpoint)


def test_a_second_oom_fails_the_trial_with_the_reason(trial_job, monkeypatch):
    job, study = trial_job
    calls = _fake_oom(monkeypatch, times=2)
    outcome = trial_mod.run_trial(job)
    assert outcome.state == "FAIL" and "out of memory at per-device batch 8" in outcome.reason
    assert len(calls) == 2
    run_id = outcome.run_id
    tracker = Tracker(from_dict(job.config).tracking.uri, "oom", "mlruns/artifacts")
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FAILED" and "out of memory" in run.data.tags["fail_reason"]


def test_the_trial_stops_when_the_driver_says_prune_and_needs_no_study_storage(trial_job, tmp_path, monkeypatch):
    """The real trial process (`worker`), as an executor runs it: it asks after each epoch and the
    driver's answer decides. The study's storage URL and a PostgreSQL password sit in the driver's
    environment, as in a team setup; the trial runs without either (its environment has neither)."""
    job, study = trial_job
    monkeypatch.setenv("ORCHESTRATOR_STORAGE", "postgresql://optuna:hunter2@127.0.0.1:9/optuna")
    monkeypatch.setenv("PGPASSWORD", "hunter2")
    job_path, result = tmp_path / "job.json", tmp_path / "result.json"
    job_path.write_text(dataclasses.replace(job, params={**job.params, "epochs": 3}).to_json())
    asked = []

    def driver(event):
        if event.get("ask") and event["type"] == "eval":
            asked.append(event["epoch"])
            return {"prune": event["epoch"] >= 2}
        return None

    secrets = secret_environment(from_dict(job.config))
    assert "ORCHESTRATOR_STORAGE" not in secrets and "PGPASSWORD" not in secrets
    child = run_child(make_slots("none", available=[])[0], job_path, result, tmp_path / "trial.log", driver,
                      secrets=secrets)
    assert child.returncode == 0, (tmp_path / "trial.log").read_text()
    outcome = TrialOutcome.from_json(result.read_text())
    assert asked == [1, 2] and outcome.state == "PRUNED" and outcome.reason == "pruned after epoch 2"
    assert outcome.run_id  # the driver closes or records the run by it
    log = (tmp_path / "trial.log").read_text()
    assert "hunter2" not in log


def test_a_trial_without_answers_trains_on_and_keeps_its_checkpoint(trial_job):
    """No driver on the other end (stdin gives nothing): the trial decides alone, the safe way."""
    job, _ = trial_job
    outcome = trial_mod.run_trial(job)
    assert outcome.state == "COMPLETE" and os.path.isdir(outcome.checkpoint)


def test_a_trial_run_logs_the_machines_use_and_its_peak_gpu_memory(trial_job, monkeypatch):
    """MLflow's system metrics, sampled every 0.5 s here, are real (this machine's CPU). There is
    no GPU here: once the real training on CPU has returned, CUDA is faked (6 of 8 GB reserved at
    most) for what the trial reads after training. On CPU the trial reads no peak at all."""
    assert trial_mod._TrialRun._peak_gpu_memory() == {}  # on CPU: nothing to log, not a zero
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    job, _ = trial_job
    real = trial_mod.loop.train

    def train(*args, **kwargs):
        result = real(*args, **kwargs)
        for name, fake in (("is_available", lambda: True), ("current_device", lambda: 0),
                           ("max_memory_reserved", lambda device=None: 6_000_000_000),
                           ("get_device_properties", lambda device: SimpleNamespace(total_memory=8_000_000_000))):
            monkeypatch.setattr(torch.cuda, name, fake)
        return result

    monkeypatch.setattr(trial_mod.loop, "train", train)
    outcome = trial_mod.run_trial(job)
    assert outcome.state == "COMPLETE" and outcome.attrs["peak_gpu_memory_share"] == 0.75
    metrics = Tracker(from_dict(job.config).tracking.uri, "oom", "mlruns/artifacts").run_metrics(outcome.run_id)
    assert (metrics["peak_gpu_memory_bytes"], metrics["peak_gpu_memory_share"]) == (6e9, 0.75)
    assert 0 <= metrics["system/cpu_utilization_percentage"] <= 100
    assert not [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"]  # stopped with the trial
