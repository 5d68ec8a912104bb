"""No trial repeats the parameters of a trial that is waiting, running or finished, whether several
processes share the study or a study is resumed; the one re-queued retry of a dead trial is the
exception. Driven through `claim` on real storages, with Optuna's real samplers."""

import multiprocessing
import uuid
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from orchestrator.tasks import experiment_from_dict
from orchestrator.search.study import Sampling, SpaceExhausted, StudyLock, claim, create_study, make_storage, retry_once
from orchestrator.search.study import retried_from

pytestmark = pytest.mark.slow  # processes racing for the trials of one study

N_TRIALS = 12
SPACE = {"head": ["cls", "mean", "mlp"], "batch_size": [8, 16], "epochs": {"low": 1, "high": 3}}  # 18 configs


def _cfg(url: str, name: str, sampler: str):
    return experiment_from_dict({"name": name, "data": {"train": "a.csv"}, "space": SPACE,
                                 "search": {"n_trials": N_TRIALS, "storage": url, "sampler": sampler, "seed": 42}})


def _claimer(url: str, name: str, sampler: str, count: int | None, out) -> None:
    """One search process: its own study object and sampler, seeded like every other process's."""
    cfg = _cfg(url, name, sampler)
    lock, mine = StudyLock(url, name), []
    with lock():  # as a search joins a study
        study = create_study(cfg, make_storage(cfg.search))
    while count is None or len(mine) < count:
        trial = claim(study, N_TRIALS, lock, Sampling(cfg.space, cfg.training, cfg.search))
        if trial is None:
            break
        study.tell(trial, 0.1 * len(mine))
        mine.append(trial.number)
    out.put(mine)


def _run(url, name, sampler, counts):
    cfg = _cfg(url, name, sampler)
    make_storage(cfg.search)  # the storage's tables exist before the processes race to use them
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, name, sampler, c, out)) for c in counts]
    for p in procs:  # one after another for a resumed study, at once for processes sharing it
        p.start()
        if len(counts) > 1 and counts[0] is not None:
            p.join(timeout=120)
    done = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=120)
    return done


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return request.getfixturevalue("postgres")


def _distinct_params(url: str, name: str, died: tuple = ()) -> list[dict]:
    trials = optuna.load_study(study_name=name, storage=url).trials
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.RUNNING)]
    keys = Counter(tuple(sorted(t.params.items())) for t in counted)
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]
    # Every other FAIL is a discarded repeat, which never ran.
    assert all(t.user_attrs.get("duplicate_of") is not None for t in trials
               if t.state == TrialState.FAIL and t.number not in died)
    return counted


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_processes_sharing_a_study_never_sample_the_same_parameters(storage_url, sampler):
    name = f"dup-{uuid.uuid4().hex[:8]}"
    claimed = _run(storage_url, name, sampler, [None, None, None])
    assert all(claimed), "every process took part"
    assert len(_distinct_params(storage_url, name)) == N_TRIALS


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_resumed_study_does_not_replay_its_first_samples(tmp_path, sampler):
    url, name = f"sqlite:///{tmp_path / 'optuna.db'}", "resumed"
    _run(url, name, sampler, [4, 4, 4])  # three runs of the same command, 4 trials each
    assert len(_distinct_params(url, name)) == N_TRIALS


def test_the_retry_of_a_dead_trial_keeps_its_parameters_and_nothing_else_takes_them(tmp_path):
    url, name = f"sqlite:///{tmp_path / 'optuna.db'}", "retry"
    cfg = _cfg(url, name, "random")
    study = create_study(cfg, make_storage(cfg.search))
    lock = StudyLock(url, name)

    sampling = Sampling(cfg.space, cfg.training, cfg.search)
    dead = claim(study, N_TRIALS, lock, sampling)
    dead.set_user_attr("mlflow_run_id", "the-dead-trials-run")
    study.tell(dead, state=TrialState.FAIL)  # its process died
    assert retry_once(study, study.trials[dead.number])
    assert not retry_once(study, study.trials[dead.number])  # once only, whoever finds it dead again
    numbers = []
    while (trial := claim(study, N_TRIALS, lock, sampling)) is not None:
        study.tell(trial, 0.5)
        numbers.append(trial.number)
    trials = study.trials
    (retry,) = [t for t in trials if retried_from(t) == dead.number]
    assert retry.params == dead.params and retry.state == TrialState.COMPLETE
    assert "mlflow_run_id" not in retry.user_attrs  # the dead trial's run is not the retry's
    assert not retry_once(study, retry)  # a retry is not retried
    assert len(_distinct_params(url, name, died=(dead.number,))) == N_TRIALS


def test_a_used_up_space_stops_the_claims(tmp_path):
    cfg = experiment_from_dict({"data": {"train": "a.csv"}, "space": {"head": ["cls", "mean"]},
                                "search": {"n_trials": 5}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    lock = StudyLock(f"sqlite:///{tmp_path / 'lock.db'}", "used-up")  # an in-memory study, a real lock
    sampling = Sampling(cfg.space, cfg.training, cfg.search)
    for _ in range(2):
        study.tell(claim(study, 5, lock, sampling), 1.0)
    with pytest.raises(SpaceExhausted, match="every one of the search space's 2 configurations has been tried"):
        claim(study, 5, lock, sampling)
