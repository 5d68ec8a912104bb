"""Extractive question answering (SQuAD, CMRC 2018): the task, data reading, windows, metrics, baseline, model."""

from orchestrator.tasks.question_answering.task import QuestionAnswering

__all__ = ["QuestionAnswering"]
