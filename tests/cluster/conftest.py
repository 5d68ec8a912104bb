"""Servers for the cluster tests, each a real process on loopback, stopped at the end."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f}s")


def stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """The process and everything it started (it was started in its own session)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class RayCluster:
    """`ray start --head` and a second `ray start --address` on this machine: two nodes of one CPU
    each, so two trials run at once, each on its own node."""

    def __init__(self, root: Path):
        self.root, self.port, self.procs = root, free_port(), []
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> RayCluster:
        common = ["--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats", "--block"]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "ORCHESTRATOR_NODE_DIR": str(self.root / "head")}
        self.procs.append(self._start([str(BIN / "ray"), "start", "--head", "--port", str(self.port),
                                       "--include-dashboard", "false", "--temp-dir", str(self.root / "ray"),
                                       *common], env, "head"))
        wait_until(lambda: self.nodes() >= 1, "the Ray head", proc=self.procs[0])
        env = {**env, "ORCHESTRATOR_NODE_DIR": str(self.root / "worker")}
        self.procs.append(self._start([str(BIN / "ray"), "start", "--address", self.address, *common], env, "worker"))
        wait_until(lambda: self.nodes() >= 2, "the second Ray node", proc=self.procs[1])
        return self

    def _start(self, cmd, env, name) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "w")
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def nodes(self) -> int:
        out = subprocess.run([str(BIN / "ray"), "status", "--address", self.address], capture_output=True,
                             text=True, timeout=60)
        return out.stdout.count("node_") if out.returncode == 0 else 0

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)


@pytest.fixture(scope="session")
def ray_cluster():
    root = Path(tempfile.mkdtemp(prefix="orchestrator-ray-"))  # short: Ray's socket paths must fit 107 bytes
    cluster = RayCluster(root)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def start_logged(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def http_ok(url: str) -> bool:
    import requests

    return requests.get(url, timeout=5).status_code == 200


# moto accepts any key; the server process and this test use these.
S3_KEYS = {"AWS_ACCESS_KEY_ID": "orchestrator-test", "AWS_SECRET_ACCESS_KEY": "s3-Secret-Key-4f9a2c",
           "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3 endpoint on loopback (moto's standalone server) with a bucket `team`. Yields its URL."""
    import boto3

    root, port = tmp_path_factory.mktemp("s3"), free_port()
    proc = start_logged([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                        root / "moto.log", {**os.environ, **S3_KEYS})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/moto-api/data.json"), "moto's S3 server", proc=proc)
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket="team")
        yield url
    finally:
        stop(proc)


class MlflowServer:
    def __init__(self, url: str, password: str, log: Path, database: str):
        self.url, self.username, self.password, self.log, self.database = url, "admin", password, log, database


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, s3, postgres):
    """`mlflow server --app-name basic-auth` as a team runs it: PostgreSQL behind it (a database of
    its own), artifacts served from the `team` bucket, an admin whose password comes from the
    environment."""
    import secrets as random_secrets

    import sqlalchemy

    root, port = tmp_path_factory.mktemp("mlflow-server"), free_port()
    database = f"mlflow_{random_secrets.token_hex(4)}"
    admin = sqlalchemy.create_engine(postgres.replace("postgresql://", "postgresql+psycopg://", 1),
                                     isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
    admin.dispose()
    backend = sqlalchemy.make_url(postgres.replace("postgresql://", "postgresql+psycopg://", 1)).set(
        database=database).render_as_string(hide_password=False)
    (root / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    password = f"Adm1n-{random_secrets.token_hex(8)}"  # basic-auth wants 12 characters or more
    env = {**os.environ, **S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": s3, "MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"),
           "MLFLOW_AUTH_ADMIN_PASSWORD": password, "MLFLOW_FLASK_SERVER_SECRET_KEY": random_secrets.token_hex(16),
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = start_logged([str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
                         "--port", str(port), "--workers", "1", "--backend-store-uri", backend,
                         "--serve-artifacts", "--artifacts-destination", "s3://team/artifacts"],
                        root / "server.log", env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/health"), "the MLflow server", timeout=300, proc=proc)
        yield MlflowServer(url, password, root / "server.log", database)
    finally:
        stop(proc)
