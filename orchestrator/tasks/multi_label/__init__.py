"""A set of labels per text: the task, per-label thresholds and iterative-stratified splits."""

from orchestrator.tasks.multi_label.task import MultiLabel

__all__ = ["MultiLabel"]
