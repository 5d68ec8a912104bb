"""Slots: GPU lists are given explicitly (`available=`): there is no GPU here, so a list of device
ids stands in for what `torch.cuda.device_count()` reports there. The same fake GPUs carry the
packing of trials (`search.trials_per_gpu`); its decision rule is driven with fake probe entries."""

import math
from pathlib import Path

import pytest

from orchestrator.execution.local import LocalExecutor
from orchestrator.execution.processes import command
from orchestrator.execution.slots import (
    AUTO_MOST,
    GPU_SHARE,
    THREADS_PER_TRIAL,
    TRIAL_MEMORY,
    SlotError,
    cpu_workers,
    decide_trials_per_gpu,
    make_slots,
    probe_peak,
    whole,
)


def test_one_slot_per_gpu_pinned_with_cuda_visible_devices():
    slots = make_slots("all", available=[0, 1, 2, 3])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "2", "3"]
    assert [s.gpus for s in make_slots("0,1,3", available=[0, 1, 2, 3])] == [(0,), (1,), (3,)]


def test_gpus_per_trial_groups_devices_for_a_multi_process_launch():
    slots = make_slots("all", gpus_per_trial=2, available=[0, 1, 2, 3, 4])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1", "2,3"]
    assert all(s.processes == 2 for s in slots)
    cmd = command(slots[0], Path("job.json"), Path("r.json"))
    assert "--multi_gpu" in cmd and cmd[cmd.index("--num_processes") + 1] == "2"


def test_cpu_workers_split_the_cores():
    import os

    slots = make_slots(None, workers=2, available=[])
    assert len(slots) == 2 and all(s.cpu for s in slots)
    assert all(int(s.env["OMP_NUM_THREADS"]) == max(1, (os.cpu_count() or 1) // 2) for s in slots)
    assert all(s.env["CUDA_VISIBLE_DEVICES"] == "" for s in slots)
    cpu_launch = command(make_slots("none", gpus_per_trial=2, available=[0])[0], Path("j.json"), Path("r.json"))
    assert cpu_launch[1:3] == ["-m", "torch.distributed.run"]  # accelerate's --cpu would run one process
    assert cpu_launch[cpu_launch.index("--nproc_per_node") + 1] == "2"


def test_bad_gpu_requests_are_clear_errors():
    with pytest.raises(SlotError, match=r"GPU\(s\) \[5\] not visible"):
        make_slots("0,5", available=[0, 1])
    with pytest.raises(SlotError, match="expected all, none or a list"):
        make_slots("first", available=[0])
    with pytest.raises(SlotError, match="gpus_per_trial=4 but only 2"):
        make_slots("all", gpus_per_trial=4, available=[0, 1])


# ---------------------------------------------------------------- trials packed on one GPU
# No GPU here: `available=[0, 1]` stands for two GPUs, and nothing is run on them.

GIB = 2 ** 30


def test_trials_per_gpu_packs_n_slots_on_each_gpu_each_told_its_share():
    """Fake GPUs (device ids 0 and 1; no GPU here)."""
    slots = make_slots("all", available=[0, 1], trials_per_gpu=2)
    assert [s.name for s in slots] == ["gpu0#1", "gpu0#2", "gpu1#1", "gpu1#2"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "0", "1", "1"]
    assert all(float(s.env[GPU_SHARE]) == 0.5 and s.share == 0.5 and s.processes == 1 for s in slots)
    assert [s.group for s in slots] == ["gpu0", "gpu0", "gpu1", "gpu1"]
    # --gpus 0,1 on a machine with three
    chosen = make_slots("0,2", available=[0, 1, 2], trials_per_gpu=3)
    assert [s.name for s in chosen] == ["gpu0#1", "gpu0#2", "gpu0#3", "gpu2#1", "gpu2#2", "gpu2#3"]
    assert math.isclose(float(chosen[0].env[GPU_SHARE]), 1 / 3)
    # The whole GPU, where an out-of-memory trial is re-run alone: no share in its environment.
    alone = whole(slots[1])
    assert (alone.name, alone.gpus, alone.share, alone.env) == ("gpu0", (0,), 1.0, {"CUDA_VISIBLE_DEVICES": "0"})
    # Unpacked slots stay as they were; on CPU there is no GPU to pack.
    assert [s.name for s in make_slots("all", available=[0, 1], trials_per_gpu=1)] == ["gpu0", "gpu1"]
    assert [s.name for s in make_slots("none", workers=2, available=[0], trials_per_gpu=4)] == ["cpu0", "cpu1"]


def test_the_local_executor_knows_each_packed_slots_siblings_and_its_whole_gpu():
    """Fake GPUs (device ids 0 and 1; no GPU here): no trial runs."""
    executor = LocalExecutor(make_slots("all", available=[0, 1], trials_per_gpu=2), spares=False)
    assert executor.slots == ["gpu0#1", "gpu0#2", "gpu1#1", "gpu1#2"]  # the whole GPUs are no slots of their own
    assert executor.siblings("gpu1#2") == ["gpu1#1", "gpu1#2"]
    assert executor.alone("gpu1#2") == "gpu1"
    plain = LocalExecutor(make_slots("all", available=[0, 1]), spares=False)
    assert (plain.siblings("gpu1"), plain.alone("gpu1")) == (["gpu1"], "gpu1")


def test_a_packed_slot_tells_its_trial_its_share(monkeypatch):
    from orchestrator.training.trial import gpu_share

    slot = make_slots("all", available=[0], trials_per_gpu=4)[0]
    monkeypatch.setenv(GPU_SHARE, slot.env[GPU_SHARE])
    assert gpu_share() == 0.25
    for unpacked in ("1", "", "banana", "0"):
        monkeypatch.setenv(GPU_SHARE, unpacked)
        assert gpu_share() == 1.0


def test_packing_a_trial_that_spans_several_gpus_is_refused():
    with pytest.raises(SlotError, match=r"search\.trials_per_gpu=2 packs trials.*gpus_per_trial=2"):
        make_slots("all", gpus_per_trial=2, trials_per_gpu=2, available=[0, 1])
    with pytest.raises(SlotError, match=r"search\.trials_per_gpu=2"):
        decide_trials_per_gpu(2, [], 16, 0.9, gpus_per_trial=2)
    assert decide_trials_per_gpu("auto", [], 16, 0.9, gpus_per_trial=2)[0] == 1


def _probe(fixed_gib: float, per_row_gib: float, sizes=(1, 2, 4, 8, 16, 32, 64), total_gib: float = 80) -> dict:
    """A cached probe entry as `training.probe.ProbeResult.to_dict` writes it, of a straight-line
    memory use; sizes past the GPU are out of memory (None)."""
    total = int(total_gib * GIB)
    peaks = [(s, int((fixed_gib + per_row_gib * s) * GIB)) for s in sizes]
    return {"batch_size": max(s for s, p in peaks if p <= 0.9 * total), "peak_bytes": 0, "total_bytes": total,
            "target": 0.9, "measurements": [(s, p if p <= total else None) for s, p in peaks]}


def test_auto_packs_as_many_trials_as_the_cached_probes_fit_under_the_memory_target():
    # 2 GiB of weights and optimizer state, 0.25 GiB a row: batch 32 peaks at 10 GiB; 0.9 of 80 GiB is 72.
    entry = _probe(2, 0.25)
    assert probe_peak(entry, 32) == pytest.approx(10 * GIB, rel=1e-6)
    assert probe_peak(entry, 100) == pytest.approx(27 * GIB, rel=1e-6)  # beyond the measurements: the line
    n, why = decide_trials_per_gpu("auto", [entry], 32, 0.9)
    assert n == 7 and why.startswith("7 trials per GPU (auto: a cached probe predicts 10.0 GiB at batch 32")
    # Every probe must fit: a longer max_length's probe (a steeper line) decides.
    n, _ = decide_trials_per_gpu("auto", [entry, _probe(2, 1.0)], 32, 0.9)
    assert n == math.floor(72 / 34)
    assert decide_trials_per_gpu("auto", [], 32, 0.9) == (1, "1 trial per GPU (auto: no probe yet)")
    # One that not even batch 1 fits: no packing.
    assert decide_trials_per_gpu("auto", [{"total_bytes": 80 * GIB, "measurements": [(1, None)]}], 32, 0.9)[0] == 1
    # A peak above the target at the study's batch: one trial, never zero.
    assert decide_trials_per_gpu("auto", [_probe(2, 3.0)], 32, 0.9)[0] == 1


def test_a_peak_is_never_predicted_below_what_was_measured():
    one = {"total_bytes": 80 * GIB, "measurements": [(16, 8 * GIB)]}
    assert probe_peak(one, 8) == 8 * GIB  # below the smallest size measured: that size's peak
    assert probe_peak(one, 32) == 16 * GIB  # one size only: proportional, an overestimate
    bent = {"total_bytes": 80 * GIB, "measurements": [(1, 2 * GIB), (2, 2 * GIB), (4, 6 * GIB), (8, 6 * GIB)]}
    assert probe_peak(bent, 4) >= 6 * GIB


def test_more_trials_per_gpu_than_the_probes_allow_is_refused_naming_the_setting():
    entry = _probe(2, 0.25)
    with pytest.raises(SlotError, match=r"search\.trials_per_gpu=8: the study's probes allow at most 7"):
        decide_trials_per_gpu(8, [entry], 32, 0.9)
    assert decide_trials_per_gpu(7, [entry], 32, 0.9) == (7, "7 trials per GPU (search.trials_per_gpu)")
    assert decide_trials_per_gpu(3, [], 32, 0.9)[0] == 3  # no probe yet: the user's word, and re-runs alone on OOM


def test_the_search_reads_the_studys_cached_probes_without_creating_anything(tmp_path):
    """The check behind exit 2: `search.trials_per_gpu` against the probes a study has cached,
    read before anything is created. (Fake probe entries; no GPU here.)"""
    from orchestrator.config import from_dict
    from orchestrator.search.preflight import trials_per_gpu
    from orchestrator.search.study import PROBE_PREFIX, create_study, make_storage

    def cfg(setting):
        return from_dict({"name": "packed", "data": {"train": "train.csv"}, "model": {"name_or_path": "m"},
                          "training": {"batch_size": 16}, "space": {"batch_size": {"choices": [16, 32]}},
                          "search": {"storage": f"sqlite:///{tmp_path / 'optuna.db'}", "trials_per_gpu": setting,
                                     "metric": "val_accuracy", "direction": "maximize"}})

    assert trials_per_gpu(cfg("auto")) == (1, "1 trial per GPU (auto: no probe yet)")
    assert not (tmp_path / "optuna.db").exists()
    study = create_study(cfg("auto"), make_storage(cfg("auto").search))
    study.set_user_attr(f"{PROBE_PREFIX}abc", _probe(2, 0.25))
    assert trials_per_gpu(cfg("auto"))[0] == 7  # at the largest batch the space can pick, 32
    with pytest.raises(SlotError, match=r"search\.trials_per_gpu=9"):
        trials_per_gpu(cfg(9))


def test_workers_auto_takes_one_trial_per_measured_threads():
    plenty = 64 * 2**30
    assert cpu_workers("auto", cores=2, memory=plenty) == max(1, 2 // THREADS_PER_TRIAL)
    assert cpu_workers("auto", cores=4, memory=plenty) == 4 // THREADS_PER_TRIAL
    assert cpu_workers("auto", cores=16, memory=plenty) == AUTO_MOST  # a search learns from finished trials
    assert cpu_workers("auto", cores=16, memory=7 * 2**30) == 7 * 2**30 // TRIAL_MEMORY  # as many as memory holds
    assert cpu_workers("auto", cores=1, memory=plenty) == cpu_workers("auto", cores=8, memory=0) == 1
    assert cpu_workers(3) == 3
    slots = make_slots("none", workers="auto", available=[])
    assert len(slots) == cpu_workers("auto")
    with pytest.raises(SlotError, match="--workers: expected a number >= 1 or auto"):
        make_slots(None, workers=0, available=[])
