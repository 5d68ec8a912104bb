"""One number per text or sentence pair: the task, its metrics, plots and ridge baseline."""

from orchestrator.tasks.regression.task import Regression

__all__ = ["Regression"]
