"""MLflow's logging, set up once per command (`orchestrator.cli`)."""

from __future__ import annotations

import logging

import mlflow  # noqa: F401 - importing it installs MLflow's own log handler

from orchestrator.config.secrets import ScrubFilter


def quiet_mlflow_logs() -> None:
    """MLflow's log handler must scrub secrets too; its notes (e.g. on creating its tables) are
    noise between a command's own lines: warnings and up only."""
    for handler in logging.getLogger("mlflow").handlers:
        handler.addFilter(ScrubFilter())
    logging.getLogger("mlflow").setLevel(logging.WARNING)
