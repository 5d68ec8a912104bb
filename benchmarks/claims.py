"""What the shared trial budget costs: claims per second through the study lock.

    python benchmarks/claims.py [--postgres postgresql://...] [--trials 200]

For each storage and 1 or 4 processes, the processes claim trials (lock, count, `study.ask`)
and end them at once until the study holds `--trials` COMPLETE trials. Prints a Markdown table:
wall time, claims per second, milliseconds per claim, and whether the count came out exact.
A real trial takes minutes, so the budget's cost is what is left over from these milliseconds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import tempfile
import time
import uuid


def claimer(url: str, name: str, n: int) -> None:
    import optuna

    from orchestrator.config import SearchConfig
    from orchestrator.search.study import StudyLock, claim, finished, make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=make_storage(SearchConfig(storage=url)))
    lock = StudyLock(url, name)
    while True:
        trial = claim(study, n, lock)
        if trial is None:
            if finished(study) >= n:
                return
            continue
        study.tell(trial, trial.suggest_float("x", 0, 1))


def run(url: str, processes: int, n: int) -> dict:
    import optuna

    from orchestrator.config import SearchConfig
    from orchestrator.search.study import make_storage

    name = f"bench-{uuid.uuid4().hex[:8]}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name=name, storage=make_storage(SearchConfig(storage=url)))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=claimer, args=(url, name, n)) for _ in range(processes)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    seconds = time.perf_counter() - start
    complete = len(optuna.load_study(study_name=name, storage=url).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,)))
    return {"seconds": seconds, "complete": complete}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default=None, help="a PostgreSQL URL (scripts/postgres.sh start prints one)")
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    storages = {"sqlite": f"sqlite:///{tempfile.mkdtemp()}/optuna.db"}
    if args.postgres:
        storages["postgresql"] = args.postgres
    print(f"machine: {platform.machine()}, {multiprocessing.cpu_count()} cores; {args.trials} trials per study")
    print("| storage | processes | wall s | claims/s | ms per claim | COMPLETE |")
    print("|---|---|---|---|---|---|")
    for label, url in storages.items():
        for processes in (1, 4):
            r = run(url, processes, args.trials)
            # Wall time includes each process's start-up (imports), so ms per claim is an upper bound.
            exact = "exact" if r["complete"] == args.trials else "WRONG"
            print(f"| {label} | {processes} | {r['seconds']:.1f} | {args.trials / r['seconds']:.0f} | "
                  f"{1000 * r['seconds'] / args.trials:.1f} | {r['complete']} ({exact}) |")


if __name__ == "__main__":
    main()
