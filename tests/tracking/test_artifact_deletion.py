"""A run's checkpoint folder is deleted through public routes only (MLflow's Python API has none):
fsspec for a folder or bucket the run's artifact URI names, the server's artifact proxy REST call
for `mlflow-artifacts:` runs. Real stores: an embedded SQLite one, moto's S3 server in a thread,
a stub HTTP server that records what the proxy call sends (and answers errors as told)."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mlflow.exceptions import RestException

from orchestrator.tracking import client
from orchestrator.tracking.client import Tracker, is_outage


def _run_with_folders(tracker: Tracker, tmp_path) -> str:
    run = tracker.client.create_run(tracker.experiment_id).info.run_id
    for name in ("checkpoint", "plots"):
        folder = tmp_path / "local" / name
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "weights.bin").write_bytes(b"\0" * 10)
        tracker.log_artifacts(run, folder, name)
    return run


def test_a_local_folder_goes_and_the_rest_of_the_run_stays(tmp_path, store):
    tracker = Tracker(store, "local", str(tmp_path / "artifacts"))
    run = _run_with_folders(tracker, tmp_path)
    tracker.delete_artifacts(run, "checkpoint")
    assert not tracker.has_artifacts(run, "checkpoint") and tracker.has_artifacts(run, "plots")
    tracker.delete_artifacts(run, "checkpoint")  # gone already (another process finishing): no error


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 server on loopback, reached the way MLflow is told (MLFLOW_S3_ENDPOINT_URL only)."""
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test-secret",
                       "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": url}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    import boto3

    boto3.client("s3", endpoint_url=url).create_bucket(Bucket="team")
    yield url
    server.stop()


def test_an_s3_folder_goes_from_the_endpoint_mlflow_uploaded_to(tmp_path, store, s3):
    tracker = Tracker(store, "s3", "s3://team/artifacts")
    run = _run_with_folders(tracker, tmp_path)
    tracker.delete_artifacts(run, "checkpoint")
    assert not tracker.has_artifacts(run, "checkpoint") and tracker.has_artifacts(run, "plots")
    tracker.delete_artifacts(run, "checkpoint")


class _Proxy(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []
    answer: tuple[int, bytes] = (200, b"{}")

    def do_DELETE(self):  # noqa: N802 - http.server's name
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        status, body = type(self).answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def proxy():
    _Proxy.seen, _Proxy.answer = [], (200, b"{}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_proxy_call_names_the_folder_under_the_run_and_signs_in(proxy, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "Pass-9921")
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    client._delete_proxied(f"{proxy}/mlflow", "mlflow-artifacts:/7/abc/artifacts", "checkpoint")
    login = "Basic " + base64.b64encode(b"alice:Pass-9921").decode()
    assert _Proxy.seen == [("/mlflow/api/2.0/mlflow-artifacts/artifacts/7/abc/artifacts/checkpoint", login)]


@pytest.mark.parametrize("status, body, outage", [
    (503, b"<html>bad gateway</html>", True),  # a proxy in front of a server that is down
    (500, json.dumps({"error_code": "INTERNAL_ERROR", "message": "boom"}).encode(), True),
    (401, b"You are not authenticated.", False),
    (400, json.dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad path"}).encode(), False),
])
def test_a_refusal_is_not_read_as_an_outage(proxy, monkeypatch, status, body, outage):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    _Proxy.answer = (status, body)
    with pytest.raises(RestException) as error:
        client._delete_proxied(proxy, "mlflow-artifacts:/7/abc/artifacts", "checkpoint")
    assert is_outage(error.value) is outage
    assert f"HTTP {status}" in error.value.message


@pytest.mark.slow  # a real `mlflow server` (tens of seconds to start on a busy machine)
def test_a_served_folder_goes_through_the_real_proxy(tmp_path, store):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", store, "--artifacts-destination", str(tmp_path / "served"),
                             "--workers", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        deadline = time.time() + 180
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3).status == 200:
                    break
            except OSError:
                assert time.time() < deadline and proc.poll() is None, "mlflow server did not start"
                time.sleep(1)
        tracker = Tracker(f"http://127.0.0.1:{port}", "served", str(tmp_path / "ignored"))
        run = _run_with_folders(tracker, tmp_path)
        assert tracker.client.get_run(run).info.artifact_uri.startswith("mlflow-artifacts:")
        tracker.delete_artifacts(run, "checkpoint")
        assert not tracker.has_artifacts(run, "checkpoint") and tracker.has_artifacts(run, "plots")
        assert not list((tmp_path / "served").rglob("checkpoint")) and list((tmp_path / "served").rglob("plots"))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
