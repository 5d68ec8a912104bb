"""The shared study: its storage, the trial budget, and trials whose driver died.

Several `search` processes (one per machine, or several on one) may drive one study. They agree
through the storage alone:
- the budget: a trial starts only under the study lock, and only while finished plus running
  trials are fewer than `n_trials`, so any number of processes together finish exactly
  `n_trials` and never run a trial twice;
- one-time work (creating the study and its MLflow parent run, preparing data, registering the
  champion) also happens under the lock, so it happens once;
- the dead: a trial whose driver died is marked FAIL and re-queued once with the same parameters,
  found by the driver's pid on this machine and by Optuna heartbeats from any other;
- no repeats: a trial's parameters are sampled under the lock, by a sampler seeded with the
  study's seed and the trial's number (so processes and resumed runs do not replay one sequence),
  and a sample that repeats a trial that is waiting, running or finished is discarded;
- the same input: the study records the fingerprints of its data and model, and a process with
  different ones is refused (`check_identity`).
"""

from __future__ import annotations

import copy
import fcntl
import logging
import os
import random
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from orchestrator.config import paths
from orchestrator.config import space
from orchestrator.config import ExperimentConfig, ParamSpace, SearchConfig, TrainingConfig
from orchestrator.config.secrets import redact, scrub
from orchestrator.data import DataError, fingerprint
from orchestrator.search.components import make_pruner, make_sampler
from orchestrator.search.confirm import CONFIRMS, SEED, searched
from orchestrator.search.objectives import FRONT as FRONT_TRIAL, STUDY as STUDY_TRIAL

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# The reason of a FAIL trial that has none recorded: Optuna fails a trial whose heartbeats stopped
# itself, after which no attribute can be added to it. Every other FAIL records its reason.
DIED = "its driver stopped sending heartbeats (its process or machine died)"
TAKEN = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)  # parameters a new trial must not repeat
DRIVER = f"{socket.gethostname()}:{os.getpid()}"
SAMPLE_ATTEMPTS = 50  # discarded repeats before a process decides the space is used up


# A dead process says nothing about the parameters: run them once more, and only once. Optuna's
# own callback, for trials it finds without heartbeats and for those this package finds dead.
with warnings.catch_warnings():  # "experimental" since Optuna 2.8; the deprecated alias is not
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    _RETRY = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
PROBE_PREFIX = "probe:"  # study user attrs caching a batch-size probe, by configuration and GPU


def retry_once(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Queue `trial`'s parameters again unless it is itself a retry or has one already; whether it
    was queued. Callers hold the study lock (Optuna's heartbeat check fails a trial only once).
    The retry starts with no user attrs: Optuna's callback would copy the dead trial's (its run,
    pid, fail reason, checkpoint), which are not the retry's."""
    if retried_from(trial) is not None:
        return False
    if any(retried_from(t) == trial.number for t in study.get_trials(deepcopy=False)):
        return False
    fresh = copy.deepcopy(trial)
    # What the trial is stays: a confirmation's re-run confirms the same trial on the same seed.
    fresh.user_attrs = {k: trial.user_attrs[k] for k in (CONFIRMS, SEED) if k in trial.user_attrs}
    _RETRY(study, fresh)
    return True


def retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's `heartbeat_stale_trial_callback`: a trial whose driver stopped beating runs once more."""
    retry_once(study, trial)


def retried_from(trial: FrozenTrial) -> int | None:
    """The number of the trial whose process died and which `trial` runs again, if it does."""
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8, and what the callback records
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def trial_record(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial `number` as the storage holds it now (what other threads and events have written)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def trial_id(storage: RDBStorage, study: optuna.Study, number: int) -> int:
    """The storage's id of trial `number`, through the storage's public lookups (Optuna keeps the
    id of a `Trial` private); heartbeats and attributes of another process's trial need it."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def make_storage(cfg: SearchConfig) -> RDBStorage:
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5, and what we need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(paths.absolute_sqlite(cfg.storage), heartbeat_interval=cfg.heartbeat_interval,
                          grace_period=cfg.heartbeat_grace_period, heartbeat_stale_trial_callback=retry_stale)


def create_study(cfg: ExperimentConfig, storage: RDBStorage) -> optuna.Study:
    s = cfg.search
    if s.direction is None:  # Optuna would take None for minimize: a config loaded without the tasks' rules
        raise ValueError("search.direction is unset: load the experiment with orchestrator.tasks.load_experiment, "
                         "which settles it from the task's metric")
    sampler = make_sampler(s, params=cfg.space)
    pruner = make_pruner(s, cfg.training.evals_per_epoch)
    return optuna.create_study(study_name=cfg.study_name, storage=storage, sampler=sampler, pruner=pruner,
                               direction=s.direction, load_if_exists=True)


def check_objective(study: optuna.Study, metric: str, direction: str) -> None:
    """Record what the study optimises, or refuse a process that optimises something else: values
    of two metrics, or one metric read both ways, do not rank. (Optuna keeps the direction the
    study was created with and ignores another one given later.)"""
    stored = "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"
    recorded = study.user_attrs.get("objective") or {"metric": metric, "direction": stored}
    if (recorded["metric"], recorded["direction"]) != (metric, direction) or stored != direction:
        name = study.study_name
        raise DataError(
            f"search.metric/search.direction: study {name!r} {recorded['direction']}s {recorded['metric']}, this "
            f"config {direction}s {metric}: their trials' values would not rank. Keep "
            f"search.metric={recorded['metric']} for this study, or start a new one (search.study_name={name}-2)")
    if "objective" not in study.user_attrs:
        study.set_user_attr("objective", recorded)


def check_evaluations(study: optuna.Study, training: TrainingConfig) -> None:
    """Record when a study's trials evaluate, or refuse a process whose trials would evaluate at
    other points or on other rows: the pruner compares trials evaluation by evaluation."""
    now = {"evals_per_epoch": training.evals_per_epoch, "eval_subsample": training.eval_subsample}
    recorded = study.user_attrs.get("evaluations")
    if recorded is None:
        # A study from before evaluations inside an epoch evaluated once an epoch, on every row.
        recorded = now if not study.get_trials(deepcopy=False) else {"evals_per_epoch": 1, "eval_subsample": None}
        study.set_user_attr("evaluations", recorded)
    changed = [f"training.{k}={recorded[k]}" for k in now if recorded.get(k) != now[k]]
    if changed:
        name = study.study_name
        raise DataError(f"{', '.join(f'training.{k}' for k in now if recorded.get(k) != now[k])}: study {name!r} "
                        f"evaluates its trials with {' '.join(changed)}, and its pruner compares trials evaluation "
                        f"by evaluation; keep {' '.join(changed)} for this study, or start a new one "
                        f"(search.study_name={name}-2)")


def strategy(cfg: ExperimentConfig) -> dict:
    """How the search samples and prunes, as a study records it for its trials."""
    s = cfg.search
    return {"sampler": s.sampler, "sampler_options": dict(s.sampler_options), "pruner": s.pruner,
            "pruner_options": dict(s.pruner_options), "pruner_warmup_epochs": s.pruner_warmup_epochs,
            "pruner_startup_trials": s.pruner_startup_trials}


def note_strategy(study: optuna.Study, cfg: ExperimentConfig) -> str | None:
    """Record the sampler and pruner from this trial on; a line saying what changed when a
    resumed study samples or prunes otherwise than before (allowed: e.g. random first, then tpe)."""
    now, history = strategy(cfg), list(study.user_attrs.get("strategies", []))
    if history and history[-1]["strategy"] == now:
        return None
    start = len(study.get_trials(deepcopy=False))
    history.append({"from_trial": start, "strategy": now})
    study.set_user_attr("strategies", history)
    if len(history) == 1:
        return None
    was = history[-2]["strategy"]
    changes = ", ".join(f"{k} {now[k]} (was {was.get(k)})" for k in now if was.get(k) != now[k])
    return f"from trial {start} on: {changes}"


def check_identity(study: optuna.Study, data: dict, model: dict, storage_shown: str) -> None:
    """Record what the study is made from, or refuse a process whose data or model differ: trials
    on different data are not comparable, and caches of the old data must not be used."""
    recorded_data, recorded_model = study.user_attrs.get("data"), study.user_attrs.get("model")
    if recorded_data is None:
        study.set_user_attr("data", data)
        study.set_user_attr("model", model)
        return
    changes = fingerprint.differences(recorded_data, data)
    if recorded_model is not None and recorded_model.get("fingerprint") != model["fingerprint"]:
        was, now = recorded_model.get("name_or_path"), model["name_or_path"]
        changes.append(f"the model changed ({was}" + (f" -> {now})" if was != now else ": its files differ)"))
    if changes:
        name = study.study_name
        raise DataError(
            f"study {name!r} was made from other input: {'; '.join(changes)}. Its trials are only comparable on "
            f"the input they were made from. To search the new input, start a new study "
            f"(search.study_name={name}-2); to discard the old one, run "
            f"`optuna delete-study --study-name {name} --storage {storage_shown}` and delete its folder under "
            f"search.work_dir.")


class SpaceExhausted(RuntimeError):
    """No configuration left that no trial has taken."""


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


@dataclass
class Sampling:
    """How `claim` draws a trial's parameters: the configured sampler, seeded by the study's seed
    and the trial's number, and what to do about a repeat."""

    space: dict[str, ParamSpace]
    defaults: TrainingConfig
    search: SearchConfig
    front: optuna.Study | None = None  # search.objectives: the multi-objective study that proposes (`objectives.py`)

    def propose(self, study: optuna.Study, repeat: bool) -> None:
        """With a front: its sampler draws the next trial's parameters (on every objective), and
        they are queued for the study, whose next `ask` takes them."""
        self.front.sampler = self.sampler(_next_number(study), repeat)
        with warnings.catch_warnings():  # "heartbeats are meant for optimize": the front's trials are never run
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            proposed = self.front.ask()
        self.sample(proposed)
        proposed.set_user_attr(STUDY_TRIAL, len(study.get_trials(deepcopy=False)))
        study.enqueue_trial(dict(proposed.params), user_attrs={FRONT_TRIAL: proposed.number})

    def pair(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """A queued trial (a retry, a warm start) gets its own trial in the front, with its parameters."""
        self.front.enqueue_trial(dict(trial.params), user_attrs={STUDY_TRIAL: trial.number})
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            paired = self.front.ask()
        self.sample(paired)
        trial.set_user_attr(FRONT_TRIAL, paired.number)

    def sampler(self, trial_number: int, repeat: bool) -> optuna.samplers.BaseSampler:
        if repeat:  # TPE would propose its favourite again: draw at random instead
            return optuna.samplers.RandomSampler(seed=(self.search.seed + trial_number) % 2**32)
        return make_sampler(self.search, trial_number, self.space)

    def sample(self, trial: optuna.Trial) -> None:
        space.suggest(trial, self.space, self.defaults)

    def untried(self, study: optuna.Study, trial_number: int) -> dict | None:
        """A configuration no waiting, running or finished trial holds, picked at random (seeded),
        for a space small enough to list; None for a larger one. `SpaceExhausted` if none is left."""
        every = space.configurations(self.space, self.defaults)
        if every is None:
            return None
        taken = {_key(_params(t)) for t in study.get_trials(deepcopy=False, states=TAKEN)}
        left = [c for c in every if _key(c) not in taken]
        if not left:
            raise SpaceExhausted(f"every one of the search space's {len(every)} configurations has been tried")
        return random.Random(self.search.seed + trial_number).choice(left)


def claim(study: optuna.Study, n_trials: int | None, lock: StudyLock, sampling: Sampling | None = None,
          confirming: bool = False) -> optuna.Trial | None:
    """The next trial for this process (a re-queued one first), with its parameters sampled, or
    None while finished plus running trials already fill `n_trials` (confirmations of the best
    configurations, `confirm.py`, do not count). `confirming`: only a queued confirmation, or None.

    A sample that repeats the parameters of a waiting, running or finished trial is discarded
    (the trial is told FAIL with user attr `duplicate_of`) and replaced: by a configuration not
    yet tried, for a space small enough to list (it is queued for the next `ask`); otherwise by a
    random draw.
    """
    with lock():
        if confirming:
            queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if not any(CONFIRMS in t.user_attrs for t in queued):
                return None
        taken = searched(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))
        if not confirming and n_trials is not None and len(taken) >= n_trials:
            return None
        repeat = False
        for _ in range(SAMPLE_ATTEMPTS):
            front = sampling.front if sampling is not None and not confirming else None
            if front is not None and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                sampling.propose(study, repeat)  # the study's next `ask` takes the front's proposal
            if sampling is not None:
                study.sampler = sampling.sampler(_next_number(study), repeat)
            with warnings.catch_warnings():  # "heartbeats are meant for optimize": `heartbeat` below beats
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                trial = study.ask()
            trial.set_user_attr("driver", DRIVER)
            if sampling is None:
                return trial
            record = trial_record(study, trial.number)
            if CONFIRMS in record.user_attrs and not confirming and not sampling.search.confirm.top_k:
                # Queued by an earlier run whose search.confirm was on: not this run's to train.
                trial.set_user_attr("fail_reason", "a confirmation queued by an earlier run; search.confirm.top_k is "
                                                   "0 now, so it is not run")
                study.tell(trial, state=TrialState.FAIL)
                continue
            # A re-run, or a confirmation: the same parameters again on purpose.
            retry = retried_from(record) is not None or CONFIRMS in record.user_attrs
            try:
                sampling.sample(trial)
            except ValueError as e:  # a retry's parameters from a space the experiment has changed since
                if not retry:
                    raise
                trial.set_user_attr("fail_reason", f"a re-run whose parameters the changed space no longer "
                                                   f"holds ({e}); not run")
                study.tell(trial, state=TrialState.FAIL)
                continue
            if front is not None and FRONT_TRIAL not in trial_record(study, trial.number).user_attrs:
                sampling.pair(study, trial)
            twin = None if retry else _twin(study, trial)
            if twin is None:
                return trial
            trial.set_user_attr("duplicate_of", twin)
            study.tell(trial, state=TrialState.FAIL)
            if front is not None:  # the front's proposal repeated a trial: it did not run
                front.tell(trial_record(study, trial.number).user_attrs[FRONT_TRIAL], state=TrialState.FAIL)
            repeat = True
            untried = sampling.untried(study, trial.number)
            if untried is not None:
                study.enqueue_trial(untried, user_attrs={"replaces_repeat": trial.number})
        raise SpaceExhausted(f"{SAMPLE_ATTEMPTS} samples in a row repeated earlier trials: the search space is "
                             f"nearly used up; widen space: or lower search.n_trials")


def _next_number(study: optuna.Study) -> int:
    """The number of the trial `study.ask()` returns next: the oldest queued one (a retry, a warm
    start), else a new one. The sampler is seeded by it, so a queued trial's free parameters and
    the next new trial's are not drawn from one seed."""
    trials = study.get_trials(deepcopy=False)
    waiting = [t.number for t in trials if t.state == TrialState.WAITING]
    return min(waiting) if waiting else len(trials)


def _params(t: FrozenTrial) -> dict:
    # A waiting (queued) trial holds its parameters as fixed_params until it is asked for.
    return t.params or t.system_attrs.get("fixed_params", {})


def _key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


def _twin(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The number of an earlier trial with the same parameters that still counts, if any."""
    params = trial.params
    for t in study.get_trials(deepcopy=False, states=TAKEN):
        if t.number != trial.number and _params(t) == params:
            return t.number
    return None


def finished(study: optuna.Study) -> int:
    """Finished trials of the search proper: what `search.n_trials` counts."""
    return len(searched(study.get_trials(deepcopy=False, states=FINISHED)))


@contextmanager
def heartbeat(storage: RDBStorage, trial_id: int) -> Iterator[None]:
    """Beat for a trial while its process runs, as Optuna's own optimize loop does: a driver on
    another machine takes a trial without a beat for `search.heartbeat_grace_period` for dead."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
                # A missed beat is not worth failing a trial over: the next one may get through.
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


def recover_dead_trials(study: optuna.Study, storage: RDBStorage, lock: StudyLock,
                        close_run: Callable[[FrozenTrial, str], None], everyone_here: bool = False) -> None:
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
            reason = "interrupted" if mine else f"its driver process {driver} died"
            number = trial_id(storage, study, t.number)  # attributes only while it is unfinished
            storage.set_trial_user_attr(number, "fail_reason", reason)
            storage.set_trial_user_attr(number, "died", True)
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            close_run(t, reason)
            retry_once(study, trial_record(study, t.number))
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


def read_storage(url: str, key: str, fix: str, fix_missing: str | None = None) -> tuple[RDBStorage, list[str]]:
    """The Optuna storage at `url` and the names of the studies it holds, looked at as it is:
    `StorageError`, naming the config `key` and ending with `fix` (`fix_missing` for a SQLite
    file that does not exist), when there is none or it cannot be read.

    Optuna's `RDBStorage` creates its tables (and SQLite its file) in whatever it is pointed at,
    so the storage is first looked at with a plain engine: a look at a study that does not exist
    must leave nothing behind.
    """
    shown = redact(url)
    path = paths.sqlite_path(url)
    if path is not None and not path.is_file():
        raise StorageError(f"{key}: no Optuna storage at {shown} (the file {path} does not exist); "
                           f"{fix_missing or fix}")
    url = paths.absolute_sqlite(url, create=False)
    try:
        engine = sqlalchemy.create_engine(url)
        try:
            has_tables = sqlalchemy.inspect(engine).has_table("studies")
        finally:
            engine.dispose()
        if not has_tables:
            raise StorageError(f"{key}: {shown} holds no Optuna study at all; {fix}")
        storage = RDBStorage(url, skip_table_creation=True)
        names = sorted(s.study_name for s in storage.get_all_studies())
    except StorageError:  # a RuntimeError too, and already says what is wrong
        raise
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, ImportError, RuntimeError) as e:
        # Unreachable server, missing driver, not a database; RuntimeError: Optuna's word for a
        # schema written by another Optuna version.
        raise StorageError(f"{key}: cannot read the Optuna storage {shown}: "
                           f"{scrub(str(e)).strip().splitlines()[0][:300]}") from None
    return storage, names


def open_readonly(cfg: ExperimentConfig, with_storage: bool = False):
    """The study `cfg.study_name` in `search.storage`, read as it is (`status`, `report`,
    `ui --optuna`): `StorageError` when it is not there, and nothing created (`read_storage`).
    `with_storage`: (study, the storage it was read from), where other studies beside it are read."""
    shown = redact(cfg.search.storage)
    first = f"run `python -m orchestrator search --config {cfg.source}` first"
    storage, names = read_storage(cfg.search.storage, "search.storage", first,
                                  f"{first}, or point search.storage at the study's storage")
    if cfg.study_name not in names:
        held = ", ".join(repr(n) for n in names[:20]) or "none"
        raise StorageError(f"search.storage: {shown} holds no study named {cfg.study_name!r} (it holds {held}); "
                           f"set search.study_name to one of them, or {first}")
    study = optuna.load_study(study_name=cfg.study_name, storage=storage)
    return (study, storage) if with_storage else study
