"""Slots and trial processes: which devices a trial gets, and running it in a child process.

A slot is one GPU (or `gpus_per_trial` GPUs for a multi-process Accelerate launch), or, on CPU, a
worker with its share of the cores. Every trial runs in its own child process, pinned with
`CUDA_VISIBLE_DEVICES`, so memory fragmentation or leaks never accumulate across trials and a
process that dies takes only its own trial with it. The child speaks to the driver through
its stdout: lines starting with `EVENT` are progress events (JSON), the rest goes to its log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from orchestrator.config.secrets import scrub

EVENT = "@@orchestrator "


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(slot: Slot, job: Path) -> list[str]:
    worker = ["-m", "orchestrator.worker", str(job)]
    if slot.processes == 1:
        return [sys.executable, *worker]
    if slot.cpu:
        # `accelerate launch --cpu` runs a single process whatever --num_processes says (its
        # multi-CPU path wants mpirun), so CPU ranks are started by torch's own launcher; the
        # Accelerator in each sees WORLD_SIZE > 1 and joins a gloo process group.
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node",
                str(slot.processes), "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *worker]
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(slot.processes),
            "--num_machines", "1", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
            "--multi_gpu", *worker]


@dataclass
class ChildOutcome:
    returncode: int
    reason: str | None  # None when the process exited 0


def exit_reason(returncode: int) -> str | None:
    if returncode == 0:
        return None
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of host memory? the OOM-killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"trial process killed by {name}{hint}"
    return f"trial process exited with code {returncode}"


def _load_libc():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not Linux: children may outlive a driver killed with -9
        return None


# Loaded up front: between fork and exec the child may only make a plain call, no imports.
_LIBC = _load_libc()
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the driver dies (even by kill -9), so no
    orphaned trial keeps writing to the stores after its study's driver is gone. Survives exec."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Children:
    """The live trial processes of a driver, so an interrupt can stop them all at once."""

    def __init__(self):
        self._procs: set[subprocess.Popen] = set()

    def add(self, proc: subprocess.Popen) -> None:
        self._procs.add(proc)

    def discard(self, proc: subprocess.Popen) -> None:
        self._procs.discard(proc)

    def __len__(self) -> int:
        return len(self._procs)

    def terminate_all(self, grace: float = 10.0) -> None:
        for proc in list(self._procs):
            _signal_group(proc, signal.SIGTERM)
        for proc in list(self._procs):
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_child(slot: Slot, job: Path, log_path: Path, on_event: Callable[[dict], None],
              children: Children | None = None, secrets: dict[str, str] | None = None) -> ChildOutcome:
    """Run one trial process to its end; forward its events, keep its output in `log_path`.

    The child gets its own session: a Ctrl-C in the terminal reaches only the driver, which
    decides whether running trials finish or stop. `secrets` reach it through its environment;
    every line of its output is scrubbed of them before it is written to the log.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **slot.env, **(secrets or {}), "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.Popen(command(slot, job), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, errors="replace", start_new_session=True, preexec_fn=_die_with_parent)
        if children is not None:
            children.add(proc)
        tail: list[str] = []
        for line in proc.stdout:
            if line.startswith(EVENT):
                try:
                    on_event(json.loads(line[len(EVENT):]))
                except (ValueError, KeyError):
                    pass
                continue
            line = scrub(line)
            log.write(line)
            tail = (tail + [line.rstrip()])[-5:]
        returncode = proc.wait()
        if children is not None:
            children.discard(proc)
    reason = exit_reason(returncode)
    if reason and tail:
        reason += f"; last output: {' | '.join(t for t in tail if t)[-300:]}"
    if reason:
        reason += f"; full log: {log_path}"
    return ChildOutcome(returncode, reason)


def emit(event: dict) -> None:
    """Called in the child: send a progress event to the driver."""
    print(EVENT + json.dumps(event), flush=True)
