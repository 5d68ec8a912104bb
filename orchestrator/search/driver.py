"""One `search` process: check the input, join the study, run trials on this machine's slots.

`run_search` goes through its phases in order, each announced on the progress output:
1. checking the input (`preflight.py`): config against the world, data, model, writable folders;
   nothing exists yet, so any problem is exit 2 with nothing created;
2. opening the study (`study.py`): stores, the study, its identity (data and model fingerprints)
   and its MLflow parent run, created once under the study lock;
3. preparing the data (splits and tokenization, cached under the data's fingerprint) and the
   TF-IDF baseline;
4. the trials: each handed as a `TrialJob` to the executor (`launcher.py`, `execution/`), which
   runs it in a child process here or as a Ray task on any node of a cluster (`training/trial.py`
   either way), within the trial budget shared by every process on the study. The trial reports
   each epoch as an event and asks whether to go on; this process alone calls Optuna (`report`,
   `should_prune`, `tell`), so a trial needs no access to the study's storage;
5. the champion (`wrap_up.py`): MLflow reconciled with Optuna, the best model evaluated on
   test and registered.
Ctrl-C or SIGTERM in any phase (`interrupts.py`) closes what was opened and returns the summary
so far, marked interrupted (exit 130).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from orchestrator.search import wrap_up as champion
from orchestrator.config import paths
from orchestrator.registry import versions as registry
from orchestrator.config import space
from orchestrator.config import ExperimentConfig
from orchestrator.config.secrets import public, redact, scrub
from orchestrator.data import save_splits, tokenize
from orchestrator.execution.job import secret_environment
from orchestrator.execution.processes import Children
from orchestrator.models.heads import load_tokenizer
from orchestrator.search.interrupts import Interrupt
from orchestrator.search.launcher import TrialFailed, TrialLauncher
from orchestrator.search.preflight import Checked, check_model, preflight
from orchestrator.search import confirm, evidence, objectives, pretrain_stage, warm_start
from orchestrator.search.components import idle_pruner, make_sampler
from orchestrator.search.progress import StudyProgress, pretty
from orchestrator.search.study import (
    DIED,
    FINISHED,
    Sampling,
    SpaceExhausted,
    StudyLock,
    check_identity,
    check_evaluations,
    check_objective,
    note_strategy,
    claim,
    create_study,
    finished,
    heartbeat,
    make_storage,
    recover_dead_trials,
    trial_id,
    trial_record,
)
from orchestrator.tracking.client import Tracker, TrackingStoreError, is_outage
from orchestrator.tracking.lineage import code_version

log = logging.getLogger(__name__)

WAIT_S = 2.0  # how often a process whose budget is full looks again


@dataclass
class TrialRow:
    number: int
    state: str
    value: float | None
    params: dict
    note: str = ""


@dataclass
class Summary:
    study_name: str
    trials: list[TrialRow] = field(default_factory=list)
    best_trial: int | None = None
    best_params: dict = field(default_factory=dict)
    best_value: float | None = None
    metric: str = "val_macro_f1"
    test_metric: str = "test_macro_f1"  # the task's score on test, which the registry compares
    maximize: bool = True  # whether a higher `metric` is better (search.direction)
    interrupted_in: str | None = None  # the phase a first Ctrl-C came in, where the search went on to close
    test_maximize: bool = True  # whether a higher `test_metric` is better (the task says)
    baseline_name: str = ""
    champion_test: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    registration: registry.Registration | None = None
    seconds: float = 0.0
    tracking_uri: str = ""  # redacted
    parent_run_id: str = ""
    interrupted: bool = False
    phase: str = ""  # the phase the search was in when it ended
    tracking_error: str | None = None  # the store went down: the same command finishes the job later
    registry_error: str | None = None  # the store refused a write: needs a fix, not a retry
    champion_elsewhere: str | None = None  # the host holding the best trial's checkpoint, if not this one
    discarded_samples: int = 0  # samples that repeated an earlier trial's parameters
    threshold_note: str | None = None  # the best trial's decision threshold(s) and any target missed
    notes: list[str] = field(default_factory=list)  # settings the search did not use and why; its warm start
    confirmation: list[dict] = field(default_factory=list)  # per confirmed configuration (`confirm.Group.to_dict`)
    confirmed_trial: int | None = None  # the champion's configuration (its search trial), when confirmed
    confirm_budget: tuple[int, int] | None = None  # confirmations (finished, planned): their own budget
    baseline_comparison: str | None = None  # whether the champion beats the baseline beyond noise, in a line


@dataclass
class _Opened:
    """What the search has created or joined so far: what an interrupt must close."""

    lock: StudyLock | None = None
    storage: object = None
    study: optuna.Study | None = None
    tracker: Tracker | None = None
    front: optuna.Study | None = None  # search.objectives: the Pareto front's study
    parent: str | None = None
    close_run: object = None
    executor: object = None


def run_search(cfg: ExperimentConfig, gpus: str | None = None, workers: int | str | None = None,
               progress: StudyProgress | None = None, ray_address: str | None = None) -> Summary:
    started = time.perf_counter()
    progress = progress or StudyProgress(cfg.search.n_trials)
    interrupt = Interrupt(progress, Children())
    summary = Summary(cfg.study_name, metric=cfg.search.metric, tracking_uri=redact(cfg.tracking.uri),
                      maximize=cfg.search.direction == "maximize")
    opened = _Opened()
    try:
        with interrupt:
            try:
                _search(cfg, gpus, workers, ray_address, progress, interrupt, summary, opened)
            except KeyboardInterrupt:
                interrupt.stopping()
                summary.interrupted = True
                _close_after_interrupt(opened, interrupt)
    finally:
        try:
            if opened.executor is not None:
                opened.executor.close()
        finally:
            progress.close()
    if opened.study is not None:
        summary.trials = _rows(opened.study)
        summary.discarded_samples = len([t for t in opened.study.get_trials(deepcopy=False)
                                         if "duplicate_of" in t.user_attrs])
        warmed = warm_start.record(opened.study)
        if warmed is not None:
            summary.notes.append(warm_start.note(warmed))
        best = confirm.choose(opened.study, confirm.enabled(cfg))[0]
        if summary.interrupted and summary.best_trial is None and best is not None:  # stopped before the champion
            summary.best_trial, summary.best_params, summary.best_value = best.number, best.params, best.value
    summary.seconds = time.perf_counter() - started
    return summary


def _phase(summary: Summary, progress: StudyProgress, name: str) -> None:
    summary.phase = name
    progress.phase(name)


def _search(cfg: ExperimentConfig, gpus: str | None, workers: int | str | None, ray_address: str | None,
            progress: StudyProgress,
            interrupt: Interrupt, summary: Summary, opened: _Opened) -> None:
    _phase(summary, progress, "checking the input")
    reason, work = pretrain_stage.pending(cfg)
    checked = preflight(cfg, gpus, workers, ray_address, model_pending=reason is not None)
    for unused in (pretrain_stage.unused(cfg), idle_pruner(cfg), objectives.note(cfg)):
        if unused:
            progress.print(unused)
            summary.notes.append(unused)
    opened.executor = executor = checked.executor
    executor.warm_up(secret_environment(cfg))
    if reason:
        _phase(summary, progress, "pre-training the encoder")
        progress.print(f"pre-training first: {reason}")
        pretrain_stage.run_pretrain(cfg, progress.print, work)
        checked.model = check_model(cfg)
    work_dir = Path(cfg.search.work_dir).resolve()
    study_dir = paths.inside(work_dir, work_dir / cfg.study_name)

    _phase(summary, progress, "opening the study")
    opened.lock = lock = StudyLock(cfg.search.storage, cfg.study_name)
    with lock():  # whichever process comes first creates stores, study, parent run; the others re-attach
        with interrupt.critical():
            opened.tracker = tracker = Tracker(cfg.tracking.uri, cfg.experiment_name, cfg.tracking.artifact_location)
            opened.storage = storage = make_storage(cfg.search)
            study = create_study(cfg, storage)
            objectives.check(study, cfg)
            opened.front = objectives.open_front(cfg, storage, make_sampler(cfg.search, params=cfg.space))
            check_identity(study, checked.splits.record, checked.model.record, redact(cfg.search.storage))
            check_objective(study, cfg.search.metric, cfg.search.direction)
            check_evaluations(study, cfg.training)
            changed = note_strategy(study, cfg)
            queued = None if checked.warm_start is None else warm_start.enqueue(study, checked.warm_start)
            opened.study = study
            params = {**_flatten(public(cfg.to_dict())), "data.fingerprint": checked.splits.digest,
                      "model.fingerprint": checked.model.fingerprint}
            opened.parent = parent = tracker.study_run(cfg.study_name, study.user_attrs.get("mlflow_parent_run_id"),
                                                       params)
            tracker.set_tags(parent, {**lineage(checked.model), **code_version(),
                                      "data_fingerprint": checked.splits.digest})
            datasets = checked.splits.datasets()  # the parent run's, and every trial run's
            tracker.log_datasets(parent, datasets)
            if changed is not None:  # the run's params are the first strategy's: its tags say what came after
                when, _, what = changed.partition(": ")
                tracker.set_tags(parent, {f"strategy {when}": what})  # "strategy from trial 5 on"
            warmed = warm_start.record(study)
            if warmed is not None:
                tracker.set_tags(parent, warm_start.tags(warmed))
            study.set_user_attr("mlflow_parent_run_id", parent)
        if queued is not None:
            progress.print(warm_start.note(queued))
        if changed is not None:
            progress.print(changed)
        summary.parent_run_id = parent
        _phase(summary, progress, "preparing the data")
        data_dir = _prepare_data(checked, paths.inside(study_dir, study_dir / "data"), cfg)
        _phase(summary, progress, "fitting the baseline")
        summary.baseline = baseline = _baseline(tracker, parent, checked, cfg)
    splits, task = checked.splits, checked.task
    summary.test_metric, summary.baseline_name = f"test_{task.main_metric}", task.baseline_name
    summary.test_maximize = task.maximize(summary.test_metric)
    main = f"baseline_val_{task.main_metric}"
    progress.print(f"study {cfg.study_name!r} ({task.name}): {len(splits.data['train'])} train / "
                   f"{len(splits.data['validation'])} validation / {len(splits.data['test'])} test rows, "
                   f"{task.describe(splits)}; {len(executor.slots)} slot(s) ({executor.name}): "
                   f"{_shown(executor.slots)}{f'; {checked.packing}' if checked.packing else ''}; baseline "
                   f"({task.baseline_name}) "
                   f"{pretty(main[9:])} {baseline[main]:.4f}")

    _phase(summary, progress, "running trials")
    opened.close_run = close_run = _run_closer(tracker)
    recover_dead_trials(study, storage, lock, close_run)
    executor.open(study_dir, secret_environment(cfg), interrupt.children)
    launcher = TrialLauncher(cfg, study_dir, data_dir, checked.model.path, checked.model.fingerprint, parent,
                             executor, progress, len(splits.data["train"]), interrupt, lock, close_run,
                             {**lineage(checked.model), **code_version(), "data_fingerprint": splits.digest},
                             datasets)
    budget = _budget(cfg, progress)
    progress.total = budget
    progress.done = finished(study)
    interrupt.patient = True
    deadline = None if cfg.search.timeout is None else time.monotonic() + cfg.search.timeout
    halted = _optimize(study, storage, lock, launcher, cfg, budget, len(executor.slots), progress, interrupt,
                       deadline=deadline, front=opened.front)
    timed_out = deadline is not None and time.monotonic() >= deadline
    # The search proper is done: its budget finished (or, without one, its space used up).
    done = not (interrupt.requested or timed_out) and (finished(study) >= budget if budget is not None
                                                       else halted is not None)
    if confirm.enabled(cfg) and not done:
        why = ("search.timeout ended this run first" if timed_out else "it was interrupted" if interrupt.requested
               else "the trials did not finish their budget")
        summary.notes.append(f"search.confirm: the best configurations were not confirmed in this run ({why}), so "
                             f"the champion is the single best trial; the same command resumes the study, finishes "
                             f"the trial budget and confirms them")
    elif confirm.enabled(cfg):
        _phase(summary, progress, "confirming the best configurations")
        with lock():
            queued, note = confirm.plan(study, cfg)
        if note:
            progress.print(note)
            summary.notes.append(note)
        if halted:
            progress.print(halted)
        outstanding = confirm.outstanding(study)
        progress.print(f"confirming the {cfg.search.confirm.top_k} best configuration(s) on "
                       f"{cfg.search.confirm.seeds} new seed(s) each: {outstanding} run(s) to go ({queued} queued now), "
                       f"beside the {budget if budget is not None else 'unbounded'}-trial budget")
        progress.total, progress.done = outstanding, 0
        halted = _optimize(study, storage, lock, launcher, cfg, None, len(executor.slots), progress, interrupt,
                           confirming=True, deadline=deadline, front=opened.front)
    interrupt.patient = False
    if halted:
        progress.print(halted)
    summary.interrupted = interrupt.requested
    if summary.interrupted:  # the phase the user stopped, not the one the summary is written in
        summary.interrupted_in = summary.phase

    _phase(summary, progress, "choosing the champion")
    _champion(cfg, study, study_dir, checked, tracker, parent, lock, interrupt, summary, progress, opened.front)


def lineage(model) -> dict[str, str]:
    """Tags naming the encoder a study fine-tunes: its reference, fingerprint and, for a registered
    encoder, the version and the pre-training run that made it (whose tags name its corpus)."""
    record = model.record
    tags = {"encoder": record["name_or_path"], "encoder_fingerprint": record["fingerprint"]}
    if "registered_version" in record:
        tags.update({"encoder_version": record["registered_version"],
                     "encoder_run_id": record["registered_run_id"]})
    return tags


def _budget(cfg: ExperimentConfig, progress: StudyProgress) -> int | None:
    """Finished trials the study ends with: never more than the space has distinct configurations."""
    size = space.count_configurations(cfg.space, cfg.training)
    n = cfg.search.n_trials
    if size is not None and (n is None or n > size):
        progress.print(f"the search space holds {size} distinct configuration(s); the study ends after {size} "
                       f"trial(s), not {n}, since a repeated configuration would train the same model again")
        return size
    return n


def _champion(cfg: ExperimentConfig, study: optuna.Study, study_dir: Path, checked: Checked, tracker: Tracker,
              parent: str, lock: StudyLock, interrupt: Interrupt, summary: Summary, progress: StudyProgress,
              opened_front: optuna.Study | None = None) -> None:
    best, group, groups = confirm.choose(study, confirm.enabled(cfg))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    summary.confirmation = [g.to_dict(maximize) for g in groups]
    if confirm.enabled(cfg):
        summary.confirm_budget = confirm.budget(study)
    if group is not None:
        summary.confirmed_trial = group.trial.number
        progress.print(confirm.describe(group, maximize, cfg.search.metric))
    budget = cfg.registry.latency_budget_ms
    fast = objectives.fast(study, budget) if budget else None  # @fast's trial: its checkpoint stays too
    champion.drop_other_checkpoints(study_dir, study, best, fast)
    # The best-epoch model is on this disk, or in the artifact store where any process can fetch it.
    usable = best is not None and (Path(best.user_attrs.get("checkpoint", "/nonexistent")).exists()
                                   or "checkpoint_run" in best.user_attrs)
    host = best.user_attrs.get("driver", "?").partition(":")[0] if best else None
    if usable or (best is not None and host != socket.gethostname()):
        summary.best_trial, summary.best_params, summary.best_value = best.number, best.params, best.value
        summary.threshold_note = best.user_attrs.get("threshold_note")
        if not usable:  # trained by a process on another machine, which evaluates and registers it
            summary.champion_elsewhere = host
    status = "FAILED"
    try:
        champion.log_study_plots(study, tracker, parent)
        with lock():  # once, though every process on the study gets here
            run_ids = champion.reconcile_runs(study, tracker, parent, cfg)
            if groups:
                champion.log_confirmation(tracker, parent, summary.confirmation, group, cfg.search.metric)
            if usable and not interrupt.requested:  # an interrupted study is not done: nothing gets registered
                _phase(summary, progress, "evaluating the champion on test")
                checkpoint = champion.fetch_checkpoint(best, tracker, study_dir)
                metrics, evaluation = champion.evaluate(cfg, checked.splits, tracker, parent, best,
                                                        run_ids[best.number], checked.task, checkpoint)
                summary.champion_test = metrics
                summary.baseline_comparison = champion.against_baseline(cfg, checked, tracker, parent, evaluation)
                if cfg.registry.register:
                    _phase(summary, progress, "registering the champion")
                    chosen = next((g for g in summary.confirmation if g["trial"] == summary.confirmed_trial), None)
                    with interrupt.critical():
                        summary.registration = champion.register(cfg, checked.splits, tracker, parent, best,
                                                                 run_ids[best.number], metrics, checked.task,
                                                                 checkpoint, evaluation, chosen, summary.notes)
            if opened_front is not None:
                objectives.reconcile(study, opened_front, objectives.extras(cfg))
                champion.log_front(tracker, parent, study, opened_front, cfg)
                if (usable and not interrupt.requested and cfg.registry.register
                        and cfg.registry.latency_budget_ms is not None):
                    _, line = champion.register_fast(cfg, checked.splits, tracker, parent, study, study_dir,
                                                     checked.task, run_ids, best.number)
                    summary.notes.append(line)
            # Last: the registered model holds its own copy, and nothing above waits on this.
            champion.drop_stored_checkpoints(study, tracker, cfg.search.keep_checkpoints, best, fast)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = None  # the interrupt's own cleanup closes the parent run
        raise
    except TrackingStoreError as e:
        if is_outage(e):  # the Optuna results are safe; the same command redoes this part
            summary.tracking_error = f"{type(e).__name__}: {scrub(str(e))[:300]}"
            status = None  # the store is down: the next search closes the parent run
        else:  # the store refused: a retry would fail the same way
            summary.registry_error = f"{summary.phase}: the MLflow store refused: {scrub(str(e))[:500]}"
    finally:
        if status is not None:
            tracker.end_run(parent, status)


def _close_after_interrupt(opened: _Opened, interrupt: Interrupt) -> None:
    """Leave nothing RUNNING: stop this process's trials, mark them FAIL (re-queued once), close
    their runs and the parent run."""
    interrupt.children.terminate_all()
    try:
        if opened.study is not None and opened.close_run is not None:
            recover_dead_trials(opened.study, opened.storage, opened.lock, opened.close_run, everyone_here=True)
        if opened.parent is not None:
            opened.tracker.end_run(opened.parent, "KILLED")
    except TrackingStoreError as e:
        if not is_outage(e):
            raise
        log.warning("the MLflow store is unreachable; its runs are closed by the next search: %s", scrub(str(e)))


def _run_closer(tracker: Tracker):
    """Close the MLflow run of a trial whose process died, if it has one still RUNNING."""
    def close(trial: optuna.trial.FrozenTrial, reason: str, status: str = "KILLED") -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        try:
            if run_id and tracker.client.get_run(run_id).info.status == "RUNNING":
                tracker.finish_trial(run_id, "FAIL", reason, status=status)
        except TrackingStoreError as e:
            if not is_outage(e):
                raise
            # The Optuna record is what matters; the run is closed when the store is back.
            log.warning("could not close the MLflow run of trial %s: %s", trial.number, scrub(str(e)))
    return close


def _optimize(study: optuna.Study, storage, lock: StudyLock, launcher: TrialLauncher, cfg: ExperimentConfig,
              budget: int | None, n_slots: int, progress: StudyProgress, interrupt: Interrupt,
              confirming: bool = False, deadline: float | None = None, front: optuna.Study | None = None
              ) -> str | None:
    """Run trials on every slot until the study holds `budget` finished (COMPLETE or PRUNED)
    trials, time is up, or the user interrupts. Returns why it stopped early, if it did.

    One thread per slot claims a trial (`study.claim`: within the budget shared by every process
    on the study, its parameters sampled and checked for repeats under the lock), runs it and
    records the outcome, so a slot whose trial ends takes the next at once. While other
    processes' running trials fill the budget, the thread waits, because one of them may yet
    fail and need making up; a dead driver's trials are recovered meanwhile. `max(3, slots)`
    failures in a row stop this process: a config that fails every trial must not loop forever.
    `confirming`: run the queued confirmations (`confirm.py`) instead, until none is queued or
    running in any process. `deadline` (time.monotonic): when search.timeout ends this invocation.
    """
    limit = max(3, n_slots)
    halt, failures, guard = threading.Event(), [0], threading.Lock()
    why: list[str] = []

    sampling = Sampling(cfg.space, cfg.training, cfg.search, front)

    def stop(reason: str) -> None:
        with guard:
            if not halt.is_set():
                why.append(reason)
                halt.set()

    def slot_loop() -> None:
        while not (interrupt.requested or halt.is_set() or (deadline and time.monotonic() >= deadline)):
            try:
                trial = claim(study, budget, lock, sampling, confirming)
            except SpaceExhausted as e:
                return stop(f"stopped: {e}")
            if confirming:
                launcher.executor.expect_more(confirm.waiting(study) > 0)
            elif budget is not None:  # the budget's last trial needs no spare process after it
                taken = confirm.searched(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))
                launcher.executor.expect_more(len(taken) < budget)
            if trial is None:
                if confirming and not confirm.outstanding(study):
                    return
                if not confirming and budget is not None and finished(study) >= budget:
                    return
                recover_dead_trials(study, storage, lock, launcher.close_run)
                halt.wait(WAIT_S)
                continue
            state = _run_trial(study, storage, launcher, trial, progress, front)
            with guard:
                failures[0] = 0 if state in FINISHED else failures[0] + 1
                many = failures[0] >= limit
            if many:
                stop(f"stopped: the last {limit} trials failed (see their fail_reason and logs)")

    with ThreadPoolExecutor(n_slots, thread_name_prefix="slot") as pool:
        futures = [pool.submit(slot_loop) for _ in range(n_slots)]
        try:
            while wait(futures, timeout=0.5).not_done:  # short waits keep the main thread's signals prompt
                pass
        except BaseException:  # a second Ctrl-C: the trial processes are stopping; let the threads record it
            halt.set()
            wait(futures)
            raise
        for f in futures:
            f.result()  # a thread's error (e.g. the storage went away) is the search's error
    return why[0] if why else None


def _run_trial(study: optuna.Study, storage, launcher: TrialLauncher, trial: optuna.Trial,
               progress: StudyProgress, front: optuna.Study | None = None) -> TrialState:
    value, state = None, TrialState.FAIL
    with heartbeat(storage, trial_id(storage, study, trial.number)):
        try:
            value, state = launcher(trial), TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except TrialFailed:
            pass
        except Exception as e:  # noqa: BLE001 - a driver-side error fails this trial (traceback logged), not the study
            log.exception("trial %s failed in the driver", trial.number)
            try:
                trial.set_user_attr("fail_reason", scrub(f"{type(e).__name__}: {e}")[:2000])
            except optuna.exceptions.UpdateFinishedTrialError:  # failed meanwhile by another process's check
                pass
    frozen = study.tell(trial, value, state=state, skip_if_finished=True)
    if front is not None:  # its objectives, or its end, to the Pareto front's study
        objectives.settle(front, trial_record(study, trial.number), objectives.extras(launcher.cfg))
    progress.end_trial(trial.number, frozen.state.name, frozen.value, _best_value(study))
    return frozen.state


def _prepare_data(checked: Checked, root: Path, cfg: ExperimentConfig) -> Path:
    """Save the splits under their fingerprint and tokenize them once for every max length the
    space can pick. Returns the folder trials read them from."""
    folder = save_splits(checked.splits, root)
    p = cfg.space.get("max_length")
    lengths = p.choices if p is not None and p.choices else (
        range(p.low, p.high + 1, int(p.step or 1)) if p is not None else (cfg.training.max_length,))
    if len(lengths) > 8:  # a wide integer range: let each trial tokenize (and cache) its own
        return folder
    tokenizer = load_tokenizer(checked.model.path, None, cfg.model.trust_remote_code)
    for length in lengths:
        tokenize(checked.splits, tokenizer, int(length), folder, checked.task)
    return folder


def _baseline(tracker: Tracker, parent: str, checked: Checked, cfg: ExperimentConfig) -> dict:
    logged = tracker.run_metrics(parent)
    if f"baseline_test_{checked.task.main_metric}" in logged:  # resumed study: same data (fingerprint checked)
        return {k: v for k, v in logged.items() if k.startswith("baseline_")}
    metrics, test = checked.task.baseline_run(checked.splits, cfg.data.seed)
    if test is not None:  # its test predictions: the champion is compared with them row by row
        tracker.log_text(parent, evidence.predictions_text(test, checked.splits.split_digest("test")),
                         evidence.BASELINE_PREDICTIONS)
    tracker.log_metrics(parent, metrics)  # last: their presence says the baseline is complete
    return metrics


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def _best_value(study: optuna.Study) -> float | None:
    best = _best_trial(study)
    return best.value if best else None


def _rows(study: optuna.Study) -> list[TrialRow]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if "duplicate_of" in t.user_attrs:  # a discarded sample, not a trial that ran
            continue
        note = t.user_attrs.get("fail_reason", DIED) if t.state == TrialState.FAIL else ""
        if confirm.is_confirmation(t) and not note:
            note = f"confirms trial {t.user_attrs[confirm.CONFIRMS]} (seed {t.user_attrs.get(confirm.SEED)})"
        if warm_start.FROM in t.user_attrs and not note:  # the summary's last lines name the source
            note = f"warm start (its trial {t.user_attrs[warm_start.FROM].rpartition('#')[2]})"
        rows.append(TrialRow(t.number, t.state.name, t.value, dict(t.params), note))
    return rows


def _shown(slots: list[str], most: int = 8) -> str:
    return ", ".join(slots[:most]) + (f" and {len(slots) - most} more" if len(slots) > most else "")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
