import optuna

from orchestrator.config import from_dict
from orchestrator.config.space import suggest


def test_suggest_samples_every_parameter_within_its_range():
    cfg = from_dict({"data": {"train": "a.csv"}, "space": {
        "learning_rate": {"low": 1e-5, "high": 1e-4, "log": True},
        "epochs": {"low": 2, "high": 4},
        "head": ["cls", "mean"],
        "strategy": ["full", "partial"],
        "freeze_layers": {"low": 1, "high": 3, "when": {"strategy": ["partial"]}},
    }})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_strategies = set()
    for _ in range(20):
        trial = study.ask()
        params = suggest(trial, cfg.space, cfg.training)
        assert 1e-5 <= params.learning_rate <= 1e-4
        assert params.epochs in (2, 3, 4) and isinstance(params.epochs, int)
        assert params.head in ("cls", "mean")
        # The conditional parameter exists only for the strategy that uses it.
        assert ("freeze_layers" in trial.params) == (params.strategy == "partial")
        seen_strategies.add(params.strategy)
        study.tell(trial, 0.5)
    assert seen_strategies == {"full", "partial"}


def test_unsearched_values_come_from_training_defaults():
    cfg = from_dict({"data": {"train": "a.csv"}, "training": {"batch_size": 8, "head": "mean"},
                     "space": {"epochs": {"low": 1, "high": 1}}})
    params = suggest(optuna.create_study().ask(), cfg.space, cfg.training)
    assert (params.batch_size, params.head, params.epochs) == (8, "mean", 1)


def test_configurations_list_each_distinct_one_once_with_conditions():
    from orchestrator.config.space import configurations, count_configurations

    cfg = from_dict({"data": {"train": "a.csv"}, "space": {
        "head": ["cls", "mean"], "strategy": ["full", "partial"],
        "freeze_layers": {"low": 1, "high": 3, "when": {"strategy": ["partial"]}},
        "dropout": {"low": 0.0, "high": 0.2, "step": 0.1}}})
    every = configurations(cfg.space, cfg.training)
    # head x (full + partial x 3 layers) x 3 dropouts
    assert len(every) == count_configurations(cfg.space, cfg.training) == 2 * (1 + 3) * 3
    assert len({tuple(sorted(c.items())) for c in every}) == len(every)
    assert all(("freeze_layers" in c) == (c["strategy"] == "partial") for c in every)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):  # what the sampler draws is always one of the listed configurations
        trial = study.ask()
        suggest(trial, cfg.space, cfg.training)
        assert trial.params in every
        study.tell(trial, 0.0)
    assert count_configurations(from_dict({"data": {"train": "a.csv"}}).space, cfg.training) == 1
    continuous = from_dict({"data": {"train": "a.csv"}, "space": {"learning_rate": {"low": 1e-5, "high": 1e-4}}})
    assert count_configurations(continuous.space, continuous.training) is None
    assert configurations(continuous.space, continuous.training) is None


def test_conditions_on_conditional_parameters_are_followed_in_any_order():
    from orchestrator.config.space import configurations, count_configurations

    # freeze_layers listed first, though it depends on strategy, which depends on head
    cfg = from_dict({"data": {"train": "a.csv"}, "space": {
        "freeze_layers": {"low": 1, "high": 3, "when": {"strategy": ["partial"]}},
        "strategy": {"choices": ["full", "partial"], "when": {"head": ["cls"]}},
        "head": ["cls", "mean"]}})
    assert count_configurations(cfg.space, cfg.training) == 5  # mean; cls+full; cls+partial x 3
    every = configurations(cfg.space, cfg.training)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    partial = 0
    for _ in range(40):
        trial = study.ask()
        params = suggest(trial, cfg.space, cfg.training)
        assert trial.params in every
        if params.strategy == "partial":
            partial += 1
            assert params.freeze_layers in (1, 2, 3)  # sampled, not left at the default 0
        study.tell(trial, 0.0)
    assert partial > 0
