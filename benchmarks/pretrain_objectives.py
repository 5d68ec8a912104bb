"""On the same corpus and the same number of optimizer steps, which pre-training objective gives
the better fine-tuned encoder: masked LM or ELECTRA (issue 24)?

    python benchmarks/pretrain_objectives.py chnsenticorp|demo [--steps N] [--seeds 42,43] [key=value ...]
    python benchmarks/pretrain_objectives.py --render      # docs/benchmarks.md, section pretrain-objectives

For each objective: `python -m orchestrator pretrain` (timed: an ELECTRA step runs a generator
and the encoder, so it costs more wall time than an MLM step of the same batch), then, per seed,
one fine-tuning with the experiment's `training:` defaults (`space: {}`, one trial, no pruning,
nothing registered) of the encoder it registered, scored on the test split. chnsenticorp
pre-trains its small Chinese BERT from scratch on the training split; demo continues MiniLM's
pre-training as `benchmarks/pretrain.py` does. Both objectives of one experiment share the
corpus, the masking, the batch and the learning rate. Writes
benchmarks/results/pretrain/objectives-<experiment>.json. Wall times on a shared machine are
upper bounds.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pretrain as demo_pretrain  # noqa: E402 - the demo's continued pre-training settings
import tasks  # noqa: E402 - the machine record and the study reader

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "pretrain"
OBJECTIVES = ("mlm", "electra")
# Sized for a 2-core CPU: both experiments, both objectives, two seeds in about 40 minutes.
SIZES = {"chnsenticorp": {"steps": 300, "overrides": ["data.max_train_rows=2000"]},
         "demo": {"steps": 150, "overrides": []}}


def experiment(name: str, objective: str, seed: int, steps: int, folder: Path) -> Path:
    """The experiment file of one (objective, seed): its pre-training, one fine-tuning with defaults."""
    if name == "demo":
        cfg = yaml.safe_load(demo_pretrain.pretrained_demo(folder).read_text())
    else:
        cfg = yaml.safe_load((ROOT / "experiments" / f"{name}.yaml").read_text())
    cfg["pretrain"].update({"objective": objective, "max_steps": steps, "max_minutes": None,
                            "eval_every": max(1, steps // 3), "save_every": steps})
    cfg["space"] = {}  # the one trial trains with `training:` as it is
    cfg["search"].update({"n_trials": 1, "pruner": "none", "pruner_options": {},
                          "study_name": f"{name}-{objective}-seed{seed}"})
    cfg["training"]["seed"] = seed
    cfg["tracking"] = {**cfg.get("tracking", {}), "experiment": f"{name}-{objective}-seed{seed}"}
    cfg["registry"] = {**cfg.get("registry", {}), "register": False}
    path = folder / f"{name}-{objective}-seed{seed}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return path


def run(name: str, steps: int, seeds: list[int], overrides: list[str]) -> dict:
    machine = tasks._machine()  # the code that runs is the code at the start
    sides = {}
    for objective in OBJECTIVES:
        folder = Path(tempfile.mkdtemp(prefix=f"bench-objectives-{name}-{objective}-"))
        stores = [f"search.storage=sqlite:///{folder}/optuna.db", f"tracking.uri=sqlite:///{folder}/mlflow.db",
                  f"tracking.artifact_location={folder}/artifacts", f"search.work_dir={folder}/studies",
                  f"pretrain.work_dir={folder}/pretrain"]
        configs = [experiment(name, objective, seed, steps, folder) for seed in seeds]
        pre_seconds = _command("pretrain", configs[0], stores + overrides, folder / "pretrain.log")
        side = {"pretrain": {"wall_seconds": round(pre_seconds, 1), **_pretraining(folder, configs[0])},
                "seeds": {}}
        for seed, config in zip(seeds, configs):
            seconds = _command("search", config, stores + overrides, folder / f"search-seed{seed}.log")
            study = tasks._read(folder, config)
            side["seeds"][str(seed)] = {"test_macro_f1": study["champion"],
                                        "validation_macro_f1": study["best_validation"],
                                        "baseline_test_macro_f1": study["baseline"],
                                        "fine_tune_wall_seconds": round(seconds, 1)}
        scores = [s["test_macro_f1"] for s in side["seeds"].values()]
        side["mean_test_macro_f1"] = round(statistics.mean(scores), 4)
        sides[objective] = side
        print(json.dumps({objective: side}, indent=2), flush=True)
    mlm, electra = sides["mlm"], sides["electra"]
    return {"question": "masked-LM vs ELECTRA pre-training, same corpus and optimizer steps, then the same "
                        "fine-tuning (training defaults, one trial) on each seed",
            "experiment": name, "steps": steps, "seeds": seeds, "overrides": overrides, **sides,
            "delta_mean_test_macro_f1": round(electra["mean_test_macro_f1"] - mlm["mean_test_macro_f1"], 4),
            "electra_step_cost": round(electra["pretrain"]["minutes"] / mlm["pretrain"]["minutes"], 2),
            **machine, "note": "2 shared CPU cores: wall times are upper bounds"}


def _command(command: str, config: Path, overrides: list[str], log: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator", command, "--config", str(config), *overrides],
                          cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"{command} failed (exit {proc.returncode}); see {log}")
    return seconds


def _pretraining(folder: Path, config: Path) -> dict:
    """The pre-training run's training minutes (resumes included) and held-out figures, first and last."""
    from mlflow import MlflowClient

    from orchestrator.tasks import load_experiment

    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    cfg = load_experiment(config)
    experiment_id = client.get_experiment_by_name(cfg.experiment_name).experiment_id
    (run,) = client.search_runs([experiment_id], filter_string="tags.orchestrator_role = 'pretrain'")
    m = run.data.metrics
    curves = {}
    for key in ("eval_perplexity", "eval_generator_perplexity", "eval_rtd_accuracy", "eval_rtd_f1"):
        curve = sorted(client.get_metric_history(run.info.run_id, key), key=lambda p: p.step)
        if curve:
            curves[key] = [(p.step, round(p.value, 4)) for p in curve]
    return {"steps": m.get("steps"), "minutes": round(m.get("pretrain_minutes", 0.0), 2),
            "train_texts": int(run.data.params["corpus.train_texts"]),
            "held_out_texts": int(run.data.params["corpus.held_out_texts"]), "curves": curves}


def table(results: list[dict]) -> str:
    """The docs/benchmarks.md section: one row per (experiment, objective)."""
    if not results:
        return "(not measured yet)"
    lines = ["| experiment | objective | pre-training steps | pre-training wall time | held-out figure at the end "
             "| test macro-F1 per seed | mean |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for objective in OBJECTIVES:
            side = r[objective]
            pre, curves = side["pretrain"], side["pretrain"]["curves"]
            figure = (f"perplexity {curves['eval_perplexity'][-1][1]:.1f}" if objective == "mlm" else
                      f"generator perplexity {curves['eval_generator_perplexity'][-1][1]:.1f}, replaced-token "
                      f"accuracy {curves['eval_rtd_accuracy'][-1][1]:.3f}, F1 {curves['eval_rtd_f1'][-1][1]:.3f}")
            seeds = ", ".join(f"{s['test_macro_f1']:.4f}" for s in side["seeds"].values())
            lines.append(f"| {r['experiment']} | {objective} | {pre['steps']:.0f} "
                         f"| {pre['wall_seconds'] / 60:.1f} min (training {pre['minutes']:.1f} min) | {figure} "
                         f"| {seeds} | {side['mean_test_macro_f1']:.4f} |")
    lines += [""] + [f"{r['experiment']}: ELECTRA minus MLM, mean test macro-F1 "
                     f"{r['delta_mean_test_macro_f1']:+.4f} over seeds {', '.join(map(str, r['seeds']))}; "
                     f"an ELECTRA step took {r['electra_step_cost']:.2f}x "
                     f"an MLM step's training time. {r['machine']}, {r['date']}, commit {r['commit']}; {r['note']}."
                     for r in results]
    return "\n".join(lines)


def main() -> None:
    args = sys.argv[1:]
    if args == ["--render"]:
        import report

        results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("objectives-*.json"))]
        report.DOC.write_text(report._replace(report.DOC.read_text(), "pretrain-objectives", table(results)))
        print(table(results))
        return
    if not args or args[0] not in SIZES:
        sys.exit(f"usage: python benchmarks/pretrain_objectives.py {{{','.join(SIZES)}}} [--steps N] "
                 f"[--seeds 42,43] [key=value ...] | --render")
    name, rest = args[0], args[1:]
    steps, seeds = SIZES[name]["steps"], [42, 43]
    if "--steps" in rest:
        i = rest.index("--steps")
        steps = int(rest[i + 1])
        rest = rest[:i] + rest[i + 2:]
    if "--seeds" in rest:
        i = rest.index("--seeds")
        seeds = [int(s) for s in rest[i + 1].split(",")]
        rest = rest[:i] + rest[i + 2:]
    result = run(name, steps, seeds, SIZES[name]["overrides"] + rest)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"objectives-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("delta_mean_test_macro_f1", "electra_step_cost")}, indent=2))


if __name__ == "__main__":
    main()
