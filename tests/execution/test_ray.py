"""The Ray executor's own pieces that need no cluster: shipping folders, checking an address.
(Trials on a real two-node cluster: tests/cluster/.)"""

import pytest

from orchestrator.execution.base import ExecutorError
from orchestrator.execution.ray import _reachable, pack, unpack


def test_a_folder_is_unpacked_once_per_node_under_its_key(tmp_path):
    source = tmp_path / "splits"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("alpha")
    (source / "sub" / "b.bin").write_bytes(bytes(range(256)))
    packed = ("abc123", [pack(source)])  # as a node gets it, the bytes in place of their object ref
    target = unpack(packed, tmp_path / "node")
    assert target == tmp_path / "node" / "abc123"
    assert (target / "a.txt").read_text() == "alpha" and (target / "sub" / "b.bin").read_bytes() == bytes(range(256))
    (target / "a.txt").write_text("a trial's cache written beside it")
    assert unpack(packed, tmp_path / "node") == target  # already there: kept, not unpacked again
    assert (target / "a.txt").read_text() == "a trial's cache written beside it"
    assert [p.name for p in (tmp_path / "node").iterdir()] == ["abc123"]  # no temporary folder left


def test_a_key_cannot_steer_the_unpacking_elsewhere(tmp_path):
    source = tmp_path / "s"
    source.mkdir()
    with pytest.raises(ValueError, match="outside"):
        unpack(("../escape", [pack(source)]), tmp_path / "node")


@pytest.mark.parametrize("address, message", [("banana", "expected auto, HOST:PORT"),
                                              ("127.0.0.1:1", "nothing answers there"),
                                              ("ray://127.0.0.1:1", "nothing answers there")])
def test_an_address_where_no_cluster_answers_is_reported_in_seconds(address, message):
    with pytest.raises(ExecutorError, match=message):
        _reachable(address)


class _Queue:
    def __init__(self):
        self.batches = []

    def put_nowait_batch(self, items):
        self.batches.append(list(items))


def test_a_trials_events_reach_the_driver_with_steps_thinned_out(monkeypatch):
    import orchestrator.execution.ray as ray_executor

    clock = [100.0]
    monkeypatch.setattr(ray_executor.time, "monotonic", lambda: clock[0])
    queue = _Queue()
    forward = ray_executor._Forward(queue)
    for step in range(1, 6):  # five steps within one poll interval
        forward({"type": "step", "trial": 0, "step": step})
    forward({"type": "eval", "trial": 0, "epoch": 1, "value": 0.5})
    clock[0] += 1
    forward({"type": "step", "trial": 0, "step": 6})
    forward.flush()
    assert queue.batches == [[{"type": "step", "trial": 0, "step": 1}],
                             [{"type": "step", "trial": 0, "step": 5}, {"type": "eval", "trial": 0, "epoch": 1,
                                                                        "value": 0.5}],
                             [{"type": "step", "trial": 0, "step": 6}]]


def test_packed_trials_ask_ray_for_a_share_of_a_gpu_in_groups_that_free_a_whole_one(monkeypatch):
    """Fake cluster (no Ray started, no GPU here): two nodes of 2 and 1 GPUs, 3 trials per GPU."""
    import types

    import orchestrator.execution.ray as ray_executor
    from orchestrator.execution.slots import SlotError

    nodes = [{"Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"GPU": 2, "CPU": 16}},
             {"Alive": True, "NodeManagerAddress": "10.0.0.2", "Resources": {"GPU": 1, "CPU": 16}}]
    monkeypatch.setattr(ray_executor, "connect", lambda address: {"GPU": 3, "CPU": 32})
    monkeypatch.setattr(ray_executor, "_ray", lambda: types.SimpleNamespace(nodes=lambda: nodes))
    executor = ray_executor.RayExecutor(None, 1, 1, trials_per_gpu=3)
    assert executor.request == {"num_gpus": 0.3333, "num_cpus": 1}  # three never ask for more than one GPU
    assert executor.whole == {"num_gpus": 1, "num_cpus": 1}
    assert len(executor.slots) == 9 and executor.slots[:4] == ["ray0#1", "ray0#2", "ray0#3", "ray1#1"]
    assert executor.siblings("ray1#1") == ["ray1#1", "ray1#2", "ray1#3"] and executor.alone("ray1#1") == "ray1"
    plain = ray_executor.RayExecutor(None, 1, 1)
    assert plain.slots == ["ray0", "ray1", "ray2"] and plain.request["num_gpus"] == 1
    with pytest.raises(SlotError, match=r"search\.trials_per_gpu=2"):
        ray_executor.RayExecutor(None, 2, 1, trials_per_gpu=2)
