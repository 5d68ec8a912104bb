import dataclasses
import inspect

import optuna
import pytest

from orchestrator.config import components, from_dict
from orchestrator.config import space as space_mod
from orchestrator.search.components import PRUNERS, SAMPLERS, make_pruner, make_sampler, warmup_evaluations

SAMPLER_CLASSES = {"tpe": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler,
                   "cmaes": optuna.samplers.CmaEsSampler, "qmc": optuna.samplers.QMCSampler,
                   "random": optuna.samplers.RandomSampler, "grid": optuna.samplers.GridSampler,
                   "nsga2": optuna.samplers.NSGAIISampler}
PRUNER_CLASSES = {"median": optuna.pruners.MedianPruner, "percentile": optuna.pruners.PercentilePruner,
                  "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
                  "hyperband": optuna.pruners.HyperbandPruner, "wilcoxon": optuna.pruners.WilcoxonPruner,
                  "none": optuna.pruners.NopPruner}
SPACE = {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}, "epochs": {"low": 1, "high": 3},
         "head": ["cls", "mean"]}
GRID_SPACE = {"learning_rate": [1e-5, 1e-4], "epochs": {"low": 1, "high": 2}, "head": ["cls", "mean"]}


def _config(search: dict, space: dict = SPACE, training: dict | None = None):
    if search.get("sampler") == "nsga2":  # a sampler of several objectives: the front's (search/objectives.py)
        search = {"objectives": ["val_macro_f1", "latency_ms"], **search}
    return from_dict({"data": {"train": "t.csv"}, "space": space, "search": search, "training": training or {}})


def test_the_tables_name_the_same_components_and_only_real_keywords():
    assert set(SAMPLERS) == set(components.SAMPLER_OPTIONS) == set(SAMPLER_CLASSES)
    assert set(PRUNERS) == set(components.PRUNER_OPTIONS) == set(PRUNER_CLASSES)
    for table, classes in ((components.SAMPLER_OPTIONS, SAMPLER_CLASSES), (components.PRUNER_OPTIONS, PRUNER_CLASSES)):
        for name, options in table.items():
            keywords = set(inspect.signature(classes[name].__init__).parameters)
            unknown = {f.name for f in dataclasses.fields(options)} - keywords
            assert not unknown, f"{name}: {unknown} are not keywords of {classes[name].__name__}"


@pytest.mark.parametrize("name", sorted(SAMPLER_CLASSES))
def test_every_sampler_draws_trials_of_the_space(name):
    cfg = _config({"sampler": name, "n_trials": 6}, GRID_SPACE if name == "grid" else SPACE)
    study = optuna.create_study(direction="maximize")
    seen = []
    for number in range(6):
        study.sampler = make_sampler(cfg.search, number, cfg.space)
        assert isinstance(study.sampler, SAMPLER_CLASSES[name])
        trial = study.ask()
        space_mod.suggest(trial, cfg.space, cfg.training)
        seen.append(tuple(sorted(trial.params.items())))
        study.tell(trial, trial.params["learning_rate"] * 1000 + trial.params["epochs"])
    assert all(set(dict(p)) == set(SPACE) for p in seen)
    if name == "grid":  # a grid never repeats a point while one is left
        assert len(set(seen)) == 6


def test_options_reach_the_sampler_and_qmc_keeps_the_studys_seed():
    cfg = _config({"sampler": "tpe", "sampler_options": {"multivariate": False, "n_startup_trials": 7}})
    tpe = make_sampler(cfg.search, 3, cfg.space)
    assert tpe._multivariate is False and tpe._n_startup_trials == 7  # noqa: SLF001 - what was asked reached Optuna
    default = make_sampler(_config({"sampler": "tpe", "n_trials": 6}).search)
    assert default._multivariate and default._constant_liar and default._n_startup_trials == 3  # noqa: SLF001
    qmc = _config({"sampler": "qmc"}).search
    assert make_sampler(qmc, 0)._seed == make_sampler(qmc, 5)._seed == qmc.seed  # noqa: SLF001


def test_halving_waits_for_the_warm_up_and_the_start_up_trials():
    cfg = _config({"pruner": "successive_halving", "pruner_warmup_epochs": 1, "pruner_startup_trials": 1,
                   "pruner_options": {"min_resource": 1, "reduction_factor": 2}}, training={"evals_per_epoch": 2})
    pruner = make_pruner(cfg.search, cfg.training.evals_per_epoch)
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    first = study.ask()
    first.report(0.1, 1)
    assert not first.should_prune()  # no trial finished yet
    study.tell(first, 0.9)
    for value in (0.8, 0.85):
        other = study.ask()
        for step in (1, 2, 3):
            other.report(value, step)
            assert not other.should_prune()
        study.tell(other, value)
    poor = study.ask()
    poor.report(0.01, 1)
    assert not poor.should_prune()  # evaluation 1 of 2 a epoch: inside the warm-up of one epoch
    poor.report(0.01, 2)
    assert poor.should_prune()


def test_hyperband_stays_a_hyperband_for_the_samplers_and_warm_up_counts_evaluations():
    cfg = _config({"pruner": "hyperband", "pruner_warmup_epochs": 0.5}, training={"evals_per_epoch": 4})
    assert isinstance(make_pruner(cfg.search, 4), optuna.pruners.HyperbandPruner)
    assert warmup_evaluations(0.5, 4) == 2 and warmup_evaluations(2, 1) == 2
    median = make_pruner(_config({"pruner": "median", "pruner_warmup_epochs": 1.5}).search, 2)
    assert median._n_warmup_steps == 3  # noqa: SLF001


@pytest.mark.parametrize("name", sorted(PRUNER_CLASSES))
def test_every_pruner_builds_with_its_defaults(name):
    assert isinstance(make_pruner(_config({"pruner": name}).search), PRUNER_CLASSES[name])


def test_a_pruner_that_can_never_act_is_said():
    from orchestrator.search.components import idle_pruner

    assert idle_pruner(_config({"pruner": "median"})) is None
    assert "warm-up of 3 epochs is not shorter than the longest trial (3 epochs)" in \
        idle_pruner(_config({"pruner": "median", "pruner_warmup_epochs": 3}))
    assert "waits for 5 finished trials and the study has 5" in \
        idle_pruner(_config({"pruner": "hyperband", "pruner_startup_trials": 5, "n_trials": 5}))
    assert idle_pruner(_config({"pruner": "none", "pruner_warmup_epochs": 30})) is None
