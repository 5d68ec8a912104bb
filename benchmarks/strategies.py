"""What each fine-tuning strategy costs per epoch on the demo data and model (this machine).

    python benchmarks/strategies.py [--epochs 1] [--max-length 128] [--batch-size 16]

Each strategy trains in a fresh process so peak memory (max RSS) is its own. Prints a Markdown
table with seconds per epoch, samples/s, peak RSS, trainable parameters, and ratios to `full`.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

STRATEGIES = ("full", "partial", "frozen")


def one(strategy: str, args) -> dict:
    from orchestrator.data import load_splits
    from orchestrator.models.sources import resolve_model
    from orchestrator.tasks import get_task, load_experiment
    from orchestrator.training.loop import train

    cfg = load_experiment("experiments/demo.yaml")
    splits = load_splits(cfg.data, get_task(cfg.task, cfg))
    params = cfg.training.__class__(**{**cfg.training.__dict__, "strategy": strategy, "freeze_layers": 3,
                                       "epochs": args.epochs, "max_length": args.max_length,
                                       "batch_size": args.batch_size, "head": "mean"})
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = train(params, cfg.model, splits, resolve_model(cfg.model).path)
    return {"strategy": strategy, "seconds_per_epoch": result.seconds_per_epoch,
            "samples_per_second": result.samples_per_second, "wall_seconds": time.perf_counter() - start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_train_mb": rss_before / 1024, "trainable_parameters": result.trainable_parameters,
            "val_macro_f1": result.best_metrics.get("val_macro_f1")}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--one", choices=STRATEGIES)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.one, args)))
        return
    rows = []
    for s in STRATEGIES:
        out = subprocess.run([sys.executable, __file__, "--one", s, "--epochs", str(args.epochs), "--max-length",
                              str(args.max_length), "--batch-size", str(args.batch_size)],
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:]))
    full = rows[0]
    import os
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; demo data (480 train rows), all-MiniLM-L6-v2, max_length "
          f"{args.max_length}, batch {args.batch_size}, fp32 CPU\n")
    print("| strategy | s / epoch | samples / s | speed-up vs full | peak RSS (MB) | trainable params |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['strategy']} | {r['seconds_per_epoch']:.1f} | {r['samples_per_second']:.1f} | "
              f"{full['seconds_per_epoch'] / r['seconds_per_epoch']:.2f}x | {r['peak_rss_mb']:.0f} | "
              f"{r['trainable_parameters']:,} |")


if __name__ == "__main__":
    main()
