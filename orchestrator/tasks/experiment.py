"""The experiment's config with the tasks' defaults and rules: what every command loads.

`orchestrator.config`, the bottom layer, names no task; it takes the tasks' rules through its
`TaskRules` seam, and these are they: the default task, and of the experiment's task the default
head, search metric and direction (`Task.maximize`), and the rules that depend on the task (its
heads, imbalance handling and metrics, who reads `data.label_separator`, and the task's own
`config_problems`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from orchestrator.config import ExperimentConfig, from_dict, load_config
from orchestrator.tasks import DEFAULT_TASK, REGISTRY, get_task, task_class


class RegistryRules:
    """`orchestrator.config.TaskRules` of the tasks in `REGISTRY`."""

    def names(self) -> tuple[str, ...]:
        return tuple(REGISTRY)

    def settle(self, cfg: ExperimentConfig) -> ExperimentConfig:
        name = cfg.task or DEFAULT_TASK
        if name not in REGISTRY:
            return cfg  # reported against `names()`
        task = get_task(name, cfg)
        first = (cfg.search.objectives or [None])[0]  # search.objectives starts with the quality metric
        metric = cfg.search.metric or (first if first and first.startswith("val_") else f"val_{task.main_metric}")
        direction = cfg.search.direction or ("maximize" if task.maximize(metric) else "minimize")
        return dataclasses.replace(cfg, task=name,
                                   training=dataclasses.replace(cfg.training, head=cfg.training.head or task.heads[0]),
                                   search=dataclasses.replace(cfg.search, metric=metric, direction=direction))

    def problems(self, cfg: ExperimentConfig) -> list[str]:
        task = get_task(cfg.task, cfg)
        problems = []
        for name, allowed in (("head", task.heads), ("imbalance", task.imbalance)):
            p = cfg.space.get(name)
            values = [(f"training.{name}", getattr(cfg.training, name))]
            values += [(f"space.{name}.choices", v) for v in (p.choices or ())] if p is not None else []
            problems += [f"{key}: {value!r} is not available for task {cfg.task}; use one of {', '.join(allowed)}"
                         for key, value in values if value is not None and value not in allowed]
        problem = task.metric_problem(cfg.search.metric, cfg.search.direction)
        if problem:
            problems.append(f"search.metric: {problem}")
        separator = cfg.data.label_separator
        if separator and not task.splits_label_cells:
            # Was ignored: 'a;b' became one class named 'a;b'.
            readers = [n for n in REGISTRY if task_class(n).splits_label_cells]
            problems.append(f"data.label_separator: {separator!r} splits a cell into several labels, which only task "
                            f"{' or '.join(readers)} reads; set task: {readers[0]}, or remove data.label_separator")
        if not task.numeric_target:  # would be ignored: a classifier trains with its own loss, on labels
            readers = " or ".join(n for n in REGISTRY if task_class(n).numeric_target)
            for name in ("loss", "standardize_target"):
                keys = [f"training.{name}"] * (getattr(cfg.training, name) is not None)
                keys += [f"space.{name}"] * (name in cfg.space)
                problems += [f"{key} is read only by task {readers} (a number to predict); task {cfg.task} trains "
                             f"with its own loss on labels: remove {key}" for key in keys]
        if cfg.data.text_pair_column and not task.reads_text_pairs:
            readers = [n for n in REGISTRY if task_class(n).reads_text_pairs]
            problems.append(f"data.text_pair_column: {cfg.data.text_pair_column!r} makes each example a pair of texts, "
                            f"which only task {' or '.join(readers)} reads; set task: {readers[0]}, or remove "
                            f"data.text_pair_column")
        return problems + task.config_problems(cfg)


RULES = RegistryRules()


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """`orchestrator.config.load_config` with the tasks' defaults and rules."""
    return load_config(path, overrides, rules=RULES)


def experiment_from_dict(raw: dict, source: str = "<dict>") -> ExperimentConfig:
    """`orchestrator.config.from_dict` with the tasks' defaults and rules."""
    return from_dict(raw, source, rules=RULES)
