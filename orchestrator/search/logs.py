"""Optuna's logging, set up once per command (`orchestrator.cli`)."""

from __future__ import annotations

import optuna


def quiet_optuna_logs() -> None:
    """Warnings and up only: Optuna's info lines ("using an existing study") are said as phases."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
