"""The shared trial budget under contention, on real SQLite and PostgreSQL storages: processes
that claim and end trials as fast as they can finish exactly `n_trials`, make up failed ones, and
never share a trial."""

import multiprocessing
import random
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from orchestrator.config import SearchConfig, from_dict
from orchestrator.search.study import StudyLock, claim, create_study, finished, make_storage

N_TRIALS, PROCESSES = 40, 4


def _claimer(url: str, name: str, seed: int, out) -> None:
    """Claim until the study is done; fail about one trial in five, which must be made up."""
    rng = random.Random(seed)
    study = optuna.load_study(study_name=name, storage=make_storage(SearchConfig(storage=url)))
    lock, mine = StudyLock(url, name), []
    while True:
        trial = claim(study, N_TRIALS, lock)
        if trial is None:
            if finished(study) >= N_TRIALS:
                break
            continue  # others' running trials fill the budget; one may yet fail
        x = trial.suggest_float("x", 0, 1)
        failed = rng.random() < 0.2
        study.tell(trial, None if failed else x, state=TrialState.FAIL if failed else TrialState.COMPLETE)
        mine.append(trial.number)
    out.put(mine)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return request.getfixturevalue("postgres")


@pytest.mark.slow
def test_processes_sharing_a_study_finish_exactly_n_trials_and_never_share_one(storage_url):
    name = f"budget-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=make_storage(SearchConfig(storage=storage_url)))
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(storage_url, name, seed, out)) for seed in range(PROCESSES)]
    for p in procs:
        p.start()
    claimed = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    trials = optuna.load_study(study_name=name, storage=storage_url).trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == N_TRIALS  # not one more
    assert states.count(TrialState.FAIL) == len(trials) - N_TRIALS > 0  # failures were made up
    numbers = [n for mine in claimed for n in mine]
    assert sorted(numbers) == list(range(len(trials)))  # every trial claimed by exactly one process
    assert all(claimed), "every process took part"


def test_a_study_keeps_its_evaluation_points_and_records_a_change_of_strategy(tmp_path):
    from orchestrator.data import DataError
    from orchestrator.search.study import check_evaluations, note_strategy

    base = {"name": "s", "data": {"train": "t.csv"}, "search": {"storage": f"sqlite:///{tmp_path / 'o.db'}",
                                                                  "direction": "maximize"}}
    cfg = from_dict({**base, "training": {"evals_per_epoch": 2}})
    study = create_study(cfg, make_storage(cfg.search))
    check_evaluations(study, cfg.training)
    assert note_strategy(study, cfg) is None and note_strategy(study, cfg) is None  # first record; unchanged
    study.tell(study.ask(), 0.5)
    with pytest.raises(DataError, match=r"training.evals_per_epoch: study 's' evaluates its trials with "
                                        r"training.evals_per_epoch=2"):
        check_evaluations(study, from_dict({**base, "training": {"evals_per_epoch": 4}}).training)
    random = from_dict({**base, "search": {**base["search"], "sampler": "random"}})
    assert note_strategy(study, random) == "from trial 1 on: sampler random (was tpe), sampler_options {} (was " \
                                           "{'multivariate': True, 'constant_liar': True, 'group': False, " \
                                           "'n_startup_trials': None, 'n_ei_candidates': 24})"
    assert [h["from_trial"] for h in study.user_attrs["strategies"]] == [0, 1]


def test_readers_see_evaluations_as_epochs():
    from optuna.trial import create_trial

    from orchestrator.search.records import best_epoch, epoch_values

    trial = create_trial(value=0.7, intermediate_values={1: 0.2, 2: 0.6, 3: 0.9, 4: 0.7, 5: 0.5})
    assert epoch_values(trial, 2) == [(0.5, 0.2), (1.0, 0.6), (1.5, 0.9), (2.0, 0.7), (2.5, 0.5)]
    assert best_epoch(trial, 2, maximize=True) == 2  # 0.9 came inside epoch 2: only epochs' ends are kept
    assert best_epoch(trial, 2, maximize=False) == 1 and best_epoch(trial, 1, maximize=True) == 3
    assert best_epoch(create_trial(value=0.1, intermediate_values={1: 0.1}), 2, True) is None


def test_readers_show_a_queued_trials_parameters():
    from orchestrator.search.records import params_of

    study = optuna.create_study()
    study.enqueue_trial({"learning_rate": 1e-4})
    waiting = study.get_trials(states=(TrialState.WAITING,))[0]
    assert waiting.params == {} and params_of(waiting) == {"learning_rate": 1e-4}
