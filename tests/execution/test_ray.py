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
    packed = ("abc123", pack(source))
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
        unpack(("../escape", pack(source)), tmp_path / "node")


@pytest.mark.parametrize("address, message", [("banana", "expected auto, HOST:PORT"),
                                              ("127.0.0.1:1", "nothing answers there"),
                                              ("ray://127.0.0.1:1", "nothing answers there")])
def test_an_address_where_no_cluster_answers_is_reported_in_seconds(address, message):
    with pytest.raises(ExecutorError, match=message):
        _reachable(address)
