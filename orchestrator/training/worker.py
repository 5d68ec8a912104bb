"""`python -m orchestrator.training.worker JOB.json RESULT.json`: run one trial in this process.

Started by `processes.run_child`, one process per trial (or per rank under an Accelerate launch),
for the local executor and, on a Ray node, for the Ray executor alike. With `--wait` instead of
the paths it is a spare (`processes.Spares`): it imports what a trial needs, then reads
"JOB.json<TAB>RESULT.json" from stdin, and exits at once on end-of-file. While it waits it also
loads what a trial loads only once its job is known (`_warm_up`). Writes the trial's
`TrialOutcome` to RESULT.json (atomically); exits 0 whenever the outcome was recorded, whatever
it was. No outcome file means the process died: the driver's executor reports the trial lost.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main(args: list[str]) -> int:
    clock = time.time()  # the job's clock starts now, or for a spare when the job comes
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    from orchestrator.execution.job import WARM_START, TrialJob
    from orchestrator.training.trial import run_trial

    if args == ["--wait"]:
        _warm_up()
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            return 0  # the driver needs no more trials
        args, clock = line.split("\t"), time.time()
        os.environ[WARM_START] = "1"
    job_path, result_path = args

    outcome = run_trial(TrialJob.from_json(Path(job_path).read_text()), clock)
    if outcome is not None:
        result = Path(result_path)
        tmp = result.with_suffix(".tmp")
        tmp.write_text(outcome.to_json())
        os.replace(tmp, result)
    return 0


def _warm_up() -> None:
    """What every trial loads after its job arrives, loaded while the spare waits: transformers'
    model machinery (the first model class a process resolves costs about 2 s of a small CPU, any
    later one a fraction of a second) and every task's module (whichever the job names)."""
    from transformers import PreTrainedModel  # noqa: F401 - imported for its side effect

    from orchestrator.tasks import REGISTRY, task_class

    for name in REGISTRY:
        task_class(name)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
