"""A tag per word (NER, segmentation): the task, tag schemes, windows and the token head."""

from orchestrator.tasks.token_classification.task import TokenClassification

__all__ = ["TokenClassification"]
