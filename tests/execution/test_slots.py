"""Slots: GPU lists are given explicitly (`available=`): there is no GPU here, so a list of device
ids stands in for what `torch.cuda.device_count()` reports there."""

from pathlib import Path

import pytest

from orchestrator.execution.processes import command
from orchestrator.execution.slots import SlotError, make_slots


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
