"""The team stack as processes on loopback, for the cluster tests and `benchmarks/cluster.py`: a
Ray cluster of local nodes, moto's S3 server, and `mlflow server --app-name basic-auth` whose
artifacts go to a bucket there. Each is a context manager that stops what it started."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

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
    """`ray start --head`, then `ray start --address` for each further node, on this machine. The
    tests use two nodes of one CPU each, so two trials run at once, each on its own node. Each
    node keeps what trials unpack under `root/head` or `root/worker<i>` (ORCHESTRATOR_NODE_DIR).
    The cluster asks for a token of its own (`env`), as a team's should: a client must carry it,
    and nothing here depends on a token a local `ray.init()` once left in ~/.ray."""

    def __init__(self, root: Path, nodes: int = 2, cpus: int = 1):
        self.root, self.port, self.procs = root, free_port(), []
        self.count, self.cpus = nodes, cpus
        self.address = f"127.0.0.1:{self.port}"
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}

    def start(self) -> RayCluster:
        # Loopback only: otherwise Ray advertises the machine's first interface address, which the
        # driver, at 127.0.0.1, then cannot match with its own node.
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(self.cpus), "--num-gpus", "0",
                  "--disable-usage-stats", "--block"]
        # The nodes are a team's machines: they know no study database (the test's own PostgreSQL
        # URL stays with the tests), so a trial that needed one would fail here.
        here = {k: v for k, v in os.environ.items()
                if k not in ("ORCHESTRATOR_TEST_POSTGRES", "ORCHESTRATOR_STORAGE", "PGPASSWORD")}
        env = {**here, **self.env, "RAY_USAGE_STATS_ENABLED": "0", "ORCHESTRATOR_NODE_DIR": str(self.root / "head")}
        self.procs.append(self._start([str(BIN / "ray"), "start", "--head", "--port", str(self.port),
                                       "--include-dashboard", "false", "--temp-dir", str(self.root / "ray"),
                                       *common], env, "head"))
        wait_until(lambda: self.nodes() >= 1, "the Ray head", proc=self.procs[0])
        for i in range(1, self.count):
            name = "worker" if i == 1 else f"worker{i}"
            env = {**env, "ORCHESTRATOR_NODE_DIR": str(self.root / name)}
            self.procs.append(self._start([str(BIN / "ray"), "start", "--address", self.address, *common], env, name))
            wait_until(lambda: self.nodes() >= i + 1, f"Ray node {i + 1}", proc=self.procs[-1])
        return self

    def _start(self, cmd, env, name) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "w")
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def nodes(self) -> int:
        out = subprocess.run([str(BIN / "ray"), "status", "--address", self.address], capture_output=True,
                             text=True, timeout=60, env={**os.environ, **self.env})
        return out.stdout.count("node_") if out.returncode == 0 else 0

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)


def start_logged(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def http_ok(url: str) -> bool:
    import requests

    return requests.get(url, timeout=5).status_code == 200


# moto accepts any key; the server process and this test use these.
S3_KEYS = {"AWS_ACCESS_KEY_ID": "orchestrator-test", "AWS_SECRET_ACCESS_KEY": "s3-Secret-Key-4f9a2c",
           "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def moto_s3(root: Path, bucket: str = "team"):
    """A real S3 endpoint (moto's standalone server) with one bucket. Yields its URL."""

    port = free_port()
    proc = start_logged([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                        root / "moto.log", {**os.environ, **S3_KEYS})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/moto-api/data.json"), "moto's S3 server", proc=proc)
        s3_client(url).create_bucket(Bucket=bucket)
        yield url
    finally:
        stop(proc)


def s3_client(url: str):
    import boto3

    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"])


class MlflowServer:
    def __init__(self, url: str, password: str, log: Path):
        self.url, self.username, self.password, self.log = url, "admin", password, log


@contextmanager
def mlflow_basic_auth(root: Path, s3_url: str, backend: str, bucket: str = "team"):
    """`mlflow server --app-name basic-auth` as a team runs it: `backend` (a database URL) behind
    it, artifacts served from `bucket`, an admin whose password comes from the environment."""
    port = free_port()
    (root / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    password = f"Adm1n-{secrets.token_hex(8)}"  # basic-auth wants 12 characters or more
    env = {**os.environ, **S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": s3_url,
           "MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = start_logged([str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
                         "--port", str(port), "--workers", "1", "--backend-store-uri", backend,
                         "--serve-artifacts", "--artifacts-destination", f"s3://{bucket}/artifacts"],
                        root / "server.log", env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/health"), "the MLflow server", timeout=300, proc=proc)
        yield MlflowServer(url, password, root / "server.log")
    finally:
        stop(proc)
