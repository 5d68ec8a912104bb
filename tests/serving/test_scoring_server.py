"""`python -m orchestrator serve`: a real MLflow scoring server for the registered `tiny-clf`,
real HTTP requests, stopped by SIGTERM; and bad input refused before anything starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from orchestrator.cli import main

START_TIMEOUT_S = 150  # loading torch, MLflow and the model in two processes, on a slow machine
VALID = {"dataframe_split": {"columns": ["text"], "data": [["great product"], ["awful"]]}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def server(registered_model, tmp_path_factory):
    """One `serve` process for every request check: (process, base URL, port, log file)."""
    uri, _ = registered_model
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "orchestrator", "serve", "--model",
                                    "models:/tiny-clf@champion", "--tracking-uri", uri, "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT)
    session = requests.Session()
    session.trust_env = False  # no proxy between the test and its own server
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + START_TIMEOUT_S
    while True:
        assert process.poll() is None, f"serve ended with {process.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if session.get(f"{url}/ping", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"no answer on /ping in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
        time.sleep(1)
    yield process, session, url, port, log
    if process.poll() is None:  # a test failed before it stopped the server
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_it_speaks_mlflows_scoring_protocol(server):
    process, session, url, _, log = server
    assert "try: curl -X POST" in log.read_text()
    ok = session.post(f"{url}/invocations", json=VALID, timeout=60)
    assert ok.status_code == 200, ok.text
    predictions = ok.json()["predictions"]
    assert len(predictions) == 2 and all(p["label"] in ("negative", "neutral", "positive") for p in predictions)
    assert {"prob_negative", "prob_neutral", "prob_positive"} <= set(predictions[0])

    malformed = session.post(f"{url}/invocations", data='{"dataframe_split": {"columns": ["te',
                             headers={"Content-Type": "application/json"}, timeout=60)
    assert malformed.status_code == 400 and "valid JSON" in malformed.json()["message"]
    wrong = session.post(f"{url}/invocations", json={"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}},
                         timeout=60)
    assert wrong.status_code == 400 and "missing inputs ['text']" in wrong.json()["message"]

    again = session.post(f"{url}/invocations", json=VALID, timeout=60)  # still serving after bad requests
    assert again.status_code == 200 and again.json()["predictions"] == predictions
    assert process.poll() is None


def test_sigterm_stops_it_and_frees_the_port(server):
    process, _, _, port, log = server
    server_pids = subprocess.run(["pgrep", "-g", str(_child_group(process.pid))], capture_output=True,
                                 text=True).stdout.split()
    assert server_pids  # the MLflow command and its uvicorn
    process.send_signal(signal.SIGTERM)
    assert process.wait(90) == 130
    assert _port_free(port)
    assert not [p for p in server_pids if os.path.exists(f"/proc/{p}") and _state(p) != "Z"], log.read_text()[-2000:]


def _child_group(pid: int) -> int:
    """The process group of `pid`'s child (the scoring server runs in a group of its own)."""
    child = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()[0]
    return os.getpgid(int(child))


def _state(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"  # gone while we looked


def test_bad_input_is_refused_before_anything_starts(registered_model, tmp_path, capsys):
    uri, _ = registered_model
    started = time.monotonic()
    assert main(["serve", "--model", "models:/nope@champion", "--tracking-uri", uri]) == 2
    assert "models:/nope@champion: not found" in capsys.readouterr().err
    missing = tmp_path / "none" / "mlflow.db"
    assert main(["serve", "--model", "models:/tiny-clf@champion", "--tracking-uri", f"sqlite:///{missing}"]) == 2
    assert "no MLflow store at" in capsys.readouterr().err and not missing.parent.exists()
    for port in ("0", "70000"):
        assert main(["serve", "--model", "models:/tiny-clf@champion", "--tracking-uri", uri, "--port", port]) == 2
        assert "not a TCP port" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["serve", "--model", "models:/tiny-clf@champion", "--tracking-uri", uri, "--port", port]) == 2
    assert f"--port {port}: already in use" in capsys.readouterr().err
    assert time.monotonic() - started < 60
