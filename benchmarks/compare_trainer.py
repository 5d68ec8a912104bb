"""One fine-tune, side by side: an orchestrator trial's training loop against `transformers.Trainer`.

    python benchmarks/compare_trainer.py [--rounds 2] [--epochs 1] [--batch-size 16] [--max-length 128]

The same model (the demo's all-MiniLM-L6-v2 with the encoder's pooler and a linear layer, which is
what `AutoModelForSequenceClassification` builds), data (the demo's splits), hyperparameters,
epochs and seed, through:
  orchestrator            `orchestrator.training.loop.train` as a trial runs it (length-grouped batches)
  orchestrator-shuffled   the same with `training.group_by_length=false` (plain shuffling)
  trainer-dynamic         the Trainer with `DataCollatorWithPadding`
  trainer-max-length      the Trainer padding every text to max_length (the common recipe)
Every run is a fresh process; the order alternates between rounds. Prints and writes
benchmarks/results/perf/compare_trainer-<device>.json: train samples/s (training steps only),
process wall time, peak memory, validation and test macro-F1 per run, medians and the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hf_trainer  # noqa: E402 - the Trainer side
import tasks  # noqa: E402 - machine and versions

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("orchestrator", "orchestrator-shuffled", "trainer-dynamic", "trainer-max-length")
RECIPE = {"learning_rate": 1e-4, "warmup_ratio": 0.1, "weight_decay": 0.01, "seed": 42}


def _memory() -> dict:
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    import torch

    if torch.cuda.is_available():
        out["peak_gpu_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out


def orchestrator_side(args, grouped: bool) -> dict:
    import dataclasses

    from torch.utils.data import DataLoader

    from orchestrator.data import tokenize
    from orchestrator.tasks import get_task
    from orchestrator.training.loop import collect_logits, model_inputs, train

    cfg, splits, model_path = hf_trainer.demo_splits(args.max_rows, args.model)
    params = dataclasses.replace(cfg.training, **RECIPE, epochs=args.epochs, batch_size=args.batch_size,
                                 max_length=args.max_length, head="pooler", imbalance="none",
                                 group_by_length=grouped)
    task = get_task("single_label")
    result = train(params, cfg.model, splits, model_path, task=task)
    test = model_inputs(tokenize(splits, result.tokenizer, params.max_length, task=task)["test"])
    logits = collect_logits(result.model, DataLoader(test, batch_size=64, collate_fn=task.collator(result.tokenizer)))
    test_f1 = task.evaluate(task.gather(logits, None), splits.data["test"], splits.label_names, "test")
    return {"train_rows": result.train_rows, "train_seconds": result.train_seconds,
            "train_samples_per_second": result.train_rows * args.epochs / result.train_seconds,
            "val_macro_f1": result.history[-1]["val_macro_f1"], "test_macro_f1": test_f1.metrics["test_macro_f1"]}


def trainer_side(args, padding: str) -> dict:
    cfg, splits, model_path = hf_trainer.demo_splits(args.max_rows, args.model)
    trainer, data, clock = hf_trainer.build(splits, model_path, padding, args.max_length, epochs=args.epochs,
                                            batch_size=args.batch_size, **RECIPE)
    trainer.train()
    val = trainer.evaluate()
    test = trainer.evaluate(data["test"], metric_key_prefix="test")
    rows = len(data["train"])
    return {"train_rows": rows, "train_seconds": sum(clock.seconds),
            "train_samples_per_second": rows * args.epochs / sum(clock.seconds),
            "val_macro_f1": val["eval_macro_f1"], "test_macro_f1": test["test_macro_f1"]}


def one(side: str, args) -> dict:
    if side.startswith("orchestrator"):
        result = orchestrator_side(args, grouped=side == "orchestrator")
    else:
        result = trainer_side(args, "dynamic" if side == "trainer-dynamic" else "max_length")
    return {**result, **_memory()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--max-rows", type=int, default=None, help="fewer training rows (a quick check of the script)")
    p.add_argument("--model", default=None, help="a model folder instead of the demo's (gpu.py: random weights)")
    p.add_argument("--warmup", action="store_true", help="one discarded run first: on a fresh machine the first "
                   "process loads CUDA's libraries and kernels from a cold disk (measured 5x slower on a new H200)")
    p.add_argument("--output", default=None, help="default: benchmarks/results/perf/compare_trainer-<device>.json")
    args = p.parse_args()
    if args.side:
        print("RESULT " + json.dumps(one(args.side, args)))
        return

    passed = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--max-length",
              str(args.max_length), *(["--max-rows", str(args.max_rows)] if args.max_rows else []),
              *(["--model", args.model] if args.model else [])]
    machine = tasks._machine()  # the code that runs is the code at the start
    runs = {side: [] for side in SIDES}
    if args.warmup:
        subprocess.run([sys.executable, __file__, "--side", SIDES[-1], *passed], cwd=ROOT, capture_output=True,
                       check=True)
    for round_ in range(args.rounds):
        order = SIDES if round_ % 2 == 0 else tuple(reversed(SIDES))
        for side in order:
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--side", side, *passed], cwd=ROOT,
                                  capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(f"{side} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
            runs[side].append({**json.loads(line[7:]), "process_wall_seconds": round(wall, 2)})
            print(f"round {round_ + 1} {side}: {runs[side][-1]['train_samples_per_second']:.2f} samples/s, "
                  f"{wall:.1f} s", flush=True)

    median = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
    speed = {side: m["train_samples_per_second"] for side, m in median.items()}
    ratios = {
        "orchestrator_vs_trainer_max_length": speed["orchestrator"] / speed["trainer-max-length"],
        "orchestrator_vs_trainer_dynamic": speed["orchestrator"] / speed["trainer-dynamic"],
        "grouped_vs_shuffled": speed["orchestrator"] / speed["orchestrator-shuffled"],
        "shuffled_vs_trainer_dynamic": speed["orchestrator-shuffled"] / speed["trainer-dynamic"],
        "wall_orchestrator_vs_trainer_dynamic": (median["orchestrator"]["process_wall_seconds"]
                                                 / median["trainer-dynamic"]["process_wall_seconds"])}
    device = hf_trainer.device()
    result = {"device": device, "settings": {**vars(args), **RECIPE, "model": args.model or "demo (all-MiniLM-L6-v2)"},
              "runs": runs, "median": median, "ratios": {k: round(v, 3) for k, v in ratios.items()},
              **machine, "platform": platform.platform()}
    out = Path(args.output or ROOT / "benchmarks" / "results" / "perf" / f"compare_trainer-{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))


if __name__ == "__main__":
    main()
