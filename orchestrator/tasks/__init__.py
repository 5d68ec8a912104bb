"""What is predicted: one module per task, registered here by name (the experiment's `task:`).

Adding a task is adding its module and one line to `REGISTRY`; nothing else branches on the task.
"""

from __future__ import annotations

import importlib

from orchestrator.tasks.base import Artifact, Evaluation, Task

REGISTRY = {
    "single_label": "orchestrator.tasks.single_label:SingleLabel",
    "multi_label": "orchestrator.tasks.multi_label:MultiLabel",
    "token_classification": "orchestrator.tasks.token_classification:TokenClassification",
    "question_answering": "orchestrator.tasks.question_answering:QuestionAnswering",
    "regression": "orchestrator.tasks.regression:Regression",
}
DEFAULT_TASK = "single_label"  # an experiment's task when it names none


def task_class(name: str) -> type[Task]:
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def get_task(name: str, cfg=None) -> Task:
    """The task `name`, with the experiment's settings when given (a `KeyError` for an unknown name)."""
    return task_class(name)(cfg)


def task_of(splits) -> Task:
    """The task the splits were made for (their fingerprint record says), with default settings."""
    return get_task(splits.record.get("settings", {}).get("task", DEFAULT_TASK))


# After REGISTRY, which it reads: the config with the tasks' defaults and rules.
from orchestrator.tasks.experiment import experiment_from_dict, load_experiment  # noqa: E402

__all__ = ["Artifact", "DEFAULT_TASK", "Evaluation", "REGISTRY", "Task", "experiment_from_dict", "get_task",
           "load_experiment", "task_class", "task_of"]
