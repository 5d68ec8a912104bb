"""`python -m orchestrator serve`: MLflow's own scoring server for a registered model.

It runs `python -m mlflow models serve -m MODEL --env-manager local --host H --port P` as a child
process, so the protocol is MLflow's (`POST /invocations`, `GET /ping`, `GET /version`) and any
client of `mlflow models serve` works unchanged. Before the child starts, everything a user can
get wrong is checked: the model exists in the store (metadata calls only; a missing SQLite store
is an error, never a new database), the port is a port and is free on that host. The store's
URI reaches the child through its environment, never its command line, where `ps` would show a
password.

The child runs in a process group of its own, so that a Ctrl-C or SIGTERM here stops it and
the uvicorn server it starts, whatever they are doing (still loading the model, or serving); on
Linux it also gets SIGTERM if this process dies without a chance to stop it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.config.paths import absolute_sqlite
from orchestrator.config.secrets import redact
from orchestrator.data import DataError
from orchestrator.registry.lookup import check_format, check_model, input_columns
from orchestrator.registry.pyfunc import FORMAT_ENV
from orchestrator.tracking.client import existing_store

EXIT_INTERRUPTED = 130
EXAMPLE = '{"dataframe_split": {"columns": ["text"], "data": [["great product"], ["awful"]]}}'
# An example row per input column a model may take (`Task.input_columns`), for the `try:` line.
EXAMPLE_CELLS = {"text": "great product", "text_pair": "a fine product", "question": "what is great?",
                 "context": "the product is great"}
STOP_GRACE_S = 15  # uvicorn finishes the requests in flight, then exits; after this it is killed


def _example(columns: list[str]) -> str:
    """A request body for a model of these input columns (EXAMPLE for a model of texts)."""
    if columns == ["text"]:
        return EXAMPLE
    row = [EXAMPLE_CELLS.get(c, "...") for c in columns]
    return json.dumps({"dataframe_split": {"columns": columns, "data": [row]}})


def serve_model(model_uri: str, tracking_uri: str, host: str = "127.0.0.1", port: int = 8000,
                fmt: str = "pytorch") -> int:
    """Serve `model_uri` over HTTP until Ctrl-C or SIGTERM (130), or until the server stops by
    itself (1, with its own messages above)."""
    if not 1 <= port <= 65535:
        raise DataError(f"--port {port}: not a TCP port; use one from 1 to 65535 (default 8000)")
    rest = model_uri.removeprefix("models:/")
    if rest != model_uri and "@" not in rest and "/" not in rest and not rest.startswith("m-"):
        raise DataError(f"--model {model_uri}: say which version to serve, e.g. models:/{rest}@champion or "
                        f"models:/{rest}/1")  # MLflow would read the bare name as a logged model's id
    if model_uri.startswith(("models:/", "runs:/")):
        existing_store(tracking_uri)  # never a new store, nor MLflow's tables in a foreign database
    check_model(model_uri, tracking_uri)
    check_format(model_uri, tracking_uri, fmt)
    _check_port(host, port)
    store = absolute_sqlite(tracking_uri, create=False) if tracking_uri else ""
    # The format reaches the model through the child's environment (`pyfunc.FORMAT_ENV`).
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": store, FORMAT_ENV: fmt}
    if not store:
        env.pop("MLFLOW_TRACKING_URI")
        env.pop("MLFLOW_REGISTRY_URI")
    # MLflow starts the server as `uvicorn ...` through bash: this interpreter's scripts must come first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
               "--host", host, "--port", str(port)]
    url, local = _urls(host, port)
    print(f"serving {model_uri} from {redact(tracking_uri) or 'the default store'} at {url} (MLflow's scoring "
          f"server, as `mlflow models serve`: POST /invocations, GET /ping); loading the model first; Ctrl-C stops it",
          flush=True)
    print(f"try: curl -X POST {local}/invocations -H 'Content-Type: application/json' -d "
          f"'{_example(input_columns(model_uri, tracking_uri))}'", flush=True)
    child = None
    try:
        child = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_die_with_parent())
        return _wait(child, local)
    except KeyboardInterrupt:
        print("stopping the scoring server", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        if child is not None:
            _stop(child)


def _check_port(host: str, port: int) -> None:
    """Bind where uvicorn will (same family, SO_REUSEADDR as it sets), to say now what it would say later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except socket.gaierror as e:
            raise DataError(f"--host {host}: not a name or address this machine can resolve ({e.strerror}); use "
                            f"127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise DataError(f"--port {port}: already in use on {host}; stop what listens there (see "
                                f"`ss -ltnp 'sport = :{port}'`) or choose another --port") from None
            if e.errno == errno.EACCES:
                raise DataError(f"--port {port}: only a privileged user may listen below 1024; choose a port "
                                f"from 1024 to 65535") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise DataError(f"--host {host}: not an address of this machine; use 127.0.0.1 (this machine "
                                f"only), 0.0.0.0 (every interface) or one of its own addresses") from None
            raise DataError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None


def _urls(host: str, port: int) -> tuple[str, str]:
    """The server's URL as given, and one this machine can reach it at (for a wildcard host)."""
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
    local = wildcard.get(host, host)
    shown = lambda h: f"[{h}]" if ":" in h else h  # noqa: E731 - an IPv6 address in a URL
    return f"http://{shown(host)}:{port}", f"http://{shown(local)}:{port}"


def _wait(child: subprocess.Popen, local: str) -> int:
    """Until the child ends; says once when the server first answers /ping."""
    import requests

    session = requests.Session()
    session.trust_env = False  # a proxy from the environment must not stand between us and our own child
    ready, started = False, time.monotonic()
    while True:
        try:
            code = child.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            if not ready:
                try:
                    ready = session.get(f"{local}/ping", timeout=2).status_code == 200
                except requests.RequestException:
                    pass
                if ready:
                    print(f"ready after {time.monotonic() - started:.0f} s: {local}/invocations", flush=True)
            continue
        print(f"error: the scoring server stopped by itself (exit code {code}); its messages are above",
              file=sys.stderr, flush=True)
        return 1


def _stop(child: subprocess.Popen) -> None:
    """SIGTERM to the child's process group (the MLflow command and its uvicorn), then SIGKILL to
    whatever is left after `STOP_GRACE_S`; a second Ctrl-C skips the wait."""
    group = child.pid  # start_new_session: the child leads a group of its own
    try:
        _signal(group, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while _alive(group) and time.monotonic() < deadline:
            time.sleep(0.2)
            child.poll()  # reap the leader as soon as it exits
    except KeyboardInterrupt:
        pass
    finally:
        if _alive(group):
            _signal(group, signal.SIGKILL)
        child.wait()


def _signal(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):  # gone already
        pass


def _alive(group: int) -> bool:
    """Whether a process of `group` still runs. Zombies do not count: an orphan's zombie waits on
    whatever reaps for PID 1, which need not be prompt in a container."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):  # ended while we looked
            continue
        if int(pgrp) == group and state != "Z":
            return True
    return False


def _die_with_parent():
    """Linux: the child gets SIGTERM when this process dies (even by SIGKILL), as MLflow arranges
    for its own uvicorn; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child must not load anything between fork and exec
    pr_set_pdeathsig = 1

    def arrange() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return arrange
