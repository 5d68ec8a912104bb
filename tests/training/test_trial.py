"""A trial's own process, driven in-process: out-of-memory retry and failure.

There is no GPU here: the first `train` call raises the error class a CUDA allocator raises
(a fake OOM), then the real training runs at half the per-device batch with gradient accumulation.
"""

import os

import optuna
import pytest
import torch

from orchestrator.training import trial as trial_mod
from orchestrator.config import from_dict
from orchestrator.tracking.client import Tracker


def _fake_oom(monkeypatch, times):
    real = trial_mod.train.train
    calls = []

    def train(*args, **kwargs):
        calls.append((kwargs["per_device_batch_size"], kwargs["gradient_accumulation_steps"]))
        if len(calls) <= times:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(trial_mod.train, "train", train)
    return calls


def test_oom_retries_once_at_half_the_batch_with_accumulation(trial_job, monkeypatch):
    job, study = trial_job
    calls = _fake_oom(monkeypatch, times=1)
    outcome = trial_mod.run_trial(job)
    assert outcome.state == "COMPLETE" and 0 <= outcome.value <= 1
    assert calls == [(16, 1), (8, 2)]
    attrs = study.trials[0].user_attrs
    assert (attrs["per_device_batch_size"], attrs["gradient_accumulation_steps"], attrs["oom_retried"]) == (8, 2, True)
    assert os.path.isdir(attrs["checkpoint"])


def test_a_second_oom_fails_the_trial_with_the_reason(trial_job, monkeypatch):
    job, study = trial_job
    calls = _fake_oom(monkeypatch, times=2)
    outcome = trial_mod.run_trial(job)
    assert outcome.state == "FAIL" and "out of memory at per-device batch 8" in outcome.reason
    assert len(calls) == 2
    run_id = study.trials[0].user_attrs["mlflow_run_id"]
    tracker = Tracker(from_dict(job.config).tracking.uri, "oom", "mlruns/artifacts")
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FAILED" and "out of memory" in run.data.tags["fail_reason"]


@pytest.mark.parametrize("pruner", ["none", "median"])
def test_the_trial_prunes_by_the_experiments_pruner_not_optunas_default(trial_job, pruner):
    """Optuna keeps no pruner in its storage: a trial process that loads the study without the
    experiment's would prune by Optuna's default (median, no warm-up) after any epoch."""
    job, study = trial_job
    better = 0.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else 1.0
    for _ in range(6):  # finished trials that did far better at epoch 1
        other = study.ask()
        other.report(better, 1)
        study.tell(other, better)
    job.config["search"]["pruner"] = pruner  # "median" keeps its 2 warm-up epochs
    outcome = trial_mod.run_trial(job)
    assert outcome.state == "COMPLETE", outcome
