"""One label per text: the task, its metrics, confusion plots and TF-IDF baseline."""

from orchestrator.tasks.single_label.task import SingleLabel

__all__ = ["SingleLabel"]
