"""The shared study: its storage, the trial budget, and trials whose driver died.

Several `search` processes (one per machine, or several on one) may drive one study. They agree
through the storage alone:
- the budget: a trial starts only under the study lock, and only while finished plus running
  trials are fewer than `n_trials`, so any number of processes together finish exactly
  `n_trials` and never run a trial twice;
- one-time work (creating the study and its MLflow parent run, preparing data, registering the
  champion) also happens under the lock, so it happens once;
- the dead: a trial whose driver died is marked FAIL and re-queued once with the same parameters,
  found by the driver's pid on this machine and by Optuna heartbeats from any other.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from orchestrator import paths
from orchestrator.config import ExperimentConfig, SearchConfig

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
DRIVER = f"{socket.gethostname()}:{os.getpid()}"


def requeue_once(study: optuna.Study, trial: FrozenTrial) -> bool:
    """A dead process says nothing about the parameters: run them once more, and only once.
    Callers hold the study lock, so two processes never both re-queue the same trial."""
    if "retry_of" in trial.user_attrs:
        return False
    if any(t.user_attrs.get("retry_of") == trial.number for t in study.get_trials(deepcopy=False)):
        return False
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return True


def make_storage(cfg: SearchConfig) -> RDBStorage:
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5, and what we need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(paths.absolute_sqlite(cfg.storage), heartbeat_interval=cfg.heartbeat_interval,
                          grace_period=cfg.heartbeat_grace_period, heartbeat_stale_trial_callback=requeue_once)


def create_study(cfg: ExperimentConfig, storage: RDBStorage) -> optuna.Study:
    s = cfg.search
    n = s.n_trials or 20
    if s.sampler == "tpe":
        # With a small budget, TPE's default 10 random start-up trials would be the whole study.
        sampler = optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=max(2, min(10, n // 2)))
    else:
        sampler = optuna.samplers.RandomSampler(seed=s.seed)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials,
                                          n_warmup_steps=s.pruner_warmup_epochs)
              if s.pruner == "median" else optuna.pruners.NopPruner())
    return optuna.create_study(study_name=cfg.study_name, storage=storage, sampler=sampler, pruner=pruner,
                               direction=s.direction, load_if_exists=True)


class StorageError(RuntimeError):
    """The study's storage cannot be reached (server down, wrong address or password)."""


class StudyLock:
    """A lock every process on the study's storage shares: a file lock beside a SQLite database
    (SQLite is one machine's), a session advisory lock on PostgreSQL. Use: `with lock(): ...`."""

    def __init__(self, storage_url: str, study_name: str):
        url = sqlalchemy.make_url(paths.absolute_sqlite(storage_url))
        self._shown = url.render_as_string(hide_password=True)
        self._in_process = threading.Lock()  # threads of one driver queue here first
        self._file = self._engine = None
        if url.get_backend_name() == "sqlite":
            self._file = Path(f"{url.database}.lock")
        elif url.get_backend_name() == "postgresql":
            self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
            self._key = f"orchestrator:{study_name}"
        else:
            raise ValueError(f"no study lock for {url.get_backend_name()} storages")

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._in_process:
            if self._file is not None:
                self._file.parent.mkdir(parents=True, exist_ok=True)
                with open(self._file, "a") as f:
                    fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or the process dies
                    yield
            else:
                # Closing the connection releases the lock, also when this process dies.
                try:
                    conn = self._engine.connect()
                except sqlalchemy.exc.OperationalError as e:
                    raise StorageError(f"search.storage: cannot reach {self._shown}: "
                                       f"{str(e.orig).strip()[:300]}") from None
                with conn:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": self._key})
                    try:
                        yield
                    finally:
                        conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": self._key})


def claim(study: optuna.Study, n_trials: int | None, lock: StudyLock) -> optuna.Trial | None:
    """The next trial for this process (a re-queued one first), or None while finished plus
    running trials already fill `n_trials`."""
    with lock():
        if n_trials is not None:
            taken = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
            if len(taken) >= n_trials:
                return None
        with warnings.catch_warnings():  # "heartbeats are meant for optimize": `heartbeat` below beats
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            trial = study.ask()
        trial.set_user_attr("driver", DRIVER)
        return trial


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


@contextmanager
def heartbeat(storage: RDBStorage, trial_id: int) -> Iterator[None]:
    """Beat for a trial while its process runs, as Optuna's own optimize loop does: a driver on
    another machine takes a trial without a beat for `search.heartbeat_grace_period` for dead."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception as e:  # noqa: BLE001 - a missed beat is not worth failing a trial over
                log.warning("heartbeat for trial id %s not recorded: %s", trial_id, e)
            if stop.wait(storage.get_heartbeat_interval()):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def recover_dead_trials(study: optuna.Study, lock: StudyLock, close_run: Callable[[FrozenTrial, str], None],
                        everyone_here: bool = False) -> None:
    """Mark FAIL what dead drivers left RUNNING, re-queue each once, close its MLflow run with
    `close_run(trial, reason)`. `everyone_here`: this process is stopping, so its own RUNNING
    trials count as dead too."""
    host = socket.gethostname()
    with lock():
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        left_running = {t.number for t in running}
        for t in running:  # this machine's dead drivers, known by their pid at once
            driver = t.user_attrs.get("driver", "")
            name, _, pid = driver.partition(":")
            mine = everyone_here and driver == DRIVER
            if not (mine or (name == host and pid.isdigit() and not _alive(int(pid)))):
                continue
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            close_run(t, "interrupted" if mine else f"its driver process {driver} died")
            requeue_once(study, t)
            left_running.discard(t.number)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # other machines': no heartbeat for the grace period
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if t.number in left_running:  # failed just now by fail_stale_trials
                close_run(t, f"no heartbeat from its driver {t.user_attrs.get('driver', '?')} "
                             f"within the grace period")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
