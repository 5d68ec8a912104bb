"""The team stack of docker/compose.yaml, brought up as processes on loopback (no Docker here):
PostgreSQL for Optuna and MLflow, an S3 endpoint (moto's server), `mlflow server --app-name
basic-auth` serving artifacts from a bucket, and a two-node Ray cluster. A study runs its trials
on Ray, reads its training data from the bucket, survives a killed Ray worker, and its champion
is registered by a driver that trained none of its trials, from a checkpoint that exists only in
the bucket. No password reaches a log, a file, a param or a tag."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import requests
import yaml
from conftest import tiny_experiment

from .stack import S3_KEYS, s3_client, wait_until
from .test_ray_executor import ROOT
from orchestrator.search.study import retried_from

pytestmark = pytest.mark.cluster


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _texts(root: Path) -> str:
    out = []
    for path in root.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            out.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(out)


def test_a_study_on_the_team_stack(ray_cluster, mlflow_server, s3, postgres, tiny_model, data_dir, tmp_path):
    bucket = s3_client(s3)
    bucket.upload_file(str(data_dir / "train.csv"), "team", "data/train.csv")
    experiment = tiny_experiment(
        tmp_path / "team.yaml", tiny_model, data_dir, "team", training={"epochs": 6},
        search={"n_trials": 3, "executor": "ray", "cpus_per_trial": 1, "keep_checkpoints": 2})
    cfg = yaml.safe_load(experiment.read_text())
    cfg["data"] = {"train": "s3://team/data/train.csv"}  # validation and test are split from it
    experiment.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, **ray_cluster.env, "PYTHONPATH": str(ROOT), "ORCHESTRATOR_STORAGE": postgres,
           "ORCHESTRATOR_TRACKING_URI": mlflow_server.url, "MLFLOW_TRACKING_USERNAME": "admin",
           "MLFLOW_TRACKING_PASSWORD": mlflow_server.password, "AWS_ENDPOINT_URL": s3, **S3_KEYS,
           "ORCHESTRATOR_CACHE": str(tmp_path / "cache")}
    # Without credentials the server answers 401; with them, 200.
    search_url = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search_url, timeout=30).status_code == 401
    assert requests.get(search_url, auth=("admin", mlflow_server.password), timeout=30).status_code == 200

    driver = subprocess.Popen([sys.executable, "-m", "orchestrator", "search", "--config", str(experiment),
                               "--ray-address", ray_cluster.address], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    study = None
    try:
        def running_trial():
            nonlocal study
            try:
                study = study or optuna.load_study(study_name="team", storage=postgres)
            except KeyError:  # not created yet
                return None
            for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
                if "pid" in t.user_attrs and "mlflow_run_id" in t.user_attrs:
                    return t
        wait_until(lambda: running_trial() is not None, "a running trial", timeout=600, proc=driver)
        victim = running_trial()
        # The trial process on its Ray node holds no way into the study's storage: the driver alone
        # talks to Optuna (read from the live process, which runs on this machine's loopback cluster).
        environ = Path(f"/proc/{victim.user_attrs['pid']}/environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.startswith((b"ORCHESTRATOR_STORAGE=", b"PGPASSWORD="))]
        assert not [v for v in environ if postgres.encode() in v]
        assert [v for v in environ if v.startswith(b"ORCHESTRATOR_TRACKING_URI=")]  # what it does need
        os.kill(_ppid(victim.user_attrs["pid"]), signal.SIGKILL)  # its Ray worker
        out, _ = driver.communicate(timeout=900)
    finally:
        driver.kill()
    assert driver.returncode == 0, out

    # The killed trial is FAIL with the reason and ran once more with the same parameters.
    failed = study.trials[victim.number]
    assert failed.state == optuna.trial.TrialState.FAIL and "re-queued once" in failed.user_attrs["fail_reason"]
    retry = [t for t in study.trials if retried_from(t) == victim.number]
    assert len(retry) == 1 and retry[0].params == failed.params
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 3

    # Checkpoints: only in the bucket, only for the 2 best trials; none on any node's disk.
    from mlflow import MlflowClient

    os.environ.update({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": mlflow_server.password})
    try:
        client = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
        ranked = sorted(complete, key=lambda t: -t.value)
        kept = {t.number for t in complete if client.list_artifacts(t.user_attrs["checkpoint_run"], "checkpoint")}
        assert kept == {t.number for t in ranked[:2]}
        objects = [o["Key"] for o in bucket.list_objects_v2(Bucket="team", Prefix="artifacts/").get("Contents", [])]
        weights = {k.split("/checkpoint/")[0] for k in objects if k.endswith("/checkpoint/encoder/model.safetensors")}
        assert len(weights) == 2
        assert not list(ray_cluster.root.glob("*/checkpoints/team/trial-*"))
        # Two trials ran at once, one per node: each node unpacked the data the driver put in Ray's object store.
        digest = [p.name for p in (tmp_path / "mlruns" / "studies" / "team" / "data").iterdir()]
        for node in ("head", "worker"):
            assert set(digest) <= {p.name for p in (ray_cluster.root / node / "data").iterdir()}, node
        # The driver registered the best trial, from the checkpoint it fetched from the bucket.
        version = client.get_model_version_by_alias("team-clf", "champion")
        assert version.tags["optuna_trial_number"] == str(study.best_trial.number)
        fetched = tmp_path / "mlruns" / "studies" / "team" / "checkpoints"
        assert [p.name.rsplit("-", 1)[0] for p in fetched.iterdir()] == [f"trial-{study.best_trial.number}"]
        runs = client.search_runs([client.get_experiment_by_name("team").experiment_id], max_results=100)
        params_and_tags = repr([(r.data.params, r.data.tags) for r in runs])
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)
    # The training data came from the bucket (fetched once into the cache, keyed by its ETag).
    assert list((tmp_path / "cache" / "remote").glob("*/train.csv"))

    # No password anywhere: output, the study's folder, the nodes' folders, MLflow, the server's log.
    for name, text in [("driver output", out), ("study folder", _texts(tmp_path / "mlruns")),
                       ("Ray nodes", _texts(ray_cluster.root / "head") + _texts(ray_cluster.root / "worker")),
                       ("MLflow params and tags", params_and_tags), ("server log", mlflow_server.log.read_text()),
                       ("Optuna", repr([(t.user_attrs, t.system_attrs) for t in study.trials] + [study.user_attrs]))]:
        for secret in (mlflow_server.password, S3_KEYS["AWS_SECRET_ACCESS_KEY"], ray_cluster.env["RAY_AUTH_TOKEN"]):
            assert secret not in text, name
