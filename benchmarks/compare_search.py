"""One search, side by side: `python -m orchestrator search` against `Trainer.hyperparameter_search`.

    python benchmarks/compare_search.py [--trials 5]

The same data (the demo's splits), model (all-MiniLM-L6-v2, pooler + linear: what
`AutoModelForSequenceClassification` builds, so the head is not searched), space (learning rate
8e-5..4e-4 log, epochs 2..3, batch 16 or 32), trial count, TPE seed 42 and median pruning on
both sides (orchestrator prunes by epoch; the Trainer reports by optimizer step, so a trial at
batch 16 and one at 32 are compared at different points of training). No class weights on either.

Measured from each command's start: when every trial ended, the best validation macro-F1, when
each side first reached its own best and the better of the two sides' common target (the lower
best), the whole wall time, and what each hands back. `hyperparameter_search` returns the best
trial's hyperparameters only (`BestRun`), not a model, so its side goes on as its docs suggest:
set them on the Trainer's arguments, train once more, evaluate on test; that time is reported
apart. orchestrator's search ends with the champion tested, registered and aliased.
Writes benchmarks/results/perf/compare_search-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hf_trainer  # noqa: E402 - the Trainer side
import tasks  # noqa: E402 - machine and versions

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"learning_rate": (8e-5, 4e-4), "epochs": (2, 3), "batch_size": [16, 32]}
RECIPE = {"max_length": 128, "warmup_ratio": 0.1, "weight_decay": 0.01, "seed": 42}


def _timeline(trials: list[dict], maximize: bool = True) -> list[dict]:
    """Trials in the order they ended, with the best value so far."""
    best, out = None, []
    for t in sorted(trials, key=lambda t: t["ended_s"]):
        if t["value"] is not None and t["state"] == "COMPLETE":
            best = t["value"] if best is None or (t["value"] > best if maximize else t["value"] < best) else best
        out.append({**t, "best_so_far": best})
    return out


def _reached(timeline: list[dict], target: float) -> float | None:
    return next((t["ended_s"] for t in timeline if t["best_so_far"] is not None and t["best_so_far"] >= target),
                None)


def _trials(study, t0: float) -> list[dict]:
    return [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "ended_s": round(t.datetime_complete.timestamp() - t0, 1)} for t in study.trials if t.datetime_complete]


def orchestrator_side(args, folder: Path) -> dict:
    import optuna
    from mlflow import MlflowClient

    from orchestrator.tasks import load_experiment

    overrides = [f"search.storage=sqlite:///{folder}/optuna.db", f"tracking.uri=sqlite:///{folder}/mlflow.db",
                 f"tracking.artifact_location={folder}/artifacts", f"search.work_dir={folder}/studies",
                 f"search.n_trials={args.trials}", "training.imbalance=none", "training.head=pooler",
                 "space.head=[pooler]", f"space.learning_rate.low={SPACE['learning_rate'][0]}",
                 f"space.learning_rate.high={SPACE['learning_rate'][1]}", f"space.epochs.low={SPACE['epochs'][0]}",
                 f"space.epochs.high={SPACE['epochs'][1]}",
                 f"space.batch_size=[{','.join(map(str, SPACE['batch_size']))}]",
                 *([f"data.max_train_rows={args.max_rows}"] if args.max_rows else [])]
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "search", "--config", hf_trainer.DEMO, *overrides],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    (folder / "search.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"orchestrator search failed (exit {proc.returncode}); see {folder / 'search.log'}")
    cfg = load_experiment(ROOT / hf_trainer.DEMO)
    study = optuna.load_study(study_name=cfg.study_name, storage=f"sqlite:///{folder}/optuna.db")
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    parent = next(r for r in client.search_runs([experiment.experiment_id])
                  if r.data.tags.get("orchestrator_role") == "study")
    shares = [t.user_attrs["overhead_share"] for t in study.trials if "overhead_share" in t.user_attrs]
    return {"trials": _trials(study, t0), "best_validation": study.best_value, "best_params": study.best_params,
            "wall_seconds": round(wall, 1), "test_macro_f1": parent.data.metrics.get("champion_test_macro_f1"),
            "overhead_shares": shares, "warm_starts": [t.user_attrs.get("warm_start") for t in study.trials],
            "hands_back": "the champion: best trial's best epoch, tested on the test split, registered in MLflow "
                          "with alias champion, loadable by `predict` and MLflow pyfunc"}


def trainer_side(args, folder: Path, t0: float) -> dict:
    import optuna

    cfg, splits, model_path = hf_trainer.demo_splits(args.max_rows)
    trainer, data, _ = hf_trainer.build(splits, model_path, "dynamic", learning_rate=1e-4, epochs=3, batch_size=16,
                                        model_init=True, output_dir=str(folder / "trainer"), **RECIPE)

    def hp_space(trial):
        return {"learning_rate": trial.suggest_float("learning_rate", *SPACE["learning_rate"], log=True),
                "num_train_epochs": trial.suggest_int("num_train_epochs", *SPACE["epochs"]),
                "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size",
                                                                         SPACE["batch_size"])}

    storage = f"sqlite:///{folder}/trainer-optuna.db"
    steps_at_epoch_2 = 2 * -(-len(data["train"]) // max(SPACE["batch_size"]))
    best = trainer.hyperparameter_search(
        hp_space=hp_space, compute_objective=lambda metrics: metrics["eval_macro_f1"], n_trials=args.trials,
        direction="maximize", backend="optuna", storage=storage, study_name="trainer",
        sampler=optuna.samplers.TPESampler(seed=42),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=steps_at_epoch_2))
    searched = time.time() - t0
    # What the docs suggest to get the model: the best hyperparameters on the arguments, train again.
    retrain_start = time.time()
    for name, value in best.hyperparameters.items():
        setattr(trainer.args, name, value)
    trainer.train()
    test = trainer.evaluate(data["test"], metric_key_prefix="test")
    study = optuna.load_study(study_name="trainer", storage=storage)
    return {"trials": _trials(study, t0), "best_validation": best.objective, "best_params": best.hyperparameters,
            "search_seconds": round(searched, 1), "retrain_seconds": round(time.time() - retrain_start, 1),
            "test_macro_f1": test["test_macro_f1"],
            "hands_back": "BestRun(run_id, objective, hyperparameters): no model; the best model took one more "
                          "training run with those hyperparameters (retrain_seconds), then a test evaluation"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--max-rows", type=int, default=None, help="fewer training rows (a quick check of the script; "
                   "the two sides then subsample differently)")
    p.add_argument("--trainer-side", default=None, help=argparse.SUPPRESS)  # folder: run the Trainer here
    p.add_argument("--t0", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--output", default=None, help="default: benchmarks/results/perf/compare_search-<device>.json")
    args = p.parse_args()
    if args.trainer_side:
        print("RESULT " + json.dumps(trainer_side(args, Path(args.trainer_side), args.t0)))
        return

    machine = tasks._machine()  # the code that runs is the code at the start
    folder = Path(tempfile.mkdtemp(prefix="bench-search-"))
    print(f"working in {folder}", flush=True)
    sides = {"orchestrator": orchestrator_side(args, folder)}
    print(f"orchestrator: {sides['orchestrator']['wall_seconds']} s", flush=True)
    t0 = time.time()
    proc = subprocess.run([sys.executable, __file__, "--trials", str(args.trials), "--trainer-side", str(folder),
                           "--t0", str(t0), *(["--max-rows", str(args.max_rows)] if args.max_rows else [])],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    (folder / "trainer.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"Trainer side failed; see {folder / 'trainer.log'}")
    sides["trainer"] = {**json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:]),
                        "wall_seconds": round(wall, 1)}

    target = min(s["best_validation"] for s in sides.values())  # both reached it
    for s in sides.values():
        s["trials"] = _timeline(s["trials"])
        s["seconds_to_own_best"] = _reached(s["trials"], s["best_validation"])
        s["seconds_to_common_target"] = _reached(s["trials"], target)
    o, t = sides["orchestrator"], sides["trainer"]
    ratios = {"to_common_target": o["seconds_to_common_target"] / t["seconds_to_common_target"],
              "whole_command_vs_search_plus_retrain": o["wall_seconds"] / t["wall_seconds"],
              "whole_command_vs_search_only": o["wall_seconds"] / t["search_seconds"]}
    result = {"device": hf_trainer.device(), "trials": args.trials, "space": SPACE, "recipe": RECIPE,
              "common_target": target, "sides": sides, "ratios": {k: round(v, 3) for k, v in ratios.items()},
              "date_time": datetime.now().isoformat(timespec="minutes"), **machine}
    out = Path(args.output) if args.output else (ROOT / "benchmarks" / "results" / "perf"
                                                 / f"compare_search-{result['device']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"ratios": result["ratios"], "best": {k: v["best_validation"] for k, v in sides.items()}},
                     indent=2))


if __name__ == "__main__":
    main()
