"""`python -m orchestrator.worker JOB.json`: run one trial in this process (see `trial.py`).

Started by the driver, one process per trial (or per rank under an Accelerate launch). Writes
the outcome next to the job file; exits 0 whenever the outcome was recorded, whatever it was.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    from orchestrator.trial import run_trial

    outcome = run_trial(job)
    if outcome is not None:
        tmp = Path(job["result"]).with_suffix(".tmp")
        tmp.write_text(json.dumps(outcome))
        os.replace(tmp, job["result"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
