"""Every numeric setting, and every bound and choice of every `space` entry, is range-checked before
anything is created, with the key named; limits that depend on the model or the data (positions,
layers, label names) too. A space with fewer configurations than trials never repeats one."""

import optuna
import pytest
from conftest import tiny_experiment

from orchestrator.cli import main

# (override, what the message must say); the tiny model takes 128 positions and has 2 layers.
OUT_OF_RANGE = [
    ("training.grad_clip=-1", "training.grad_clip: must be >= 0, found -1.0"),
    ("training.weight_decay=-0.01", "training.weight_decay: must be >= 0"),
    ("training.dropout=1.0", "training.dropout: must be >= 0 and < 1, found 1.0"),
    ("training.dropout=-0.1", "training.dropout: must be >= 0 and < 1, found -0.1"),
    ("training.warmup_ratio=1", "training.warmup_ratio: must be >= 0 and < 1, found 1.0"),
    ("training.log_every=0", "training.log_every: must be >= 1, found 0"),
    ("training.seed=-5", "training.seed: must be >= 0"),
    ("training.learning_rate=.nan", "training.learning_rate: must be a number, found nan"),
    ("search.timeout=.inf", "search.timeout: must be a finite number, found inf"),  # a study that never ends
    ("space.batch_size=[0]", "space.batch_size.choices: must be >= 1, found 0"),
    ("space.epochs={low: 0, high: 3}", "space.epochs.low: must be >= 1, found 0"),
    ("space.learning_rate={low: -1, high: 0.001}", "space.learning_rate.low: must be > 0 and <= 1, found -1.0"),
    ("space.dropout={low: 0.1, high: 1.5}", "space.dropout.high: must be >= 0 and < 1, found 1.5"),
    ("space.epochs={low: 1, high: 3, step: 0}", "space.epochs.step: must be > 0, found 0"),
    ("space.max_length=[0, 64]", "space.max_length.choices: must be >= 2, found 0"),
    ("space.max_length=[64, 100000]", "space.max_length: 100000 is more than"),
    ("training.max_length=512", "training.max_length: 512 is more than"),
    ("space.head=[cls, cls]", "space.head.choices: ['cls', 'cls'] repeats a value"),
    ("search.memory_target=0", "search.memory_target: must be > 0 and <= 1, found 0.0"),
    ("search.n_trials=0", "search.n_trials: must be >= 1, found 0"),
    ("search.timeout=-1", "search.timeout: must be > 0"),
    ("search.gpus_per_trial=0", "search.gpus_per_trial: must be >= 1, found 0"),
    ("data.validation_size=1.5", "data.validation_size: must be > 0 and < 1, found 1.5"),
    ("data.max_train_rows=0", "data.max_train_rows: must be >= 1, found 0"),
    ("data.max_train_rows=2", "data.max_train_rows (2) is fewer than the 3 classes"),
    ("data.label_column=text", "data.text_column and data.label_column are both 'text'"),
    ("space.epochs={low: true, high: 3}", "space.epochs: low, high and step must be whole numbers"),
    ("space.freeze_layers={low: 1, high: 2, when: {strategy: [partal]}}", "strategy is never one of ['partal']"),
    ("space.head={choices: [cls, mean], when: {head: [cls]}}", "space.head.when: head cannot depend on itself"),
    ("search.metric=val_f2", "search.metric: 'val_f2' is not a metric the trials produce"),
    ("search.direction=minimize", "search.metric: val_macro_f1 is better when higher; set search.direction: "
                                  "maximize"),
    ("search.metric=val_f1_neutrall", "search.metric: 'val_f1_neutrall' is not a metric the trials produce "
                                      "for labels ['negative', 'neutral', 'positive']"),
    ("search.metric=val_pr_auc", "is not a metric the trials produce for labels"),  # two classes only
]


def test_out_of_range_values_exit_2_naming_the_key_before_anything_exists(tmp_path, tiny_model, data_dir,
                                                                         monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    experiment = tiny_experiment(tmp_path / "r.yaml", tiny_model, data_dir, "ranges")
    failures = []
    for override, expected in OUT_OF_RANGE:
        code = main(["search", "--config", str(experiment), override])
        err = capsys.readouterr().err
        if code != 2 or expected not in err or "Traceback" in err:
            failures.append(f"{override}: exit {code}: {err[-500:]}")
    code = main(["search", "--config", str(experiment), "training.strategy=partial", "training.freeze_layers=3"])
    err = capsys.readouterr().err
    if code != 2 or "training.freeze_layers: 3 layers to freeze, but" not in err:
        failures.append(f"freeze_layers: exit {code}: {err[-500:]}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "mlruns").exists()


def test_all_problems_of_a_space_are_reported_together(tmp_path, tiny_model, data_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    experiment = tiny_experiment(tmp_path / "r.yaml", tiny_model, data_dir, "ranges")
    assert main(["search", "--config", str(experiment), "space.batch_size=[0, 16]", "space.epochs={low: 0, high: 2}",
                 "training.grad_clip=-1"]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err


@pytest.mark.slow
@pytest.mark.parametrize("space,n_configs", [({}, 1), ({"head": ["cls", "mean"]}, 2)])
def test_a_space_smaller_than_n_trials_runs_each_configuration_once(tmp_path, tiny_model, data_dir, monkeypatch,
                                                                    capsys, space, n_configs):
    monkeypatch.chdir(tmp_path)
    experiment = tiny_experiment(tmp_path / "small.yaml", tiny_model, data_dir, "small", training={"epochs": 1},
                                 search={"n_trials": 5}, registry={"register": False}, space=None)
    assert main(["search", "--config", str(experiment)] + [f"space.{k}={v}" for k, v in space.items()]) == 0
    assert f"holds {n_configs} distinct configuration(s); the study ends after {n_configs}" in capsys.readouterr().out
    trials = optuna.load_study(study_name="small", storage="sqlite:///mlruns/optuna.db").trials
    ran = [t for t in trials if "duplicate_of" not in t.user_attrs]
    assert len(ran) == n_configs
    assert len({tuple(sorted(t.params.items())) for t in ran}) == n_configs
