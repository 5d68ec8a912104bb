"""The probe's search against a deterministic memory model.

There is no GPU here: `FakeDevice` stands in for one. Its peak memory is fixed + per-row cost,
and past its capacity it raises the same error class a CUDA allocator raises (a fake OOM).
"""

import math

import pytest
import torch

from orchestrator.training.probe import find_max_batch, is_oom, plan_batch

GB = 1024**3


class FakeDevice:
    def __init__(self, total=80 * GB, fixed=3 * GB, per_row=0.37 * GB, oom_above=None):
        self.total, self.fixed, self.per_row, self.oom_above = total, fixed, per_row, oom_above
        self.calls = []

    def measure(self, batch_size: int) -> int:
        self.calls.append(batch_size)
        peak = int(self.fixed + self.per_row * batch_size)
        if peak > self.total or (self.oom_above and batch_size > self.oom_above):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return peak


@pytest.mark.parametrize("per_row_gb", [0.011, 0.37, 1.9, 13.0])
def test_finds_the_exact_largest_batch_under_the_target_in_few_steps(per_row_gb):
    dev = FakeDevice(per_row=per_row_gb * GB)
    result = find_max_batch(dev.measure, dev.total, target=0.9)
    exact = max(b for b in range(0, 20000) if dev.fixed + dev.per_row * b <= 0.9 * dev.total)
    assert result.batch_size == exact
    assert result.peak_bytes <= 0.9 * dev.total
    assert len(dev.calls) <= 2 * math.ceil(math.log2(exact + 1)) + 2, dev.calls
    assert len(set(dev.calls)) == len(dev.calls), "never measures a size twice"


def test_out_of_memory_is_too_big_not_a_crash():
    dev = FakeDevice(oom_above=37)  # allocator fragmentation: OOM before the memory model says so
    result = find_max_batch(dev.measure, dev.total)
    assert result.batch_size == 37
    assert (38, None) in result.measurements  # the size just above was measured, and it failed
    assert dict(result.measurements)[37] is not None


def test_nothing_fits_gives_zero_and_other_errors_propagate():
    dev = FakeDevice(fixed=79 * GB)
    assert find_max_batch(dev.measure, dev.total).batch_size == 0

    def broken(_):
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError):
        find_max_batch(broken, 80 * GB)


def test_oom_recognition():
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory."))
    assert is_oom(RuntimeError("CUDA error: out of memory."))
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"))
    assert not is_oom(RuntimeError("expected scalar type Float"))


def test_plan_batch_accumulates_above_the_probed_maximum():
    assert plan_batch(32, None) == (32, 1)  # CPU: no probe, as configured
    assert plan_batch(32, 48) == (32, 1)
    assert plan_batch(128, 48) == (32, 4)
    assert plan_batch(100, 40) == (32, 4)  # effective 128 >= requested 100
