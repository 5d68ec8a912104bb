"""What the config needs to know of the tasks, without knowing any: the seam between this bottom
layer and `orchestrator.tasks`, which implements it (`orchestrator.tasks.experiment`).

`load_config` / `from_dict` take such rules; without them a config is checked on its own terms
only, and the settings whose default depends on the task are left unset.
"""

from __future__ import annotations

from typing import Protocol

from orchestrator.config.schema import ExperimentConfig


class TaskRules(Protocol):
    def names(self) -> tuple[str, ...]:
        """Every value `task:` may take."""

    def settle(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """`cfg` with the settings its task decides left unset filled in (the task itself, the
        head, the search metric and its direction). A task not in `names()` is left as it is."""

    def problems(self, cfg: ExperimentConfig) -> list[str]:
        """The task's own rules, broken by `cfg` (of a task in `names()`): one line each, naming the key."""
