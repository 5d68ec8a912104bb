"""The local executor: each trial in a child process on this machine, one per slot (a GPU, a
group of GPUs, or a share of the CPU cores)."""

from __future__ import annotations

from typing import Callable

from orchestrator.config import paths
from orchestrator.execution.base import Executor
from orchestrator.execution.job import TrialJob, TrialOutcome
from orchestrator.execution.processes import Spares, run_child
from orchestrator.execution.slots import Slot


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, slots: list[Slot], spares: bool = True):
        self._slots = {s.name: s for s in slots}
        self.slots = list(self._slots)
        self._spares = Spares() if spares else None
        self._more = True

    @property
    def cpu_only(self) -> bool:
        return all(slot.cpu for slot in self._slots.values())

    def warm_up(self, secrets: dict[str, str]) -> None:
        # The first trial's process imports while the driver prepares the data and fits the baseline.
        if self._spares:
            for slot in self._slots.values():
                self._spares.start(slot, secrets)

    def expect_more(self, more: bool) -> None:
        self._more = more

    def run(self, job: TrialJob, slot: str, on_event: Callable[[dict], None]) -> TrialOutcome:
        jobs = paths.inside(self.study_dir, self.study_dir / "jobs")
        jobs.mkdir(parents=True, exist_ok=True)
        job_path, result_path = jobs / f"trial-{job.number}.json", jobs / f"trial-{job.number}.result.json"
        result_path.unlink(missing_ok=True)
        job_path.write_text(job.to_json())  # passwords redacted: the real URLs go by environment
        child = run_child(self._slots[slot], job_path, result_path, self.log_path(job), on_event, self.children,
                          self.secrets, self._spares, start_next=self._more)
        if result_path.exists():
            return TrialOutcome.from_json(result_path.read_text())
        return TrialOutcome("FAIL", reason=child.reason or "trial process ended without recording an outcome",
                            lost=True)

    def close(self) -> None:
        if self._spares:
            self._spares.close()
