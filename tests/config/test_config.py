from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.config import ConfigError, from_dict, load_config
from orchestrator.tasks import experiment_from_dict, load_experiment

ROOT = Path(__file__).resolve().parents[2]  # the repository: experiments/ is beside tests/


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_validates(path):
    cfg = load_experiment(path)
    assert cfg.space, "shipped experiments search something"
    assert cfg.search.n_trials


def test_overrides_apply_with_types(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text("name: x\ndata: {train: a.csv}\n")
    cfg = load_config(p, ["search.n_trials=3", "training.learning_rate=2e-5", "space.head=[cls, mean]",
                          "model.name_or_path=some/model"])
    assert cfg.search.n_trials == 3
    assert cfg.training.learning_rate == pytest.approx(2e-5)  # YAML reads 2e-5 as a string; coerced
    assert cfg.space["head"].choices == ("cls", "mean")
    assert cfg.model.name_or_path == "some/model"


def test_every_problem_is_reported_together(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(
        "name: x\n"
        "data: {train: a.csv, txt_column: review}\n"
        "training: {epochs: three, head: attention, learning_rate: -1}\n"
        "space: {learning_rate: {low: 1.0e-3, high: 1.0e-5, log: true}, heads: [cls], batch_size: {choices: []}}\n"
        "search: {n_trials: 2, sampler: bayes, storage: 'mysql://db/optuna', heartbeat_interval: 100}\n"
        "colour: blue\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(p)
    text = str(err.value)
    for expected in ["data.txt_column: unknown key (did you mean 'text_column'?)",
                     "training.epochs: expected int, found 'three'",
                     "'attention' is not one of",
                     "space.learning_rate: low (0.001) is greater than high (1e-05)",
                     "space.heads: unknown hyperparameter (did you mean 'head'?)",
                     "space.batch_size.choices: must be a non-empty list",
                     "search.sampler: 'bayes' is not one of",
                     "search.storage: 'mysql://db/optuna' is not supported",
                     "search.heartbeat_interval (100) must be below search.heartbeat_grace_period (90)",
                     "colour: unknown key",
                     "training.learning_rate: must be > 0 and <= 1, found -1.0"]:
        assert expected in text, f"missing {expected!r} in:\n{text}"
    assert str(p) in text


def test_malformed_yaml_names_line_and_column(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\ndata:\n  train: [a.csv\n  test: b.csv\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+, column \d+"):
        load_config(p)


def test_space_rejects_float_range_for_int_parameter():
    with pytest.raises(ConfigError, match="space.epochs: low, high and step must be whole numbers"):
        from_dict({"data": {"train": "a.csv"}, "space": {"epochs": {"low": 1.5, "high": 3}}})


def test_cli_exits_2_on_bad_config_before_creating_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ndata: {train: a.csv}\nsearch: {n_trials: many}\n")
    assert main(["search", "--config", str(p)]) == 2
    assert "search.n_trials: expected int" in capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists()


def test_cli_exits_2_on_missing_config(tmp_path, capsys):
    assert main(["search", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_a_key_given_twice_is_an_error_not_a_silent_choice(tmp_path):
    p = tmp_path / "twice.yaml"
    p.write_text("name: first\ndata: {train: a.csv}\nname: second\n")
    with pytest.raises(ConfigError, match=r"line 3, column 1: key 'name' is given twice"):
        load_config(p)


def test_overrides_are_read_as_written(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text("name: x\ndata: {train: a.csv}\n")
    with pytest.raises(ConfigError, match=r"override 'search=': no value; write search=null"):
        load_config(p, ["search="])  # would silently reset the whole section
    # A value ending in ':' is a string (YAML would read a mapping), and gets the real check.
    with pytest.raises(ConfigError, match="search.storage: an in-memory database"):
        load_config(p, ["search.storage=sqlite:///:memory:"])
    assert load_config(p, ["tracking.experiment=a: b"]).tracking.experiment == "a: b"


def test_a_config_survives_the_trip_to_a_trial_process_with_zero_bounds_and_a_pretrain_section():
    """Trial processes rebuild the config from `to_dict()`: a bound of 0 (or 0.0) is a bound, not
    an unset field, and the pre-training section comes along."""
    cfg = experiment_from_dict({"data": {"train": "x.csv"},
                                "space": {"dropout": {"low": 0.0, "high": 0.2}, "freeze_layers": {"low": 0, "high": 2},
                                          "head": {"choices": ["cls", "mean"]}},
                                "pretrain": {"init": "scratch", "corpus": ["a.txt"], "max_minutes": 5}})
    again = from_dict(cfg.to_dict())  # as a trial process rebuilds it: without the tasks' rules
    assert again.space == cfg.space and again.space["dropout"].low == 0.0
    assert again.pretrain == cfg.pretrain


@pytest.mark.parametrize("experiment", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_reaches_its_trial_processes_unchanged(experiment):
    cfg = load_experiment(experiment)
    assert from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_sampler_and_pruner_options_are_checked_against_their_tables(tmp_path):
    p = tmp_path / "options.yaml"
    p.write_text("name: x\ndata: {train: a.csv}\n"
                 "space: {learning_rate: {low: 1.0e-5, high: 1.0e-3}, evals_per_epoch: [1, 2]}\n"
                 "search: {sampler: tpe, sampler_options: {multivariate: yes-please, n_ei: 3},\n"
                 "         pruner: successive_halving, pruner_options: {min_resource: soon, reduction_factor: 1},\n"
                 "         trials_per_gpu: 0}\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(p)
    text = str(err.value)
    for expected in ["search.sampler_options.multivariate: expected bool, found 'yes-please'",
                     "search.sampler_options.n_ei: not an option of sampler tpe (its options: multivariate, "
                     "constant_liar,",
                     "search.pruner_options.min_resource: expected a whole number or 'auto', found 'soon'",
                     "search.pruner_options.reduction_factor: must be >= 2, found 1",
                     "search.trials_per_gpu: must be auto or >= 1, found 0",
                     "space.evals_per_epoch: not searchable"]:
        assert expected in text, f"missing {expected!r} in:\n{text}"
    assert text.count("min_resource") == 1  # one line for a setting of two types, not one per type


def test_grid_needs_a_listed_space_and_settled_options_are_complete(tmp_path):
    p = tmp_path / "grid.yaml"
    p.write_text("name: x\ndata: {train: a.csv}\nspace: {learning_rate: {low: 1.0e-5, high: 1.0e-3}}\n"
                 "search: {sampler: grid, sampler_options: {seed: 3}}\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(p)
    assert "space.learning_rate is a continuous range" in str(err.value)
    assert "search.sampler_options.seed: not an option of sampler grid (its options: none)" in str(err.value)
    p.write_text("name: x\ndata: {train: a.csv}\nsearch: {pruner: percentile, pruner_options: {percentile: 40}}\n")
    options = load_experiment(p).search.pruner_options
    assert options == {"percentile": 40.0, "interval_steps": 1, "n_min_trials": 1}  # on record as run
