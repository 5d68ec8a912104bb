"""The local executor: each trial in a child process on this machine, one per slot (a GPU, a
group of GPUs, a share of a GPU, or a share of the CPU cores). A GPU's packed slots have one more
slot beside them, the whole GPU (`slots.whole`), where a trial that ran out of memory packed is
re-run alone: it is no slot of its own, since the driver runs it there only while it holds every
packed slot of that GPU."""

from __future__ import annotations

from typing import Callable

from orchestrator.config import paths
from orchestrator.execution.base import Executor
from orchestrator.execution.job import TrialJob, TrialOutcome
from orchestrator.execution.processes import Spares, run_child
from orchestrator.execution.slots import Slot, whole


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, slots: list[Slot], spares: bool = True):
        self._slots = {s.name: s for s in slots}
        self.slots = list(self._slots)
        self._whole = {w.name: w for w in (whole(s) for s in slots if s.share < 1)}
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

    def siblings(self, slot: str) -> list[str]:
        group = self._slots[slot].group
        return [name for name, s in self._slots.items() if s.group == group]

    def alone(self, slot: str) -> str:
        return self._slots[slot].group if self._slots[slot].share < 1 else slot

    def run(self, job: TrialJob, slot: str, on_event: Callable[[dict], None]) -> TrialOutcome:
        jobs = paths.inside(self.study_dir, self.study_dir / "jobs")
        jobs.mkdir(parents=True, exist_ok=True)
        job_path, result_path = jobs / f"trial-{job.number}.json", jobs / f"trial-{job.number}.result.json"
        result_path.unlink(missing_ok=True)
        job_path.write_text(job.to_json())  # passwords redacted: the real URLs go by environment
        # The whole GPU runs a trial now and then: no spare process waits for it.
        spares = self._spares if slot in self._slots else None
        child = run_child(self._slots.get(slot) or self._whole[slot], job_path, result_path, self.log_path(job),
                          on_event, self.children, self.secrets, spares, start_next=self._more)
        if result_path.exists():
            return TrialOutcome.from_json(result_path.read_text())
        return TrialOutcome("FAIL", reason=child.reason or "trial process ended without recording an outcome",
                            lost=True)

    def close(self) -> None:
        if self._spares:
            self._spares.close()
