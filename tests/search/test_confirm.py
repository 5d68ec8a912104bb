"""Seed confirmation (`search/confirm.py`) on a real SQLite study: what is queued, what counts
against which budget, and which configuration and run become the champion. No training here:
trials are told values directly; `test_search_confirm.py` runs the whole thing."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from orchestrator.config import from_dict
from orchestrator.config.schema import ExperimentConfig
from orchestrator.search import confirm
from orchestrator.search.study import Sampling, StudyLock, claim, finished, retry_once, trial_record


def _cfg(top_k: int, seeds: int, **search) -> ExperimentConfig:
    return from_dict({"data": {"train": "t.csv"}, "training": {"seed": 42},
                                        "space": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}},
                                        "search": {"confirm": {"top_k": top_k, "seeds": seeds}, "pruner": "none",
                                                   "direction": "maximize", **search}})


@pytest.fixture
def study(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    for value, lr in ((0.5, 1e-4), (0.9, 2e-4), (0.7, 3e-4), (0.8, 4e-4)):
        study.enqueue_trial({"learning_rate": lr})
        trial = study.ask()
        trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)
        study.tell(trial, value)
    study.lock = StudyLock(url, "s")
    return study


def _run(study, trial, value: float | None) -> None:
    trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)
    study.tell(trial, value, state=TrialState.COMPLETE if value is not None else TrialState.FAIL)


def test_the_top_configurations_are_queued_once_per_new_seed(study):
    cfg = _cfg(2, 3)
    queued, note = confirm.plan(study, cfg)
    assert queued == 6 and note is None
    waiting = study.get_trials(states=(TrialState.WAITING,))
    # The two best: trial 1 (0.9) and trial 3 (0.8), on seeds 43, 44, 45.
    assert sorted((t.user_attrs[confirm.CONFIRMS], t.user_attrs[confirm.SEED]) for t in waiting) == \
        [(1, 43), (1, 44), (1, 45), (3, 43), (3, 44), (3, 45)]
    assert confirm.plan(study, cfg)[0] == 0  # another process, or a resumed run: nothing twice
    assert confirm.outstanding(study) == 6 and finished(study) == 4  # not counted against n_trials


def test_fewer_completed_trials_than_top_k_confirms_what_exists_and_says_so(study):
    queued, note = confirm.plan(study, _cfg(10, 1))
    assert queued == 4 and "only 4 trial(s) completed" in note and "top_k=10" in note


def test_claim_takes_only_confirmations_when_confirming_and_lets_their_repeats_through(study):
    cfg = _cfg(1, 2)
    confirm.plan(study, cfg)
    sampling = Sampling(cfg.space, cfg.training, cfg.search)
    # The search's budget (4) is full, but confirmations have their own.
    assert claim(study, 4, study.lock, sampling) is None
    first = claim(study, 4, study.lock, sampling, confirming=True)
    assert first is not None and first.user_attrs[confirm.CONFIRMS] == 1
    assert first.params == study.trials[1].params  # the same configuration: not refused as a repeat
    _run(study, first, 0.6)
    second = claim(study, 4, study.lock, sampling, confirming=True)
    _run(study, second, 0.7)
    assert claim(study, 4, study.lock, sampling, confirming=True) is None and confirm.outstanding(study) == 0
    assert finished(study) == 4


def test_a_confirmation_that_died_is_retried_as_the_same_confirmation(study):
    confirm.plan(study, _cfg(1, 1))
    cfg = _cfg(1, 1)
    trial = claim(study, 4, study.lock, Sampling(cfg.space, cfg.training, cfg.search), confirming=True)
    trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)
    study.tell(trial, state=TrialState.FAIL)
    assert retry_once(study, trial_record(study, trial.number))
    again = study.get_trials(states=(TrialState.WAITING,))
    assert [(t.user_attrs[confirm.CONFIRMS], t.user_attrs[confirm.SEED]) for t in again] == [(1, 43)]


def test_the_champion_is_the_best_mean_and_its_weights_the_best_single_run(study):
    cfg = _cfg(2, 2)
    confirm.plan(study, cfg)
    sampling = Sampling(cfg.space, cfg.training, cfg.search)
    # Trial 1 (0.9) was a lucky seed: its confirmations score 0.6 and 0.62; trial 3 (0.8) holds at
    # 0.79 and 0.85. By mean trial 3's configuration wins, and its best run is a confirmation.
    values = {(1, 43): 0.6, (1, 44): 0.62, (3, 43): 0.79, (3, 44): 0.85}
    while (trial := claim(study, 4, study.lock, sampling, confirming=True)) is not None:
        _run(study, trial, values[(trial.user_attrs[confirm.CONFIRMS], trial.user_attrs[confirm.SEED])])
    best, group, groups = confirm.choose(study)
    assert group.trial.number == 3 and [g.trial.number for g in groups] == [3, 1]  # by mean, best first
    assert group.mean == pytest.approx((0.8 + 0.79 + 0.85) / 3)
    assert best.value == 0.85 and best.user_attrs[confirm.CONFIRMS] == 3
    assert study.best_trial.number == 1  # what a single-run choice would have registered
    summary = group.to_dict(maximize=True)
    assert summary["completed"] == 3 and summary["planned"] == 3 and summary["best_run"] == best.number
    assert "mean 0.8133 ± 0.0321 over 3 run(s)" in confirm.describe(group, True, "val_macro_f1")


def test_a_failed_confirmation_leaves_the_mean_of_the_runs_that_completed(study):
    cfg = _cfg(1, 2)
    confirm.plan(study, cfg)
    sampling = Sampling(cfg.space, cfg.training, cfg.search)
    _run(study, claim(study, 4, study.lock, sampling, confirming=True), 0.7)
    _run(study, claim(study, 4, study.lock, sampling, confirming=True), None)  # failed
    _, group, _ = confirm.choose(study)
    assert group.values == [0.9, 0.7] and group.to_dict(True)["planned"] == 3


def test_without_a_plan_the_champion_is_the_best_trial_of_the_search():
    study = optuna.create_study(direction="minimize")
    for value in (0.3, 0.1, 0.2):
        study.add_trial(optuna.trial.create_trial(value=value))
    best, group, groups = confirm.choose(study)
    assert best.value == 0.1 and group is None and groups == []


def test_confirm_settings_are_checked():
    from orchestrator.config import ConfigError

    for bad, said in (({"top_k": -1}, "search.confirm.top_k"), ({"seeds": 0}, "search.confirm.seeds"),
                      ({"tok": 2}, "search.confirm.tok: unknown key"),):
        with pytest.raises(ConfigError, match=said.replace(".", r"\.")):
            from_dict({"data": {"train": "t.csv"}, "search": {"confirm": bad}}, "x.yaml")
    for bad, said in (({"min_confidence": 0.5}, "registry.min_confidence"),
                      ({"min_confidence": 1.0}, "registry.min_confidence"),
                      ({"min_improvement": -0.1}, "registry.min_improvement")):
        with pytest.raises(ConfigError, match=said.replace(".", r"\.")):
            from_dict({"data": {"train": "t.csv"}, "registry": bad}, "x.yaml")


def test_objectives_settings_are_checked():
    from orchestrator.config import ConfigError

    def problems(search: dict, registry: dict | None = None) -> str:
        with pytest.raises(ConfigError) as e:
            from_dict({"data": {"train": "t.csv"}, "search": search, "registry": registry or {}}, "x.yaml")
        return str(e.value)

    assert "names 1 objective(s)" in problems({"objectives": ["val_macro_f1"]})
    assert "'speed' unknown" in problems({"objectives": ["val_macro_f1", "speed"]})
    assert "latency_ms named twice" in problems({"objectives": ["val_macro_f1", "latency_ms", "latency_ms"]})
    assert "not latency_ms; put it first" in problems({"objectives": ["latency_ms", "val_macro_f1"]})
    assert "no validation metric" in problems({"objectives": ["accuracy", "latency_ms"]})
    assert "cmaes searches one objective" in problems({"objectives": ["val_macro_f1", "params"], "sampler": "cmaes"})
    assert "nsga2 searches several objectives" in problems({"sampler": "nsga2"})
    assert "needs latency_ms in search.objectives" in problems({"objectives": ["val_macro_f1", "params"]},
                                                               {"latency_budget_ms": 20})
    assert "registry.latency_budget_ms: must be > 0" in problems({}, {"latency_budget_ms": 0})
    cfg = from_dict({"data": {"train": "t.csv"}, "search": {"objectives": ["val_macro_f1", "latency_ms"],
                                                            "sampler": "nsga2", "direction": "maximize"}})
    assert cfg.search.objectives == ["val_macro_f1", "latency_ms"]


def test_confirmation_turned_off_on_resume_leaves_the_plan_unused(study):
    cfg = _cfg(2, 2)
    confirm.plan(study, cfg)
    off = _cfg(0, 2)
    sampling = Sampling(off.space, off.training, off.search)
    # A resumed run with search.confirm off: the queued confirmations are failed, not run ...
    trial = claim(study, 5, study.lock, sampling)
    assert trial is not None and confirm.CONFIRMS not in trial.user_attrs
    skipped = [t for t in study.get_trials(states=(TrialState.FAIL,)) if confirm.CONFIRMS in t.user_attrs]
    assert len(skipped) == 4 and "search.confirm.top_k is 0 now" in skipped[0].user_attrs["fail_reason"]
    _run(study, trial, 0.99)
    # ... and the champion is the best trial of the search, not the old plan's best mean.
    best, group, groups = confirm.choose(study, confirming=False)
    assert best.value == 0.99 and group is None and groups == []


def test_confirmation_needs_a_trial_budget():
    from orchestrator.config import ConfigError

    with pytest.raises(ConfigError, match="set search.n_trials, or search.confirm.top_k: 0"):
        from_dict({"data": {"train": "t.csv"}, "search": {"n_trials": None, "timeout": 60, "confirm": {"top_k": 2}}})


def test_a_study_keeps_its_objectives(tmp_path):
    from orchestrator.data import DataError
    from orchestrator.search import objectives

    study = optuna.create_study(study_name="o", storage=f"sqlite:///{tmp_path / 'o.db'}", direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5))  # a trial from before objectives: one objective
    two = from_dict({"data": {"train": "t.csv"}, "search": {"objectives": ["val_macro_f1", "latency_ms"],
                                                            "direction": "maximize", "study_name": "o"}})
    with pytest.raises(DataError, match="has one objective"):
        objectives.check(study, two)
    fresh = optuna.create_study(study_name="p", storage=f"sqlite:///{tmp_path / 'o.db'}", direction="maximize")
    objectives.check(fresh, two)
    one = from_dict({"data": {"train": "t.csv"}, "search": {"direction": "maximize", "study_name": "p"}})
    with pytest.raises(DataError, match=r"searches \['val_macro_f1', 'latency_ms'\]"):
        objectives.check(fresh, one)
