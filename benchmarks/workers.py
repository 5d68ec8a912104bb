"""CPU trials at once: one trial with every core, or one trial per core? The measurement behind
`--workers auto` (`THREADS_PER_TRIAL` in orchestrator/execution/slots.py).

    nice -n 10 python benchmarks/workers.py [key=value ...]    # several minutes of every core

Runs the same small study twice, each in a fresh folder with its own MLflow and Optuna stores:
`--workers 1` (one trial at a time, all cores: 2 threads on a 2-core machine) and `--workers N`
(N = the core count: one thread each). The study is experiments/demo.yaml cut down so that every
trial does the same work (4 trials of 1 epoch on 200 training rows, batch 16, mean pooling; only
the learning rate is searched; no pruning, no registration), so the two runs differ in how the
cores are shared and nothing else. Records the search's wall time and the trials' span (first
trial start to last trial end, which leaves out the data preparation, baseline and champion both
runs share), with the machine, versions and commit, in
benchmarks/results/perf/workers-cpu.json. Whichever threads per trial finished the trials sooner
is the `THREADS_PER_TRIAL` that `--workers auto` should use; the file says which.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tasks  # noqa: E402 - machine and versions

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "demo.yaml"
STUDY = ["search.n_trials=4", "training.epochs=1", "data.max_train_rows=200", "space.epochs=[1]",
         "space.batch_size=[16]", "space.head=[mean]", "search.pruner=none", "search.pruner_options={}",
         "registry.register=false"]


def run(workers: int, overrides: list[str]) -> dict:
    """One search with `--workers workers` in a fresh folder; its wall time and its trials' span."""
    import optuna

    folder = Path(tempfile.mkdtemp(prefix=f"bench-workers-{workers}-"))
    load = os.getloadavg()[0]  # a machine shared with other work favours more processes: say how busy it was
    stores = [f"search.storage=sqlite:///{folder}/optuna.db", f"tracking.uri=sqlite:///{folder}/mlflow.db",
              f"tracking.artifact_location={folder}/artifacts", f"search.work_dir={folder}/studies"]
    start = time.perf_counter()
    # From the project root: the experiment names its data relative to it.
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "search", "--config", str(CONFIG), "--workers",
                           str(workers), *stores, *STUDY, *overrides], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (folder / "search.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"--workers {workers}: search failed (exit {proc.returncode}); see {folder / 'search.log'}")
    study = optuna.load_study(study_name=_study_name(overrides), storage=f"sqlite:///{folder}/optuna.db")
    trials = [t for t in study.trials if t.datetime_start and t.datetime_complete]
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    cores = os.cpu_count() or 1
    return {"workers": workers, "threads_per_trial": max(1, cores // workers), "load_average_at_start": load,
            "wall_seconds": round(seconds, 1),
            "trials_seconds": round(span, 1), "trials": [t.state.name for t in study.trials],
            "trial_seconds": [t.user_attrs.get("wall_seconds") for t in study.trials],
            "best_value": study.best_value, "log": str(folder / "search.log")}


def _study_name(overrides: list[str]) -> str:
    from orchestrator.tasks import load_experiment

    return load_experiment(CONFIG, [*STUDY, *overrides]).study_name


def main() -> None:
    overrides = sys.argv[1:]
    machine = tasks._machine()  # the code that runs is the code at the start
    cores = os.cpu_count() or 1
    runs = [run(1, overrides), run(cores, overrides)] if cores > 1 else [run(1, overrides)]
    faster = min(runs, key=lambda r: r["trials_seconds"])
    result = {"study": {"config": str(CONFIG.relative_to(ROOT)), "overrides": [*STUDY, *overrides]},
              "runs": runs, "fastest_threads_per_trial": faster["threads_per_trial"],
              "note": "THREADS_PER_TRIAL in orchestrator/execution/slots.py is set by hand from "
                      "fastest_threads_per_trial", **machine}
    out = ROOT / "benchmarks" / "results" / "perf" / "workers-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
