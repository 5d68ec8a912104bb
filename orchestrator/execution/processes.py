"""Trial processes: running one trial in a child process, and stopping every running trial.

Every trial runs in its own child process (`python -m orchestrator.training.worker`), pinned to
its slot, so memory fragmentation or leaks never accumulate across trials and a process that
dies takes only its own trial with it. The same function runs it for the local executor and,
on whichever node Ray chose, for the Ray executor. The child speaks through its stdout: lines
starting with `job.EVENT` are events (JSON), the rest goes to its log. An event that asks
(`job.ask`) gets the driver's answer as one JSON line on the child's stdin.

`Spares` keeps the next trial's process ready: started while the slot's current trial runs, it
imports torch, transformers and MLflow (seconds of a small CPU) and waits for its job,
so a trial's fixed cost is its own loading only. Still one trial per process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orchestrator.config.secrets import scrub
from orchestrator.execution.job import ANSWERS, parse_event, text_before_event, without_study_secrets
from orchestrator.execution.slots import Slot

_log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(slot: Slot, job: Path, result: Path) -> list[str]:
    worker = ["-m", "orchestrator.training.worker", str(job), str(result)]
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


def spare_command() -> list[str]:
    return [sys.executable, "-m", "orchestrator.training.worker", "--wait"]


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
    """The running trials of a driver, so an interrupt can stop them all at once. Holds child
    processes (`subprocess.Popen`) and, for trials elsewhere, any handle with `terminate()`,
    `wait(timeout) -> bool` (ended) and `kill()`."""

    def __init__(self):
        self._running: set = set()

    def add(self, handle) -> None:
        self._running.add(handle)

    def discard(self, handle) -> None:
        self._running.discard(handle)

    def __len__(self) -> int:
        return len(self._running)

    def terminate_all(self, grace: float = 10.0) -> None:
        handles = [_ProcessGroup(h) if isinstance(h, subprocess.Popen) else h for h in list(self._running)]
        for handle in handles:
            handle.terminate()
        for handle in handles:
            if not handle.wait(grace):
                handle.kill()


class _ProcessGroup:
    """A child process and everything it started (an Accelerate launch's ranks)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def stop(self, grace: float) -> None:
        self.terminate()
        if not self.wait(grace):
            self.kill()

    def wait(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    """The child gets its own session: a Ctrl-C in the terminal reaches only the driver, which
    decides whether running trials finish or stop. Its stdin carries the driver's answers."""
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            errors="replace", start_new_session=True, preexec_fn=_die_with_parent)


def _environment(slot: Slot, secrets: dict[str, str] | None) -> dict[str, str]:
    return {**without_study_secrets(dict(os.environ), {}), **slot.env, **(secrets or {}), "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false", ANSWERS: "stdin"}


class Spares:
    """At most one idle trial process per slot, its imports done, waiting on its stdin for a job
    (`worker --wait`). Single-process slots only: a multi-process launch starts its ranks itself."""

    def __init__(self):
        self._idle: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def start(self, slot: Slot, secrets: dict[str, str] | None) -> None:
        if slot.processes != 1:
            return
        with self._lock:
            if slot.name in self._idle:
                return
            self._idle[slot.name] = _spawn(spare_command(), _environment(slot, secrets))

    def hand_over(self, slot: Slot, job: Path, result: Path) -> subprocess.Popen | None:
        """The slot's spare, given this job; None when there is none (or it died meanwhile)."""
        with self._lock:
            proc = self._idle.pop(slot.name, None)
        if proc is None:
            return None
        if proc.poll() is not None:  # it died while idle: this trial starts cold
            proc.stdout.close()
            return None
        try:
            proc.stdin.write(f"{job}\t{result}\n")  # stdin stays open: the trial's questions are answered on it
            proc.stdin.flush()
            return proc
        except OSError:  # it died while idle (BrokenPipeError): this trial starts cold
            _ProcessGroup(proc).stop(grace=1.0)
            return None

    def close(self) -> None:
        """No more trials: an idle process reads end-of-file and exits; one that does not is killed."""
        with self._lock:
            idle, self._idle = list(self._idle.values()), {}
        for proc in idle:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in idle:
            if not _ProcessGroup(proc).wait(5.0):
                _ProcessGroup(proc).kill()
                proc.wait()
            proc.stdout.close()


def run_child(slot: Slot, job: Path, result: Path, log_path: Path, on_event: Callable[[dict], dict | None],
              children: Children | None = None, secrets: dict[str, str] | None = None,
              spares: Spares | None = None, start_next: bool = True) -> ChildOutcome:
    """Run one trial process to its end; forward its events, keep its output in `log_path`.
    `on_event` returns the answer to an event that asks (None: no answer, the trial decides alone).

    `secrets` reach it through its environment; every line of its output is scrubbed of them
    before it is written to the log. With `spares`, the slot's spare runs the job if there is
    one, and the next trial's spare starts at once (unless `start_next` is False: no trial follows).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        proc = spares.hand_over(slot, job, result) if spares else None
        if proc is None:
            proc = _spawn(command(slot, job, result), _environment(slot, secrets))
        if spares and start_next:
            spares.start(slot, secrets)
        if children is not None:
            children.add(proc)
        tail: list[str] = []
        try:
            for line in proc.stdout:
                event = parse_event(line)
                if event is not None:
                    before = text_before_event(line)
                    if before:  # another writer's text that ran into the event's line
                        log.write(scrub(before) + "\n")
                    answer = handle_event(on_event, event)
                    # A question always gets an answer (empty: the trial decides alone). An event is
                    # one write, so it arrives whole; a trial whose question never did stops waiting
                    # after `job.ANSWER_WAIT_S`.
                    if event.get("ask"):
                        _answer(proc, answer, event.get("seq"))
                    continue
                line = scrub(line)
                log.write(line)
                tail = (tail + [line.rstrip()])[-5:]
            _close_stdin(proc)
            returncode = proc.wait()
        except BaseException:
            # Stopped while the trial runs (a cancelled Ray task gets KeyboardInterrupt here): stop
            # the trial's whole process group the polite way, so an Accelerate launch reaps its
            # ranks instead of leaving them on the GPUs.
            _ProcessGroup(proc).stop(grace=10.0)
            raise
        finally:
            _close_stdin(proc)
            if children is not None:
                children.discard(proc)
    reason = exit_reason(returncode)
    if reason and tail:
        reason += f"; last output: {' | '.join(t for t in tail if t)[-300:]}"
    if reason:
        reason += f"; full log: {log_path}"
    return ChildOutcome(returncode, reason)



def handle_event(on_event: Callable[[dict], dict | None], event: dict) -> dict | None:
    """`on_event(event)`; an error of the driver's own (its storage was busy, the trial was ended
    by another process meanwhile) is logged and costs this event, never the trial."""
    try:
        return on_event(event)
    except Exception:  # noqa: BLE001 - the trial goes on; the traceback is in the driver's log
        _log.exception("event %s of trial %s not handled", event.get("type"), event.get("trial"))
        return None


def _answer(proc: subprocess.Popen, answer: dict | None, seq: int | None) -> None:
    """One JSON line on the trial's stdin, naming the question it answers. A trial that died
    meanwhile is found by its exit code."""
    try:
        proc.stdin.write(json.dumps({**(answer or {}), "seq": seq}) + "\n")
        proc.stdin.flush()
    except (OSError, ValueError):  # BrokenPipeError, or stdin already closed
        pass


def _close_stdin(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
    except OSError:
        pass
