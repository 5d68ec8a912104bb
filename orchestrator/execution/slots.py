"""Slots: the devices a trial gets on this machine.

A slot is one GPU (or `gpus_per_trial` GPUs for a multi-process Accelerate launch), or, on CPU, a
worker with its share of the cores. A trial in a slot is pinned to it with `CUDA_VISIBLE_DEVICES`
(and its thread count), so trials side by side never share a device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


class SlotError(ValueError):
    pass


@dataclass(frozen=True)
class Slot:
    name: str
    processes: int = 1  # >1: an Accelerate multi-process launch (DDP; gloo on CPU)
    gpus: tuple[int, ...] = ()
    threads: int | None = None  # CPU threads per process
    env: dict = field(default_factory=dict)

    @property
    def cpu(self) -> bool:
        return not self.gpus


def visible_gpus() -> list[int]:
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def make_slots(gpus: str | None, workers: int = 1, gpus_per_trial: int = 1,
               available: list[int] | None = None) -> list[Slot]:
    """`gpus`: None or "all" (every visible GPU), "0,1,3", or "none"/"cpu" to force the CPU."""
    available = visible_gpus() if available is None else available
    if gpus in (None, "all"):
        chosen = available
    elif gpus in ("none", "cpu", ""):
        chosen = []
    else:
        try:
            chosen = [int(g) for g in gpus.split(",")]
        except ValueError:
            raise SlotError(f"--gpus: expected all, none or a list like 0,1,3; found {gpus!r}") from None
        missing = [g for g in chosen if g not in available]
        if missing:
            raise SlotError(f"--gpus: GPU(s) {missing} not visible (visible: {available or 'none'})")
    if gpus_per_trial < 1:
        raise SlotError(f"search.gpus_per_trial: must be >= 1, found {gpus_per_trial}")
    if chosen:
        if len(chosen) < gpus_per_trial:
            raise SlotError(f"search.gpus_per_trial={gpus_per_trial} but only {len(chosen)} GPU(s) chosen")
        groups = [tuple(chosen[i:i + gpus_per_trial]) for i in range(0, len(chosen) - gpus_per_trial + 1,
                                                                      gpus_per_trial)]
        return [Slot(f"gpu{','.join(map(str, g))}", gpus_per_trial, g,
                     env={"CUDA_VISIBLE_DEVICES": ",".join(map(str, g))}) for g in groups]
    if workers < 1:
        raise SlotError(f"--workers: must be >= 1, found {workers}")
    # Split the cores between the workers (and a multi-process trial's processes) so that
    # concurrent trials do not oversubscribe the CPU.
    threads = max(1, (os.cpu_count() or 1) // (workers * gpus_per_trial))
    env = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return [Slot(f"cpu{i}", gpus_per_trial, (), threads, env) for i in range(workers)]
