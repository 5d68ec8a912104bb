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
