"""A task's whole study on real data against its baseline, as a user runs it; results as JSON.

    python benchmarks/tasks.py demo [key=value ...]          # experiments/demo.yaml, the README's first command
    python benchmarks/tasks.py goemotions [key=value ...]    # experiments/goemotions.yaml
    python benchmarks/tasks.py weibo_ner [key=value ...]     # experiments/weibo_ner.yaml
    python benchmarks/tasks.py cws_pku [key=value ...]       # PKU segmentation, splits carved here
    python benchmarks/tasks.py chnsenticorp [key=value ...]  # pre-training from scratch, then the search

Runs `python -m orchestrator search` in a fresh folder (its own MLflow and Optuna stores), then
reads the parent run: the champion's test metric, the baseline's on the same split, the best
validation value, trial states and wall time (and, when the search pre-trained its encoder
first, that run's steps, minutes and held-out perplexity). Writes `benchmarks/results/<name>.json` with the
machine, versions and commit; `docs/benchmarks.md` quotes these files.

The PKU set has only its gold test part (non-commercial research use; see its SOURCE.md): it is
cut here into train / validation / test by contiguous blocks of sentences (70 / 15 / 15, in
document order, so near-duplicate neighbours stay in one split), written to the run's folder and
never into the project.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
EXPERIMENTS = {"demo": "experiments/demo.yaml",
               "goemotions": "experiments/goemotions.yaml", "weibo_ner": "experiments/weibo_ner.yaml",
               "chnsenticorp": "experiments/chnsenticorp.yaml", "snli": "experiments/snli.yaml",
               "ocnli": "experiments/ocnli.yaml", "stsb_captions": "experiments/stsb_captions.yaml",
               "squad": "experiments/squad.yaml", "cmrc2018": "experiments/cmrc2018.yaml"}
# Published BERT-base figures on each set's full training data, beside our small CPU runs: what a
# large encoder with the whole training set reaches, not what these runs are expected to reach.
REFERENCES = {
    "snli": {"metric": "test_accuracy", "value": 0.90, "model": "BERT-base, 550k training pairs",
             "source": "~90% as issue 24 quotes it (BERT-base on the SNLI test set)"},
    "ocnli": {"metric": "test_accuracy", "value": 0.72, "model": "BERT-base-chinese, 50k training pairs",
              "source": "Hu et al. 2020, OCNLI paper (approximate, not re-checked here)"},
    "stsb_captions": {"metric": "test_pearson", "value": 0.87, "model": "BERT-base, all STS-B genres",
                      "source": "0.87-0.89 as issue 24 quotes it (GLUE STS-B, all genres; ours: caption genres only)"},
    "squad": {"metric": "test_f1", "value": 88.5, "model": "BERT-base, 88k training questions",
              "source": "Devlin et al. 2019, SQuAD v1.1 dev 88.5 F1 / 80.8 EM, as issue 24 quotes it (0-100 scale)"},
    "cmrc2018": {"metric": "test_f1", "value": 84.0, "model": "BERT-base-chinese, 10k training questions",
                 "source": "Cui et al. 2019, Chinese BERT on CMRC 2018 dev, ~84 F1 (approximate, not re-checked here; 0-100 scale)"},
}


def pku_experiment(folder: Path) -> Path:
    """Splits of the PKU gold test set by contiguous blocks, and an experiment over them."""
    import yaml

    lines = (SHARED / "cws_pku" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    a, b = int(len(lines) * 0.70), int(len(lines) * 0.85)
    for split, part in (("train", lines[:a]), ("validation", lines[a:b]), ("test", lines[b:])):
        (folder / f"{split}.jsonl").write_text("\n".join(part) + "\n", encoding="utf-8")
    cfg = yaml.safe_load((ROOT / "experiments" / "weibo_ner.yaml").read_text(encoding="utf-8"))
    cfg.update(name="cws-pku", task="token_classification")
    cfg["data"] = {split: str(folder / f"{split}.jsonl") for split in ("train", "validation", "test")}
    cfg["data"]["tag_scheme"] = "BMES"
    cfg["registry"] = {"model_name": "cws-pku"}
    path = folder / "cws_pku.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def run(name: str, overrides: list[str], config: Path | None = None) -> dict:
    from orchestrator.tasks import load_experiment

    folder = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    machine = _machine()  # the code that runs is the code at the start
    config = config or (pku_experiment(folder) if name == "cws_pku" else ROOT / EXPERIMENTS[name])
    stores = [f"search.storage=sqlite:///{folder}/optuna.db", f"tracking.uri=sqlite:///{folder}/mlflow.db",
              f"tracking.artifact_location={folder}/artifacts", f"search.work_dir={folder}/studies"]
    if load_experiment(config).pretrain is not None:
        stores.append(f"pretrain.work_dir={folder}/pretrain")
    start = time.perf_counter()
    # From the project root: the experiments name their data relative to it.
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "search", "--config", str(config), *stores,
                           *overrides], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (folder / "search.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"search failed (exit {proc.returncode}); see {folder / 'search.log'}")
    return {"name": name, "config": str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else config.name,
            "overrides": overrides, "wall_seconds": round(seconds, 1), **_read(folder, config), **machine}


def _read(folder: Path, config: Path) -> dict:
    import optuna
    from mlflow import MlflowClient

    from orchestrator.tasks import load_experiment
    from orchestrator.tasks import get_task

    cfg = load_experiment(config)
    main = get_task(cfg.task).main_metric
    uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    parent = next(r for r in client.search_runs([experiment.experiment_id])
                  if r.data.tags.get("orchestrator_role") == "study")
    study = optuna.load_study(study_name=cfg.study_name, storage=f"sqlite:///{folder}/optuna.db")
    metrics = parent.data.metrics
    pretrained = [r for r in client.search_runs([experiment.experiment_id])
                  if r.data.tags.get("orchestrator_role") == "pretrain"]
    return {**({"pretrain": _pretrain(client, pretrained[0])} if pretrained else {}),
            "task": cfg.task, "encoder": cfg.model.name_or_path,
            **({"reference": REFERENCES[config.stem]} if config.stem in REFERENCES else {}),
            "metric": f"test_{main}", "champion": metrics.get(f"champion_test_{main}"),
            "baseline": metrics.get(f"baseline_test_{main}"),
            "baseline_validation": metrics.get(f"baseline_val_{main}"),
            "best_validation": study.best_value, "search_metric": cfg.search.metric,
            "best_params": study.best_params, "trials": [t.state.name for t in study.trials],
            "trial_seconds": [t.user_attrs.get("wall_seconds") for t in study.trials],
            "overhead_shares": [t.user_attrs.get("overhead_share") for t in study.trials],
            "warm_starts": [t.user_attrs.get("warm_start") for t in study.trials],
            "other_metrics": {k: v for k, v in metrics.items() if k.startswith(("champion_", "baseline_"))},
            **_evidence(client, parent, study, main)}


def _evidence(client, parent, study, main: str) -> dict:
    """What decided the champion and what it is worth: its test CI, its confirmation (mean and
    spread per confirmed configuration), the baseline comparison, the registry's decision, and
    each serving format's latency, size and score (from the registered version)."""
    import json as _json
    import tempfile as _tempfile

    from orchestrator.search.confirm import groups

    metrics, tags = parent.data.metrics, parent.data.tags
    maximize = study.direction.name == "MAXIMIZE"
    out = {"champion_ci": [metrics.get(f"champion_test_{main}_ci_low"), metrics.get(f"champion_test_{main}_ci_high")],
           "confirmation": [g.to_dict(maximize) for g in groups(study)],
           "confirmation_runs": len([t for t in study.trials if "confirms" in t.user_attrs]),
           "confirmed_trial": tags.get("confirmed_trial"),
           "baseline_comparison": tags.get("baseline_comparison"),
           "registered": tags.get("registered_model"), "alias": tags.get("registered_alias")}
    run_id = tags.get("best_trial_run_id")
    if run_id and any(a.path == "serving_formats.json" for a in client.list_artifacts(run_id)):
        with _tempfile.TemporaryDirectory() as tmp:
            table = _json.loads(open(client.download_artifacts(run_id, "serving_formats.json", tmp)).read())
        out["serving_formats"] = [dict(zip(table["columns"], row)) for row in table["data"]]
    return out


def _pretrain(client, run) -> dict:
    """The pre-training run's budget and held-out perplexity, from where it started to where it ended."""
    curve = sorted(client.get_metric_history(run.info.run_id, "eval_perplexity"), key=lambda m: m.step)
    return {"init": run.data.params.get("start.init"), "steps": run.data.metrics.get("steps"),
            "minutes": run.data.metrics.get("pretrain_minutes"),
            "train_texts": int(run.data.params["corpus.train_texts"]),
            "held_out_texts": int(run.data.params["corpus.held_out_texts"]),
            "perplexity_start": curve[0].value if curve else None, "perplexity_end": curve[-1].value if curve else None,
            "perplexity_curve": [(m.step, round(m.value, 3)) for m in curve]}


def _machine() -> dict:
    import os

    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except FileNotFoundError:  # no git; the GPU machine's copy of the tree has a stale .git: BENCH_COMMIT
        commit = ""

    return {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(), "commit": os.environ.get("BENCH_COMMIT") or commit,
            "versions": {p: _version(p) for p in ("torch", "transformers", "accelerate", "optuna", "mlflow")}}


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:  # the GPU machine's image runs the training benchmarks without the stores
        return None


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in (*EXPERIMENTS, "cws_pku"):
        sys.exit(f"usage: python benchmarks/tasks.py {{{','.join((*EXPERIMENTS, 'cws_pku'))}}} [key=value ...]")
    result = run(sys.argv[1], sys.argv[2:])
    # One file per command: the demo as shipped is demo.json, with other seeds demo-search.seed7-data.seed7.json.
    suffix = "".join(f"-{o.replace('=', '')}" for o in sys.argv[2:]).replace("/", "_")
    out = ROOT / "benchmarks" / "results" / f"{sys.argv[1]}{suffix}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
