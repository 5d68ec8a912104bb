"""The Executor seam: where a trial runs is the executor's business, and nobody else's.

The driver (`search/driver.py`) owns the study: sampling, the budget lock, recovery. For each claimed
trial one of its slot threads calls `executor.run(job, slot, on_event)`, which blocks until the
trial ends and returns its `TrialOutcome`; `on_event` receives the trial's progress events
meanwhile. An executor has one slot per trial it can run at once. Running trials are registered
in the driver's `Children`, so an interrupt stops them wherever they are.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

from orchestrator.execution.job import TrialJob, TrialOutcome
from orchestrator.execution.processes import Children


class ExecutorError(ValueError):
    """The executor cannot run trials as configured (no cluster at that address, no resources)."""


class Executor(ABC):
    name: str
    slots: list[str]  # one per trial that can run at once
    keeps_local_checkpoints: bool = True  # trials run on the driver's disk

    def open(self, study_dir: Path, secrets: dict[str, str], children: Children) -> None:
        """Before the first trial: the study's folder, the stores' real URLs, the running set."""
        self.study_dir, self.secrets, self.children = study_dir, secrets, children

    def warm_up(self, secrets: dict[str, str]) -> None:
        """As soon as the driver knows its slots, before the study's data and baseline: start what
        the first trials will need, so that it is ready when they come."""

    def expect_more(self, more: bool) -> None:
        """Whether trials may follow the ones claimed so far (False once the budget is claimed):
        nothing need be made ready for a trial that will not come."""

    def siblings(self, slot: str) -> list[str]:
        """The slots that share `slot`'s device, itself included (`search.trials_per_gpu`): a trial
        re-run alone holds them all."""
        return [slot]

    def alone(self, slot: str) -> str:
        """Where a trial that ran out of memory in the packed `slot` runs with the device to itself
        (a slot name `run` takes, though not in `slots`); `slot` itself where it is not packed."""
        return slot

    @abstractmethod
    def run(self, job: TrialJob, slot: str, on_event: Callable[[dict], None]) -> TrialOutcome:
        """Run one trial to its end. A trial whose process or node died is `lost`."""

    def log_path(self, job: TrialJob) -> Path:
        return self.study_dir / "logs" / f"trial-{job.number}.log"

    def close(self) -> None:
        """After the last trial."""
