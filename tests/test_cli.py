"""The `ui` subcommand starts a real MLflow UI server on the configured store."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ui_serves_the_store(tmp_path, store):
    port = _free_port()
    uri = store  # `ui` opens an existing store only
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "ui", "--tracking-uri", uri, "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, status = time.time() + 120, None
        while time.time() < deadline and status != 200:
            time.sleep(1)
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status
            except OSError:
                assert proc.poll() is None, "mlflow ui exited"
        assert status == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_formats_the_cli_offers_are_the_exports():
    from orchestrator import cli
    from orchestrator.training.export import FORMATS

    assert cli.FORMATS == FORMATS
