"""Slots: the devices a trial gets on this machine.

A slot is one GPU (or `gpus_per_trial` GPUs for a multi-process Accelerate launch), a share of
one GPU (`search.trials_per_gpu`: N trials packed side by side on it), or, on CPU, a worker with
its share of the cores. A trial in a slot is pinned to it with `CUDA_VISIBLE_DEVICES` (and its
thread count); a packed trial also learns its share of the GPU (`GPU_SHARE`), caps its memory to
it and plans its batch for it. A packed trial that runs out of memory all the same is re-run
alone, in its GPU's `whole` slot, while the driver holds every sibling slot of that GPU.

How many trials a GPU holds (`decide_trials_per_gpu`) and how many CPU trials run at once
(`cpu_workers`) are decided here from what is known: the study's cached batch-size probes, and
the CPU measurement of `benchmarks/workers.py`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace


class SlotError(ValueError):
    pass


# A packed trial's share of its GPU, in its environment (a float: 0.5 for one of two trials).
GPU_SHARE = "ORCHESTRATOR_GPU_SHARE"
# Of a shared GPU's memory, what the packed trials' allocators may hold together: each process's
# CUDA context (some hundreds of MiB) lies outside the allocator's cap and needs the rest.
PACKED_MEMORY = 0.95
# CPU threads per trial that finished the same study sooner on a 2-core machine, `--workers auto`'s
# rule: 2 trials x 1 thread took 112 s for 4 trials, 1 trial x 2 threads 334 s
# (benchmarks/workers.py; benchmarks/results/perf/workers-cpu.json, 2026-12-07). Measured on a
# machine shared with other work (load average about 8), where more processes also win more of
# the CPU; rerun the benchmark on a quiet machine before trusting the size of the gap. Unmeasured,
# this was 2.
THREADS_PER_TRIAL = 1


@dataclass(frozen=True)
class Slot:
    name: str
    processes: int = 1  # >1: an Accelerate multi-process launch (DDP; gloo on CPU)
    gpus: tuple[int, ...] = ()
    threads: int | None = None  # CPU threads per process
    env: dict = field(default_factory=dict)
    share: float = 1.0  # of its GPU: 1/N where N trials are packed on it

    @property
    def cpu(self) -> bool:
        return not self.gpus

    @property
    def group(self) -> str:
        """The whole device's name, which the packed slots on it share ("gpu0" for "gpu0#2")."""
        return self.name.partition("#")[0]


def whole(slot: Slot) -> Slot:
    """The slot that has a packed slot's GPU to itself: where an out-of-memory trial is re-run alone."""
    return replace(slot, name=slot.group, share=1.0, env={k: v for k, v in slot.env.items() if k != GPU_SHARE})


def visible_gpus() -> list[int]:
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def make_slots(gpus: str | None, workers: int | str = 1, gpus_per_trial: int = 1,
               available: list[int] | None = None, trials_per_gpu: int = 1) -> list[Slot]:
    """`gpus`: None or "all" (every visible GPU), "0,1,3", or "none"/"cpu" to force the CPU.
    `workers`: CPU trials at once, or "auto" (`cpu_workers`). `trials_per_gpu`: N > 1 packs N
    single-GPU trials on each GPU, in slots named gpu0#1 ... gpu0#N."""
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
        check_packing(trials_per_gpu, gpus_per_trial)
        if len(chosen) < gpus_per_trial:
            raise SlotError(f"search.gpus_per_trial={gpus_per_trial} but only {len(chosen)} GPU(s) chosen")
        groups = [tuple(chosen[i:i + gpus_per_trial]) for i in range(0, len(chosen) - gpus_per_trial + 1,
                                                                      gpus_per_trial)]
        slots = [Slot(f"gpu{','.join(map(str, g))}", gpus_per_trial, g,
                      env={"CUDA_VISIBLE_DEVICES": ",".join(map(str, g))}) for g in groups]
        if trials_per_gpu == 1:
            return slots
        share = 1 / trials_per_gpu
        return [replace(s, name=f"{s.name}#{k}", env={**s.env, GPU_SHARE: repr(share)}, share=share)
                for s in slots for k in range(1, trials_per_gpu + 1)]
    workers = cpu_workers(workers)
    # Split the cores between the workers (and a multi-process trial's processes) so that
    # concurrent trials do not oversubscribe the CPU.
    threads = max(1, (os.cpu_count() or 1) // (workers * gpus_per_trial))
    env = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return [Slot(f"cpu{i}", gpus_per_trial, (), threads, env) for i in range(workers)]


AUTO_MOST = 8  # auto: a trial process holds 1.5-3 GB and a search learns from finished trials: not 64 at once
TRIAL_MEMORY = 3 * 2**30  # auto: host memory a CPU trial of a base-sized encoder may take (peak RSS, measured ~3 GB)


def cpu_workers(workers: int | str, cores: int | None = None, memory: int | None = None) -> int:
    """CPU trials at once: `workers` as given, or for "auto" one per `THREADS_PER_TRIAL` cores,
    at most `AUTO_MOST` and as many as the available host memory holds at `TRIAL_MEMORY` each."""
    if workers == "auto":
        import psutil

        by_memory = (memory if memory is not None else psutil.virtual_memory().available) // TRIAL_MEMORY
        return max(1, min((cores or os.cpu_count() or 1) // THREADS_PER_TRIAL, AUTO_MOST, by_memory))
    if not isinstance(workers, int) or workers < 1:
        raise SlotError(f"--workers: expected a number >= 1 or auto, found {workers!r}")
    return workers


def check_packing(trials_per_gpu: int, gpus_per_trial: int) -> None:
    if trials_per_gpu < 1:
        raise SlotError(f"search.trials_per_gpu: must be auto or >= 1, found {trials_per_gpu}")
    if trials_per_gpu > 1 and gpus_per_trial > 1:
        raise SlotError(f"search.trials_per_gpu={trials_per_gpu} packs trials on one GPU, but "
                        f"search.gpus_per_trial={gpus_per_trial} spreads each trial over several; set "
                        f"search.trials_per_gpu=1 (or auto), or search.gpus_per_trial=1")


# ---------------------------------------------------------------- how many trials a GPU holds

def probe_peak(entry: dict, batch_size: int) -> float | None:
    """The peak memory (bytes) a cached batch-size probe predicts for `batch_size`: a straight line
    (fixed cost: weights, gradients, optimizer state; plus a cost per row) fitted by least squares
    through its measurements (`training.probe.ProbeResult`: (size, peak, or None for out of
    memory)). One measured size: proportional through zero, an overestimate above it. Below the
    smallest size measured, that size's peak (memory only grows with the batch). None: nothing
    measured fits (not even batch 1)."""
    points = [(int(size), float(peak)) for size, peak in entry.get("measurements") or [] if peak is not None]
    if not points:
        return None
    below = [peak for size, peak in points if size <= batch_size]
    if not below:
        return min(points)[1]
    if len({size for size, _ in points}) == 1:
        size, peak = points[0]
        return peak * batch_size / size
    n = len(points)
    mean_x, mean_y = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    # Never under a peak measured at a smaller batch: a fit through the allocator's rounding may dip.
    return max(mean_y + max(0.0, slope) * (batch_size - mean_x), max(below))


def probe_allows(probes: list[dict], batch_size: int, memory_target: float) -> tuple[int, str] | None:
    """The most trials one GPU holds by the cached probes: the largest N such that N times every
    probe's predicted peak at `batch_size` stays under `memory_target` of that probe's GPU (the
    study's largest batch size: a packed trial must not have to shrink its batch). With the
    reason, in words; None when there is no probe to go by."""
    allowed, why = None, ""
    for entry in probes:
        total = entry.get("total_bytes") or 0
        if not total:
            continue
        peak = probe_peak(entry, batch_size)
        n = 1 if not peak else max(1, math.floor(memory_target * total / peak))
        if allowed is None or n < allowed:
            shown = "nothing fits" if not peak else f"{peak / 2 ** 30:.1f} GiB"
            allowed, why = n, (f"a cached probe predicts {shown} at batch {batch_size} on a "
                               f"{total / 2 ** 30:.1f} GiB GPU, memory_target {memory_target:g}")
    return None if allowed is None else (allowed, why)


def decide_trials_per_gpu(setting: int | str, probes: list[dict], batch_size: int, memory_target: float,
                          gpus_per_trial: int = 1) -> tuple[int, str]:
    """Trials per GPU for `search.trials_per_gpu` (N or "auto"), from the study's cached batch-size
    probes (their entries) and the largest batch size the study can pick. Returns (N, the line the
    search shows). auto: as many as the probes allow; 1 without a probe, or where a trial spans
    several GPUs. Raises `SlotError` for an N the setup cannot hold."""
    if setting != "auto":
        check_packing(setting, gpus_per_trial)
    if gpus_per_trial > 1:
        return 1, _per_gpu(1) + (" (auto: a trial spans several GPUs)" if setting == "auto" else "")
    allows = probe_allows(probes, batch_size, memory_target)
    if setting == "auto":
        if allows is None:
            return 1, _per_gpu(1) + " (auto: no probe yet)"
        return allows[0], f"{_per_gpu(allows[0])} (auto: {allows[1]})"
    if allows is not None and setting > allows[0]:
        raise SlotError(f"search.trials_per_gpu={setting}: the study's probes allow at most {allows[0]} ({allows[1]}); "
                        f"set search.trials_per_gpu={allows[0]} or auto, or lower the batch size")
    return setting, _per_gpu(setting) + " (search.trials_per_gpu)"


def _per_gpu(n: int) -> str:
    return f"{n} trial{'s' if n > 1 else ''} per GPU"
