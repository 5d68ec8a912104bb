"""The Ray executor: each trial as a Ray task that asks for `search.gpus_per_trial` GPUs (or
`search.cpus_per_trial` CPUs on a cluster without GPUs); Ray places it on any node.

On that node the task runs the very same trial process as the local executor
(`processes.run_child`), so a crash, leak or OOM still takes down only its trial. What the trial
needs travels through Ray's object store, since nodes share no disk: the saved splits (with their
tokenization cache) and the model's files, each put once per study run and unpacked on a node
into a folder named by its fingerprint. The stores' real URLs travel as a task argument, never in
a file; the study's storage does not travel at all (the driver alone talks to it). Events come
back through a Ray queue; a trial's questions ("prune now?") are answered through a mailbox actor
on the driver's node; the trial's log comes back with its outcome. The checkpoint goes to the trial run's MLflow artifacts, from which the driver fetches
the champion's.

With `search.trials_per_gpu` N > 1 a trial asks for 1/N of a GPU, and Ray packs N on one; its
process caps its memory to that share. The slots come in groups of N (ray0#1 ... ray0#N): a
packed trial that runs out of memory is re-run asking for a whole GPU (slot ray0) while the
driver holds its whole group, so the cluster runs as many trials at once as before.

Ray does not retry a trial (`max_retries=0`): a worker or node lost mid-trial makes the outcome
`lost`, and the driver applies the study's own rule (FAIL, re-queued once). An interrupt cancels
the running tasks (`ray.cancel(force=True)`), which kills their trial processes with them.
Past 400 lines: the driver's side and the node's side of a Ray trial (task, queue, mailbox,
packed folders) are one protocol, read and changed together.
"""

from __future__ import annotations

import io
import logging
import math
import os
import signal
import socket
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable

from orchestrator.config import paths
from orchestrator.config.secrets import redact, scrub
from orchestrator.execution.base import Executor, ExecutorError
from orchestrator.execution.job import ANSWER_WAIT_S, TrialJob, TrialOutcome
from orchestrator.execution.processes import handle_event
from orchestrator.execution.slots import GPU_SHARE, Slot, check_packing

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often a waiting slot thread forwards events and looks for its task's end
LOG_LIMIT = 4 << 20  # a trial log beyond this comes back as its last 4 MiB
# Ray's errors for a task whose worker, node or object went away: the trial is lost, not failed.
LOST = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError", "OwnerDiedError",
        "TaskCancelledError", "ObjectReconstructionFailedError", "ActorDiedError", "OutOfMemoryError")


def _ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError("search.executor=ray needs Ray: pip install 'orchestrator[cluster]' "
                            "(or pip install 'ray[default]')") from None
    return ray


def connect(address: str | None) -> dict:
    """Join the Ray cluster at `address` (`auto`, `host:port`, `ray://host:10001`; None: $RAY_ADDRESS,
    else a Ray started on this machine for this process). Returns its resources."""
    ray = _ray()
    # Without an address of its own (none, or auto) Ray joins the one in $RAY_ADDRESS: a bad one is
    # that variable's fault, and the message must say so, not blame --ray-address.
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if address and address != "auto":
        source = f"--ray-address {redact(address)}"
        _reachable(address)
    elif env and env != "auto":
        source = (f"the environment variable RAY_ADDRESS={redact(env)!r} (Ray reads it when --ray-address is auto "
                  f"or not given)")
        _reachable(env, source)
    else:
        source = "--ray-address auto"
    if not ray.is_initialized():
        # ray.init installs its own SIGTERM handler (sys.exit); the search's must stay, so that a
        # SIGTERM stops trials and closes the study's records as a Ctrl-C does.
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False,
                     include_dashboard=False if not address else None)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ExecutorError(f"{source}: cannot join a Ray cluster: "
                                f"{scrub(str(e)).strip().splitlines()[-1][:300]} (start one with `ray start --head` "
                                f"or give the head's address)") from None
        finally:
            if threading.current_thread() is threading.main_thread():
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)
    return ray.cluster_resources()


def _reachable(address: str, source: str | None = None) -> None:
    """Ray waits about a minute for a head that does not answer; a command should know in seconds.
    `source`: where the address came from, for the message (default: --ray-address)."""
    source = source or f"--ray-address {address!r}"
    host_port = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not port.isdigit():
        raise ExecutorError(f"{source}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as e:
        raise ExecutorError(f"{source}: nothing answers there ({e.strerror or e}); start the head "
                            f"with `ray start --head` or check the address") from None


class RayExecutor(Executor):
    name = "ray"
    keeps_local_checkpoints = False

    def __init__(self, address: str | None, gpus_per_trial: int, cpus_per_trial: int, trials_per_gpu: int = 1):
        check_packing(trials_per_gpu, gpus_per_trial)
        resources = connect(address)
        nodes = [n for n in _ray().nodes() if n.get("Alive")]
        gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
        self.has_gpus = bool(gpus)
        self.packed = trials_per_gpu if gpus else 1  # trials per GPU
        if gpus:
            self.whole = {"num_gpus": gpus_per_trial, "num_cpus": cpus_per_trial}
            # Ray counts a GPU in 1/10000ths: rounded down, N shares never add up to more than one GPU.
            self.request = {**self.whole, "num_gpus": math.floor(10000 / self.packed) / 10000} if self.packed > 1 \
                else self.whole
            unit = f"{self.request['num_gpus']:g} GPU(s) and {cpus_per_trial} CPU(s)"
        else:
            self.request = self.whole = {"num_gpus": 0, "num_cpus": cpus_per_trial}
            unit = f"{cpus_per_trial} CPU(s)"
        # A trial runs on one node: count what fits on each (4 nodes of 1 GPU hold no 2-GPU trial).
        count = sum(min(int(n["Resources"].get("GPU", 0) // gpus_per_trial) * self.packed if gpus else 1 << 30,
                        int(n["Resources"].get("CPU", 0) // cpus_per_trial)) for n in nodes)
        if count < 1:
            raise ExecutorError(f"no node of the Ray cluster ({gpus:g} GPU(s), {cpus:g} CPU(s) on {len(nodes)} "
                                f"node(s)) has room for one trial of {unit} (search.gpus_per_trial, "
                                f"search.cpus_per_trial)")
        self.slots = [f"ray{i}" for i in range(count)] if self.packed == 1 else \
            [f"ray{i // self.packed}#{i % self.packed + 1}" for i in range(count)]
        self.hosts = sorted({n["NodeManagerAddress"] for n in nodes})
        self._packs: dict[tuple[str, str], object] = {}
        self._pack_lock = threading.Lock()
        self._events = self._mailbox = None

    def open(self, study_dir, secrets, children) -> None:
        super().open(study_dir, secrets, children)
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # On the driver's node: a queue on another node would make that node's loss every trial's.
        here = NodeAffinitySchedulingStrategy(_ray().get_runtime_context().get_node_id(), soft=True)
        self._events = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        self._mailbox = _ray().remote(num_cpus=0, scheduling_strategy=here)(Mailbox).remote()

    def siblings(self, slot: str) -> list[str]:
        group = slot.partition("#")[0]
        return [s for s in self.slots if s.partition("#")[0] == group]

    def alone(self, slot: str) -> str:
        return slot.partition("#")[0]

    def run(self, job: TrialJob, slot: str, on_event: Callable[[dict], None]) -> TrialOutcome:
        ray = _ray()
        data = self._pack(job.data_dir, Path(job.data_dir).name)
        model = self._pack(job.model_path, job.model_fingerprint)
        alone = self.packed == 1 or "#" not in slot  # a packed slot's group name: the whole GPU
        task = _remote(ray).options(**(self.whole if alone else self.request), name=f"trial-{job.number}")
        ref = task.remote(job.to_json(), data, model, self.secrets, self._events, self._mailbox,
                          1.0 if alone else 1 / self.packed)
        handle = _RayTask(ray, ref)
        self.children.add(handle)
        try:
            while not ray.wait([ref], timeout=POLL_S)[0]:
                self._forward(on_event)
            self._forward(on_event)
            try:
                answer = ray.get(ref)
            except ray.exceptions.RayError as e:
                kind = type(e.cause if isinstance(e, ray.exceptions.RayTaskError) and e.cause else e).__name__
                lost = any(name in type(e).__name__ for name in LOST) or "worker died" in str(e).lower()
                lines = scrub(str(e)).strip().splitlines() or [""]
                return TrialOutcome("FAIL", reason=f"Ray task {kind}: {lines[-1][:300]}", lost=lost)
        except BaseException:  # the driver itself failed or was stopped: the trial must not train on alone
            ray.cancel(ref, force=True)
            raise
        finally:
            self.children.discard(handle)
        self._keep_log(job, answer)
        if answer["result"] is not None:
            return TrialOutcome.from_json(answer["result"])
        return TrialOutcome("FAIL", reason=f"{answer['reason']} (on Ray node {answer['node']})", lost=True)

    def close(self) -> None:
        for actor in (self._events.actor if self._events is not None else None, self._mailbox):
            if actor is None:
                continue
            try:
                _ray().kill(actor)
            except _ray().exceptions.RayError as e:  # gone with its node already
                log.warning("Ray event actor not stopped: %s", scrub(str(e))[:300])
        self._events = self._mailbox = None
        self._packs.clear()

    def _forward(self, on_event: Callable[[dict], dict | None]) -> None:
        """Hand on the events waiting in the queue (any trial's: `on_event` routes by trial number),
        and post the answer to each that asks in the mailbox, where its trial waits for it. A queue
        that cannot be read costs the progress bar; a trial left unanswered decides alone."""
        from ray.util.queue import Empty

        try:
            events = self._events.get_nowait_batch(self._events.qsize())
        except Empty:
            return
        except _ray().exceptions.RayError as e:
            log.warning("progress events lost: %s", scrub(str(e))[:300])
            return
        for event in events:
            answer = handle_event(on_event, event)
            if event.get("ask"):  # answered whatever happened above: the trial waits for it
                try:
                    self._mailbox.post.remote(event.get("trial"), event.get("seq"), answer or {})
                except _ray().exceptions.RayError as e:
                    log.warning("trial %s: answer not posted: %s", event.get("trial"), scrub(str(e))[:300])

    def _pack(self, folder: str, key: str) -> tuple[str, list]:
        """A folder's files in the object store, once per study run, for nodes to unpack: (key,
        [ref]). The ref travels inside a list, so a node fetches the bytes only when it has not
        unpacked that key yet, and no worker holds a model's copy in its arguments for a whole trial."""
        ray = _ray()
        with self._pack_lock:
            if (folder, key) not in self._packs:
                self._packs[(folder, key)] = (key, [ray.put(pack(Path(folder)))])
            return self._packs[(folder, key)]

    def _keep_log(self, job: TrialJob, answer: dict) -> None:
        path = self.log_path(job)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"-- on Ray node {answer['node']}\n{answer['log']}")
        except OSError as e:  # the outcome counts; its log is a convenience
            log.warning("trial %s: its log could not be written to %s: %s", job.number, path, e)


_TASK = None


def _remote(ray):
    """`_run_on_node` as a Ray task: a fresh worker process per trial (`max_calls=1`), which exits
    after it, so nothing a trial leaves behind reaches the next; never retried by Ray."""
    global _TASK
    if _TASK is None:
        _TASK = ray.remote(max_retries=0, max_calls=1)(_run_on_node)
    return _TASK


class _RayTask:
    """A running trial's task, as `Children` stops it: cancelled, which stops its trial process."""

    def __init__(self, ray, ref):
        self.ray, self.ref = ray, ref

    def terminate(self) -> None:
        # Politely first: the task's `run_child` then stops the trial's process group with SIGTERM,
        # so an Accelerate launch reaps its ranks; `kill` (after the grace) ends the worker.
        self.ray.cancel(self.ref, force=False)

    def wait(self, timeout: float) -> bool:
        return bool(self.ray.wait([self.ref], timeout=timeout)[0])

    def kill(self) -> None:
        self.ray.cancel(self.ref, force=True)


class Mailbox:
    """Answers from the driver to trials' questions, by trial number and question number (a Ray
    actor on the driver's node). A trial polls `take` for its own; an answer that came too late
    for its question is dropped, never taken as the next one's."""

    def __init__(self):
        self.boxes: dict[int, dict[int, dict]] = {}

    def post(self, trial: int, seq: int, answer: dict) -> None:
        self.boxes.setdefault(trial, {})[seq] = answer

    def take(self, trial: int, seq: int) -> dict | None:
        box = self.boxes.get(trial, {})
        for stale in [s for s in box if s < seq]:
            del box[stale]
        return box.pop(seq, None)


ANSWER_POLL_S = 0.05


class _Forward:
    """A trial's events into the driver's queue: every epoch's score at once, but training steps
    (many a second on a GPU) at most once per `POLL_S`, the latest only: a remote call per step
    would cost more than the progress bar is worth. A question waits for its answer."""

    def __init__(self, queue, mailbox=None):
        self.queue, self.mailbox, self.pending, self.sent = queue, mailbox, [], 0.0

    def __call__(self, event: dict) -> dict | None:
        if event.get("type") == "step":
            self.pending = [e for e in self.pending if e.get("type") != "step"]
        self.pending.append(event)
        if event.get("type") != "step" or time.monotonic() - self.sent >= POLL_S:
            self.flush()
        if event.get("ask") and self.mailbox is not None:
            return self._answer(event.get("trial"), event.get("seq") or 0)
        return None

    def _answer(self, trial: int, seq: int) -> dict | None:
        import ray

        deadline = time.monotonic() + ANSWER_WAIT_S
        while time.monotonic() < deadline:
            try:
                answer = ray.get(self.mailbox.take.remote(trial, seq))
            except ray.exceptions.RayError as e:  # the driver's node is gone: nobody will answer
                print(f"no answer from the driver: {type(e).__name__}: {e}", flush=True)
                return None
            if answer is not None:
                return answer
            time.sleep(ANSWER_POLL_S)
        return None

    def flush(self) -> None:
        if self.pending:
            try:
                self.queue.put_nowait_batch(self.pending)
            except Exception as e:  # noqa: BLE001 - the driver's queue gone: progress is lost, not the trial
                print(f"progress events not sent: {type(e).__name__}: {e}", flush=True)
            self.pending, self.sent = [], time.monotonic()


def pack(folder: Path) -> bytes:
    """A folder as an uncompressed tar (model weights do not compress; speed matters more)."""
    buffer = io.BytesIO()
    # dereference: a Hugging Face cache snapshot is symlinks into ../../blobs, outside the folder.
    with tarfile.open(fileobj=buffer, mode="w", dereference=True) as tar:
        tar.add(folder, arcname=".")
    return buffer.getvalue()


def unpack(packed: tuple[str, list], root: Path) -> Path:
    """The packed folder (key, [ref or bytes]) under `root/<key>`, unpacked once per node
    (atomically: concurrent trials on one node never see half a folder)."""
    key, box = packed
    target = paths.inside(root, root / key)
    if (target / ".complete").exists():
        return target
    data = box[0] if isinstance(box[0], bytes) else _ray().get(box[0])
    tmp = target.with_name(f"{key}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        # The "data" filter refuses absolute paths, links out of the folder, devices (Python >= 3.10.12).
        tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    del data
    (tmp / ".complete").touch()
    try:
        os.replace(tmp, target)
    except OSError:  # another trial on this node unpacked it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


def node_root() -> Path:
    """Where a node keeps unpacked data, models and trial folders: $ORCHESTRATOR_NODE_DIR, else the temp folder."""
    return Path(os.environ.get("ORCHESTRATOR_NODE_DIR") or Path(tempfile.gettempdir()) / "orchestrator-node")


def _run_on_node(job_json: str, data: tuple, model: tuple, secrets: dict, events, mailbox=None,
                 share: float = 1.0) -> dict:
    """The Ray task: unpack what the trial needs, run its process as the local executor would,
    return its outcome and log. `share`: of its GPU, where trials are packed (`GPU_SHARE`)."""
    import ray

    from orchestrator.config.secrets import remember

    # This worker process runs this one trial (`max_calls=1`): the secrets in its environment are
    # what `scrub` blanks out of the trial's log, and what its trial process inherits.
    os.environ.update(secrets)
    for value in secrets.values():
        remember(value)
    root = node_root()
    job = TrialJob.from_json(job_json)
    work = root / "trials" / f"{uuid.uuid4().hex[:12]}-trial-{job.number}"
    work.mkdir(parents=True, exist_ok=True)
    # A checkpoint whose upload failed stays on the node, under its study's name.
    checkpoints = root / "checkpoints" / Path(job.checkpoint_dir).parent.name
    job = replace(job, data_dir=str(unpack(data, root / "data")), model_path=str(unpack(model, root / "models")),
                  checkpoint_dir=str(checkpoints), keep_local_checkpoint=False)
    (work / "job.json").write_text(job.to_json())
    gpus = tuple(int(g) for g in ray.get_gpu_ids())
    cpus = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    shared = {GPU_SHARE: repr(share)} if share < 1 else {}
    slot = Slot(f"ray:{ray.util.get_node_ip_address()}", max(1, len(gpus)), gpus, cpus,
                shared if gpus else {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(cpus),
                                     "MKL_NUM_THREADS": str(cpus)}, share if gpus else 1.0)
    from orchestrator.execution.processes import run_child

    result, log_file = work / "result.json", work / "trial.log"
    forward = _Forward(events, mailbox)
    try:
        child = run_child(slot, work / "job.json", result, log_file, forward, None, secrets)
        forward.flush()
        text = log_file.read_text(encoding="utf-8", errors="replace") if log_file.exists() else ""
        return {"result": result.read_text() if result.exists() else None, "reason": child.reason,
                "log": text[-LOG_LIMIT:], "node": ray.util.get_node_ip_address()}
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
