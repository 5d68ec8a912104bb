"""The driver's side of a running trial: it alone calls Optuna. Events from the trial are
written to its Optuna trial, and the trial's questions ("prune now?", "keep my checkpoint?") are
answered from the study, with the experiment's pruner. Driven directly with `study.ask()` /
`study.tell()` on a real SQLite storage, no trial process. Trials packed on one GPU: on fake
GPUs (no GPU here), with a fake executor."""

import threading
import time
from types import SimpleNamespace

import pytest
from optuna.trial import TrialState

from orchestrator.config import from_dict
from orchestrator.execution.job import TrialOutcome
from orchestrator.execution.local import LocalExecutor
from orchestrator.execution.slots import make_slots
from orchestrator.search.launcher import TrialFailed, TrialLauncher
from orchestrator.search.progress import StudyProgress
from orchestrator.search.study import PROBE_PREFIX, create_study, make_storage


def _launcher(tmp_path, pruner: str, keep: int = 3, direction: str = "maximize"):
    cfg = from_dict({"name": "driver", "data": {"train": "train.csv"}, "model": {"name_or_path": "m"},
                     "search": {"storage": f"sqlite:///{tmp_path / 'optuna.db'}", "pruner": pruner,
                                "keep_checkpoints": keep, "direction": direction,
                                "metric": "val_accuracy" if direction == "maximize" else "val_loss"}})
    study = create_study(cfg, make_storage(cfg.search))
    better = 1.0 if direction == "maximize" else 0.0
    for _ in range(6):  # finished trials that did far better at every epoch
        other = study.ask()
        for epoch in (1, 2, 3):
            other.report(better, epoch)
            other.should_prune()  # as the driver asks at each evaluation (successive halving records its rungs)
        study.tell(other, better)
    launcher = TrialLauncher(cfg, tmp_path, tmp_path, "m", "fp", "parent", _Executor(), StudyProgress(None),
                             10, None, None, None)
    trial = study.ask()
    launcher.running[trial.number] = trial
    return launcher, study, trial


class _Executor:
    slots = ["cpu0"]
    keeps_local_checkpoints = True


def _eval(launcher, trial, epoch, value=0.1):
    return launcher.on_event({"type": "eval", "trial": trial.number, "epoch": epoch, "value": value, "ask": True})


@pytest.mark.parametrize("pruner", ["none", "median"])
def test_the_driver_prunes_by_the_experiments_pruner(tmp_path, pruner):
    launcher, study, trial = _launcher(tmp_path, pruner)
    answers = [bool(_eval(launcher, trial, epoch)["prune"]) for epoch in (1, 2, 3)]
    # median: epochs before its warm-up (search.pruner_warmup_epochs) are never pruned.
    warmup = launcher.cfg.search.pruner_warmup_epochs
    assert answers == ([False, False, False] if pruner == "none" else [epoch >= warmup for epoch in (1, 2, 3)])
    assert pruner == "none" or answers[0] is False
    assert study.trials[trial.number].intermediate_values == {1: 0.1, 2: 0.1, 3: 0.1}


def test_evaluations_inside_epochs_are_the_pruners_steps(tmp_path):
    launcher, study, trial = _launcher(tmp_path, "successive_halving")
    answers = [launcher.on_event({"type": "eval", "trial": trial.number, "epoch": epoch, "evaluation": number,
                                  "value": 0.1, "ask": True})["prune"] for number, epoch in ((1, 0.5), (2, 1), (3, 1.5))]
    assert study.trials[trial.number].intermediate_values == {1: 0.1, 2: 0.1, 3: 0.1}
    # Far below the six finished trials at every rung (evaluations 1, 3, 9: reduction factor 3),
    # but rung 1 falls in the warm-up of 2 evaluations, so the next rung (3) is the first to stop it.
    assert answers == [False, False, True]


def test_the_trials_facts_and_probes_reach_the_study(tmp_path):
    launcher, study, trial = _launcher(tmp_path, "none")
    launcher.on_event({"type": "attrs", "trial": trial.number, "attrs": {"mlflow_run_id": "r1", "pid": 7}})
    launcher.on_event({"type": "probe", "trial": trial.number, "key": f"{PROBE_PREFIX}abc", "entry": {"batch_size": 64}})
    launcher.on_event({"type": "probe", "trial": trial.number, "key": "not-a-probe", "entry": {}})  # refused
    assert study.trials[trial.number].user_attrs == {"mlflow_run_id": "r1", "pid": 7}
    assert study.user_attrs[f"{PROBE_PREFIX}abc"] == {"batch_size": 64} and "not-a-probe" not in study.user_attrs
    # The next trial's job brings the cached probe: no trial needs the study to find it.
    assert launcher.job(study.ask()).probes == {f"{PROBE_PREFIX}abc": {"batch_size": 64}}
    launcher._record(trial, TrialOutcome("COMPLETE", 0.5, run_id="r1", checkpoint="/c", checkpoint_run="r1",
                                         timings={"train_seconds": 3.0, "eval_seconds": 1.0},
                                         attrs={"threshold_note": "n"}), 8.0)
    attrs = study.trials[trial.number].user_attrs
    assert (attrs["checkpoint"], attrs["checkpoint_run"], attrs["threshold_note"]) == ("/c", "r1", "n")
    assert attrs["wall_seconds"] == 8.0 and attrs["overhead_share"] == 0.5


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_checkpoint_is_kept_only_while_it_ranks_among_the_best(tmp_path, direction):
    launcher, study, trial = _launcher(tmp_path, "none", keep=2, direction=direction)
    keep = launcher.on_event({"type": "keep", "trial": trial.number, "value": 0.5, "ask": True})["keep"]
    assert keep is False  # six finished trials did better, in the study's direction
    study.tell(study.ask(), 0.5)
    launcher2, _, _ = launcher, None, None
    best = 2.0 if direction == "maximize" else -1.0
    assert launcher2.on_event({"type": "keep", "trial": trial.number, "value": best, "ask": True})["keep"] is True


def test_events_of_a_trial_that_is_not_running_here_are_progress_only(tmp_path):
    launcher, study, trial = _launcher(tmp_path, "median")
    assert launcher.on_event({"type": "eval", "trial": 999, "epoch": 1, "value": 0.0, "ask": True}) is None
    assert study.trials[trial.number].state == TrialState.RUNNING


def test_a_study_refuses_a_config_that_optimises_something_else(tmp_path):
    from orchestrator.data import DataError
    from orchestrator.search.study import check_objective

    _, study, _ = _launcher(tmp_path, "none")
    check_objective(study, "val_accuracy", "maximize")  # records what it optimises
    check_objective(study, "val_accuracy", "maximize")
    for metric, direction in (("val_loss", "minimize"), ("val_macro_f1", "maximize")):
        with pytest.raises(DataError, match="would not rank"):
            check_objective(study, metric, direction)


# ---------------------------------------------------------------- trials packed on one GPU
# No GPU here: the slots are made for device ids (`available=`), and a fake executor stands in for
# the trial processes; the study is a real one.

OOM_PACKED = TrialOutcome("FAIL", reason="out of memory sharing the GPU", run_id="packed-run",
                          attrs={"oom_packed": True})


class _FakeGPUs(LocalExecutor):
    """The local executor's slots on fake GPUs; `script(job, slot)` plays each trial."""

    def __init__(self, gpus, per_gpu, script):
        super().__init__(make_slots("all", available=gpus, trials_per_gpu=per_gpu), spares=False)
        self.script, self.calls, self.launcher = script, [], None
        self.busy, self.most_busy_alone, self._lock = 0, 0, threading.Lock()

    def run(self, job, slot, on_event):
        free = sorted(self.launcher.free._free)
        with self._lock:
            self.calls.append((job.number, slot, free))
            self.busy += 1
            if "#" not in slot:
                self.most_busy_alone = max(self.most_busy_alone, self.busy)
        try:
            return self.script(job, slot)
        finally:
            with self._lock:
                self.busy -= 1


def _packed(tmp_path, script, gpus=(0,), per_gpu=2):
    cfg = from_dict({"name": "packed", "data": {"train": "train.csv"}, "model": {"name_or_path": "m"},
                     "search": {"storage": f"sqlite:///{tmp_path / 'optuna.db'}", "metric": "val_accuracy",
                                "direction": "maximize", "trials_per_gpu": per_gpu}})
    study = create_study(cfg, make_storage(cfg.search))
    executor = _FakeGPUs(list(gpus), per_gpu, script)
    executor.launcher = launcher = TrialLauncher(cfg, tmp_path, tmp_path, "m", "fp", "parent", executor,
                                                 StudyProgress(None), 10, SimpleNamespace(requested=False), None, None)
    return launcher, study, executor


def _in_thread(launcher, trial, results):
    def go():
        try:
            results[trial.number] = launcher(trial)
        except TrialFailed as e:
            results[trial.number] = e
    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def _until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_trial_out_of_memory_beside_another_is_run_again_alone_holding_its_whole_gpu(tmp_path):
    """Fake GPUs (ids 0 and 1, two trials each): the same Optuna trial runs again, alone on gpu0,
    while no slot of gpu0 is free for another trial; gpu1's slots stay free for others."""
    launcher, study, executor = _packed(tmp_path, lambda job, slot: OOM_PACKED if "#" in slot
                                        else TrialOutcome("COMPLETE", 0.7, run_id="alone-run"), gpus=(0, 1))
    trial = study.ask()
    assert launcher(trial) == 0.7
    assert executor.calls == [(trial.number, "gpu0#1", ["gpu0#2", "gpu1#1", "gpu1#2"]),
                              (trial.number, "gpu0", ["gpu1#1", "gpu1#2"])]
    attrs = study.trials[trial.number].user_attrs
    assert attrs["oom_packed"] is True and attrs["packed_run_id"] == "packed-run"
    assert (attrs["slot"], attrs["mlflow_run_id"]) == ("gpu0", "alone-run")
    assert sorted(launcher.free._free) == ["gpu0#1", "gpu0#2", "gpu1#1", "gpu1#2"]  # all given back
    assert len(study.trials) == 1  # no new trial: the same one ran again


def test_the_run_alone_waits_for_the_trial_beside_it_and_no_new_trial_takes_its_gpu_meanwhile(tmp_path):
    """Fake GPU (id 0, two trials): trial A runs out of memory while B runs beside it. A waits for
    B's end; C, claimed meanwhile, waits for A's run alone instead of taking A's freed slot."""
    b_started, release_b = threading.Event(), threading.Event()
    numbers = {}

    def script(job, slot):
        if job.number == numbers["a"] and "#" in slot:
            assert b_started.wait(10)
            return OOM_PACKED
        if job.number == numbers["b"]:
            b_started.set()
            assert release_b.wait(10)
        return TrialOutcome("COMPLETE", 0.5)

    launcher, study, executor = _packed(tmp_path, script)
    a, b, c = study.ask(), study.ask(), study.ask()
    numbers.update(a=a.number, b=b.number)
    results = {}
    threads = [_in_thread(launcher, a, results)]
    _until(lambda: len(executor.calls) == 1)
    threads.append(_in_thread(launcher, b, results))
    _until(lambda: launcher.free._reserved == {"gpu0#1", "gpu0#2"})  # A holds its GPU's slots as they come free
    threads.append(_in_thread(launcher, c, results))
    time.sleep(0.3)
    assert [call[:2] for call in executor.calls] == [(a.number, "gpu0#1"), (b.number, "gpu0#2")]
    release_b.set()
    for thread in threads:
        thread.join(10)
    assert results == {a.number: 0.5, b.number: 0.5, c.number: 0.5}
    assert executor.calls[2] == (a.number, "gpu0", [])  # alone: both slots held, before C ran
    assert executor.calls[3][0] == c.number and executor.most_busy_alone == 1


def test_two_trials_out_of_memory_on_one_gpu_run_alone_one_after_the_other(tmp_path):
    """Fake GPU (id 0, two trials): both packed trials run out of memory at once; each runs again
    alone, in turn, and neither waits for a slot the other holds."""
    both = threading.Barrier(2, timeout=10)

    def script(job, slot):
        if "#" in slot:
            both.wait()
            return OOM_PACKED
        time.sleep(0.05)
        return TrialOutcome("COMPLETE", 0.6)

    launcher, study, executor = _packed(tmp_path, script)
    trials, results = [study.ask(), study.ask()], {}
    threads = [_in_thread(launcher, t, results) for t in trials]
    for thread in threads:
        thread.join(10)
    assert results == {t.number: 0.6 for t in trials}
    alone = [call for call in executor.calls if call[1] == "gpu0"]
    assert sorted(n for n, _, _ in alone) == [t.number for t in trials] and all(free == [] for _, _, free in alone)
    assert executor.most_busy_alone == 1


def test_a_packed_trial_out_of_memory_steps_aside_for_its_run_alone(trial_job, monkeypatch):
    """The trial process's half, in-process on a fake packed GPU (no GPU here: a share in the
    environment, and the error class CUDA's allocator raises on the first `train`): no retry at half
    the batch, an outcome marked `oom_packed`, and an MLflow run that no longer counts as the
    trial's (the re-run alone makes the trial's run)."""
    import torch

    from orchestrator.execution.slots import GPU_SHARE
    from orchestrator.tracking.client import Tracker
    from orchestrator.training import trial as trial_mod

    job, _ = trial_job
    calls = []

    def train(*args, **kwargs):
        calls.append(kwargs["per_device_batch_size"])
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")

    monkeypatch.setattr(trial_mod.loop, "train", train)
    monkeypatch.setenv(GPU_SHARE, "0.5")
    outcome = trial_mod.run_trial(job)
    assert (outcome.state, outcome.attrs, calls) == ("FAIL", {"oom_packed": True}, [16])
    assert "sharing the GPU (0.5 of it) at per-device batch 16" in outcome.reason
    cfg = from_dict(job.config)
    tracker = Tracker(cfg.tracking.uri, cfg.experiment_name, cfg.tracking.artifact_location)
    run = tracker.client.get_run(outcome.run_id)
    assert run.info.status == "FAILED" and run.data.tags["orchestrator_role"] == "packed_attempt"
    assert job.number not in tracker.trial_runs(cfg.study_name)
