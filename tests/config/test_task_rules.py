"""The config knows no task: the tasks hand it their defaults and rules (`config.TaskRules`), and
every problem, the config's and the task's, still comes in one error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import orchestrator
from orchestrator.config import ConfigError, ExperimentConfig, from_dict
from orchestrator.tasks import REGISTRY, experiment_from_dict, get_task

PACKAGE = Path(orchestrator.__file__).parent
# The layers below the tasks (.importlinter): they take a task, or what it decided, but name none.
BELOW_THE_TASKS = ("config", "data", "models", "tracking", "execution")


def test_no_module_below_the_tasks_names_a_task():
    found = [f"{path.relative_to(PACKAGE.parent)}:{number}: {name}"
             for layer in BELOW_THE_TASKS for path in sorted((PACKAGE / layer).rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             for name in REGISTRY if name in line]
    assert not found, "a task named below orchestrator.tasks; take it from the tasks instead:\n" + "\n".join(found)


def test_without_the_tasks_rules_the_settings_they_decide_stay_unset():
    cfg = from_dict({"data": {"train": "a.csv", "label_separator": ";"}})  # not checked: no task is known
    assert (cfg.task, cfg.training.head, cfg.search.metric, cfg.search.direction) == (None, None, None, None)


def test_the_tasks_fill_in_the_task_head_metric_and_direction():
    cfg = experiment_from_dict({"data": {"train": "a.csv"}})
    assert (cfg.task, cfg.training.head, cfg.search.metric, cfg.search.direction) == (
        "single_label", "cls", "val_macro_f1", "maximize")
    tokens = experiment_from_dict({"task": "token_classification", "data": {"train": "a.jsonl"}})
    assert (tokens.training.head, tokens.search.metric, tokens.search.direction) == ("linear", "val_f1", "maximize")
    loss = experiment_from_dict({"data": {"train": "a.csv"}, "search": {"metric": "val_loss"}})
    assert loss.search.direction == "minimize"  # Task.maximize: a loss is better lower


def test_a_direction_against_the_metric_is_refused():
    with pytest.raises(ConfigError, match="search.metric: val_loss is better when lower; set search.direction: "
                                          "minimize"):
        experiment_from_dict({"data": {"train": "a.csv"}, "search": {"metric": "val_loss", "direction": "maximize"}})


def test_every_task_says_which_metrics_are_maximised():
    for name in REGISTRY:
        task = get_task(name)
        assert task.maximize(f"val_{task.main_metric}") and not task.maximize("val_loss"), name


def test_the_configs_problems_and_the_tasks_come_in_one_error():
    with pytest.raises(ConfigError) as caught:
        experiment_from_dict({"task": "single_label", "data": {"train": "a.csv", "label_separator": ";"},
                              "training": {"head": "linear", "epochs": 0}, "search": {"n_trials": "many"}})
    assert caught.value.problems == [
        "training.epochs: must be >= 1, found 0",
        "search.n_trials: expected int, found 'many' (str)",
        "training.head: 'linear' is not available for task single_label; use one of cls, pooler, mean, cls_mean, mlp",
        "data.label_separator: ';' splits a cell into several labels, which only task multi_label reads; set task: "
        "multi_label, or remove data.label_separator"]


def test_an_unknown_task_is_named_with_the_ones_there_are():
    with pytest.raises(ConfigError, match="task: 'multilabel' is not one of single_label, multi_label, "
                                          "token_classification"):
        experiment_from_dict({"task": "multilabel", "data": {"train": "a.csv"}})


class _OneTask:
    """The seam as any caller may fill it: what a task-less config would need from a new task."""

    def names(self) -> tuple[str, ...]:
        return ("echo",)

    def settle(self, cfg: ExperimentConfig) -> ExperimentConfig:
        return dataclasses.replace(cfg, task=cfg.task or "echo",
                                   training=dataclasses.replace(cfg.training, head=cfg.training.head or "mean"))

    def problems(self, cfg: ExperimentConfig) -> list[str]:
        return [] if cfg.training.strategy == "full" else [f"training.strategy: echo trains fully, found "
                                                           f"{cfg.training.strategy}"]


def test_any_rules_can_fill_the_seam():
    cfg = from_dict({"data": {"train": "a.csv"}}, rules=_OneTask())
    assert (cfg.task, cfg.training.head) == ("echo", "mean")
    with pytest.raises(ConfigError) as caught:
        from_dict({"data": {"train": "a.csv"}, "training": {"strategy": "frozen", "dropout": 2}}, rules=_OneTask())
    assert caught.value.problems == ["training.dropout: must be >= 0 and < 1, found 2.0",
                                     "training.strategy: echo trains fully, found frozen"]
