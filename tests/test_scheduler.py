"""Slots and child-process bookkeeping. GPU lists are given explicitly (`available=`): there is no
GPU here, so a list of device ids stands in for what `torch.cuda.device_count()` reports there."""

import signal
from pathlib import Path

import pytest

from orchestrator.scheduler import SlotError, command, exit_reason, make_slots, run_child


def test_one_slot_per_gpu_pinned_with_cuda_visible_devices():
    slots = make_slots("all", available=[0, 1, 2, 3])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "2", "3"]
    assert [s.gpus for s in make_slots("0,1,3", available=[0, 1, 2, 3])] == [(0,), (1,), (3,)]


def test_gpus_per_trial_groups_devices_for_a_multi_process_launch():
    slots = make_slots("all", gpus_per_trial=2, available=[0, 1, 2, 3, 4])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1", "2,3"]
    assert all(s.processes == 2 for s in slots)
    cmd = command(slots[0], Path("job.json"))
    assert "--multi_gpu" in cmd and cmd[cmd.index("--num_processes") + 1] == "2"


def test_cpu_workers_split_the_cores():
    import os

    slots = make_slots(None, workers=2, available=[])
    assert len(slots) == 2 and all(s.cpu for s in slots)
    assert all(int(s.env["OMP_NUM_THREADS"]) == max(1, (os.cpu_count() or 1) // 2) for s in slots)
    assert all(s.env["CUDA_VISIBLE_DEVICES"] == "" for s in slots)
    cpu_launch = command(make_slots("none", gpus_per_trial=2, available=[0])[0], Path("j.json"))
    assert cpu_launch[1:3] == ["-m", "torch.distributed.run"]  # accelerate's --cpu would run one process
    assert cpu_launch[cpu_launch.index("--nproc_per_node") + 1] == "2"


def test_bad_gpu_requests_are_clear_errors():
    with pytest.raises(SlotError, match=r"GPU\(s\) \[5\] not visible"):
        make_slots("0,5", available=[0, 1])
    with pytest.raises(SlotError, match="expected all, none or a list"):
        make_slots("first", available=[0])
    with pytest.raises(SlotError, match="gpus_per_trial=4 but only 2"):
        make_slots("all", gpus_per_trial=4, available=[0, 1])


def test_exit_reasons_name_the_signal():
    assert exit_reason(0) is None
    assert "SIGKILL" in exit_reason(-signal.SIGKILL) and "OOM-killer" in exit_reason(-signal.SIGKILL)
    assert exit_reason(-signal.SIGSEGV) == "trial process killed by SIGSEGV"
    assert exit_reason(3) == "trial process exited with code 3"


def test_run_child_forwards_events_and_keeps_the_rest_in_the_log(tmp_path, monkeypatch):
    import orchestrator.scheduler as sched

    script = tmp_path / "child.py"
    script.write_text("import sys\nprint('hello log')\nprint('@@orchestrator {\"type\": \"eval\", \"trial\": 1}')\n"
                      "sys.exit(3)\n")
    monkeypatch.setattr(sched, "command", lambda slot, job: [__import__("sys").executable, str(script)])
    events = []
    outcome = run_child(make_slots("none", available=[])[0], tmp_path / "job.json", tmp_path / "t.log", events.append)
    assert events == [{"type": "eval", "trial": 1}]
    assert (tmp_path / "t.log").read_text() == "hello log\n"
    assert outcome.returncode == 3 and "exited with code 3" in outcome.reason and "hello log" in outcome.reason
