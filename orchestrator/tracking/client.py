"""MLflow tracking: one parent run per study, one nested run per trial, metrics, figures, tables.

Works on explicit run ids through `MlflowClient` rather than MLflow's global "active run", so
trial runs from several processes or machines can hang under the same parent run. The one
exception is a trial's own process, whose run is also its active run while MLflow samples the
machine's use on it (`watch_system`).
Past 400 lines: one class holds every call a search makes to MLflow, so that BestEffort can wrap them all.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import fsspec
import mlflow
import requests
import sqlalchemy
import tenacity
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunInfo
from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING, MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
from mlflow.exceptions import MlflowException, RestException

from orchestrator.config.secrets import redact, scrub
from orchestrator.config.paths import absolute_sqlite, sqlite_path

log = logging.getLogger(__name__)

TAG_STUDY = "orchestrator_study"
TAG_ROLE = "orchestrator_role"
TAG_TRIAL = "optuna_trial_number"
TAG_STATE = "trial_state"
# MLflow 3's UI opens an experiment on its GenAI overview (traces, prompts) unless the experiment
# says it holds model training; then it opens the runs table.
KIND_TAG, KIND_TRAINING = "mlflow.experimentKind", "custom_model_development"
CHECKPOINT_ARTIFACT = "checkpoint"  # a trial run's artifact folder holding its best-epoch model
# Optuna trial state -> MLflow run status (a pruned trial ended as intended: FINISHED).
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
# A trial run's `system/...` metrics: one sample of the machine's use every so many seconds, unless
# MLflow's MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL says otherwise. Each sample also reads the run from
# the store (has it ended?): a trial on a shared store should not sample every second.
SYSTEM_METRICS_SECONDS = 10.0


class TrackingError(RuntimeError):
    pass


# What MLflow raises when a store refuses or fails a request, for modules that catch it without
# importing mlflow (only tracking/ and registry/ talk to MLflow).
TrackingStoreError = MlflowException


# MLflow's codes for a store that is down or overloaded, as opposed to one that refuses a request.
TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"}


def is_outage(error: BaseException) -> bool:
    """A store that cannot be reached or answers 5xx: worth retrying later. Anything else (a
    refused name, a missing run, a bug) is not, and must be reported as what it is."""
    unreachable = (requests.ConnectionError, requests.Timeout, ConnectionError, sqlalchemy.exc.OperationalError)
    if isinstance(error, unreachable):
        return True
    if isinstance(error, MlflowException):
        if error.error_code in TRANSIENT_CODES:
            return True
        # Connection failures and HTTP 5xx reach us as INTERNAL_ERROR from the REST client.
        return error.error_code == "INTERNAL_ERROR" and (
            isinstance(error, RestException) or str(error.message).startswith("API request to"))
    return False


def is_missing(error: BaseException) -> bool:
    """MLflow's answer for a run, model, version or alias that does not exist."""
    return isinstance(error, MlflowException) and error.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def artifact_uri(location: str) -> str:
    """Local artifact folders become absolute file URIs, so runs stay readable from any directory."""
    if "://" in location:
        return location
    return Path(location).resolve().as_uri()


def fail_fast(uri: str) -> None:
    """MLflow's defaults retry a dead server for minutes; a command should learn in seconds."""
    if uri.startswith(("http://", "https://")):
        for key, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                           ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
            os.environ.setdefault(key, value)


def check_store(uri: str) -> None:
    """Stop a command before it creates anything when the store cannot work: a server is asked
    for one experiment; a database URL must have its driver installed. Nothing is connected to
    or created in a database here: several processes starting at once on a fresh database would
    race to create MLflow's tables, which the study lock serialises later."""
    fail_fast(uri)
    try:
        if uri.startswith(("http://", "https://", "databricks")):
            MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
        elif "://" in uri:
            sqlalchemy.make_url(uri).get_dialect().import_dbapi()
    except Exception as e:  # noqa: BLE001 - connection refused, missing driver, bad credentials...
        raise TrackingError(f"tracking.uri: cannot use the MLflow store {redact(uri)!r}: "
                            f"{scrub(str(e)).strip().splitlines()[-1][:500]}") from e


def existing_store(tracking_uri: str, key: str = "--tracking-uri") -> MlflowClient:
    """A client on the MLflow store `tracking_uri`, which must already exist and be one: MLflow
    itself makes a missing SQLite file, and its tables in any empty or foreign database, on first
    use. A database is connected to once, without MLflow's minutes of retries. `key` is what the
    user set the URI with (`--tracking-uri`, `tracking.uri`), for the message."""
    shown = redact(tracking_uri) or "the default store"
    fail_fast(tracking_uri)
    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise TrackingError(f"{key} {shown}: no MLflow store at {db}; point {key} at the store a search wrote to")
    uri = absolute_sqlite(tracking_uri, create=False)
    if db is not None or _is_database(uri):
        tables = _tables(uri, db, shown, key)
        if "registered_models" not in tables:
            raise TrackingError(f"{key} {shown}: not an MLflow store (no registered_models table among "
                                f"{len(tables)}); point it at the store a search wrote to")
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except MlflowException as e:  # e.g. a folder: MLflow 3 no longer opens file stores
        raise TrackingError(f"{key} {shown}: {e.message[:300]}") from None


def _is_database(uri: str) -> bool:
    return "://" in uri and uri.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "mysql", "mssql", "sqlite")


def _tables(uri: str, db, shown: str, key: str) -> list[str]:
    try:
        if db is not None:  # read-only: connecting must not create or change the file
            with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
                return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        timeout = {"connect_timeout": 10} if uri.startswith(("postgresql", "mysql")) else {}
        engine = sqlalchemy.create_engine(uri, connect_args=timeout)
        try:
            return sqlalchemy.inspect(engine).get_table_names()
        finally:
            engine.dispose()
    except (sqlite3.Error, sqlalchemy.exc.SQLAlchemyError, ImportError) as e:
        raise TrackingError(f"{key}: cannot use the MLflow store {shown}: "
                            f"{scrub(str(e)).strip().splitlines()[0][:300]}") from None


def mark_training_experiment(uri: str, experiment: str) -> str | None:
    """Mark an existing experiment as model training (see KIND_TAG); its id, or None when the
    store does not exist yet or has no such experiment. Never creates a store."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return None
    uri = absolute_sqlite(uri, create=False)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        if exp.tags.get(KIND_TAG) != KIND_TRAINING:
            client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND_TRAINING)
    except MlflowException as e:
        raise TrackingError(f"tracking.uri: cannot use the MLflow store {redact(uri)!r}: {scrub(str(e))[:300]}") from e
    return exp.experiment_id


class Tracker:
    def __init__(self, uri: str, experiment: str, artifact_location: str):
        fail_fast(uri)
        uri = absolute_sqlite(uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        self.uri = uri
        try:
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                exp_id = self.client.create_experiment(experiment, artifact_location=self._location(artifact_location),
                                                       tags={KIND_TAG: KIND_TRAINING})
            else:
                exp_id = exp.experiment_id
                if KIND_TAG not in exp.tags:  # made before experiments were marked
                    self.client.set_experiment_tag(exp_id, KIND_TAG, KIND_TRAINING)
        except Exception as e:  # noqa: BLE001 - connection refused, locked database, not an MLflow database...
            raise TrackingError(f"tracking.uri: cannot use the MLflow store {redact(uri)!r}: "
                                f"{scrub(str(e))[:500]}") from e
        self.experiment_id = exp_id
        self.experiment = experiment

    def _location(self, artifact_location: str) -> str | None:
        """A server keeps artifacts where it was told (`--artifacts-destination`, served to every
        machine) unless told otherwise by a URL; a local folder named here would put them on this
        machine's disk, out of reach of the others. An embedded store keeps them in that folder."""
        if self.uri.startswith(("http://", "https://")) and "://" not in artifact_location:
            return None
        return artifact_uri(artifact_location)

    # ------------------------------------------------------------------ study (parent) run

    def study_run(self, study_name: str, known_run_id: str | None, params: dict[str, Any]) -> str:
        """Re-attach to the study's parent run if it exists, else create it. Returns its id."""
        run_id = known_run_id if known_run_id and self.exists(known_run_id) else None
        if run_id is None:
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.{TAG_STUDY} = '{study_name}' and tags.{TAG_ROLE} = 'study'",
                max_results=1)
            run_id = found[0].info.run_id if found else None
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=study_name,
                                         tags={TAG_STUDY: study_name, TAG_ROLE: "study"})
            run_id = run.info.run_id
            self.log_params(run_id, params)
        else:
            self.client.update_run(run_id, status="RUNNING")
        return run_id

    def exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except MlflowException as e:
            if is_missing(e):
                return False
            raise

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(status)  # also stops the run's system metrics (`watch_system`)
        else:
            self.client.set_terminated(run_id, status=status)

    # ------------------------------------------------------------------ trial (nested) runs

    def start_trial(self, parent_run_id: str, study_name: str, number: int, params: dict) -> str:
        """A nested run for one trial under the study's parent run. Returns its id."""
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number}", tags={
            "mlflow.parentRunId": parent_run_id, TAG_STUDY: study_name, TAG_ROLE: "trial",
            TAG_TRIAL: str(number)})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def watch_system(self, run_id: str) -> bool:
        """Log this machine's CPU, memory, disk and network use, and its NVIDIA GPUs' (through
        nvidia-ml-py), on the run as `system/...` metrics every SYSTEM_METRICS_SECONDS until the run
        ends (`end_run`, `finish_trial`); MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false turns it off.
        MLflow samples only a run started through its fluent API, so the run becomes this process's
        active run: for a trial's own process, which has no other. True when sampling started."""
        if MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.is_set() and not MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get():
            return False
        if mlflow.active_run() is not None:
            log.warning("no system metrics for run %s: this process already has run %s active", run_id,
                        mlflow.active_run().info.run_id)
            return False
        if not MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.is_set():
            mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_SECONDS)
        mlflow.start_run(run_id=run_id, log_system_metrics=True)
        atexit.register(_leave_running, run_id)
        return True

    def trial_runs(self, study_name: str) -> dict[int, RunInfo]:
        """The study's trial runs (id, status...) by trial number, found by their tags."""
        runs = self.client.search_runs(
            [self.experiment_id], max_results=50000,
            filter_string=f"tags.{TAG_STUDY} = '{study_name}' and tags.{TAG_ROLE} = 'trial'")
        return {int(r.data.tags[TAG_TRIAL]): r.info for r in runs}

    def finish_trial(self, run_id: str, state: str, reason: str | None = None, status: str | None = None) -> None:
        self.client.set_tag(run_id, TAG_STATE, state)
        if reason:
            self.client.set_tag(run_id, "fail_reason" if state == "FAIL" else "stop_reason", scrub(reason)[:5000])
        self.end_run(run_id, status or RUN_STATUS.get(state, "FAILED"))

    # ------------------------------------------------------------------ logging

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, scrub(str(v))[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow's batch limit is 100 params
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, scrub(str(v)))

    def log_figure(self, run_id: str, figure, path: str) -> None:
        import matplotlib.pyplot as plt

        self.client.log_figure(run_id, figure, path)
        plt.close(figure)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, scrub(text), path)

    def log_datasets(self, run_id: str, datasets: list[dict]) -> None:
        """The run's data as MLflow dataset inputs (`lineage.dataset_inputs`)."""
        from orchestrator.tracking.lineage import log_datasets

        log_datasets(self.client, run_id, datasets)

    def log_table(self, run_id: str, frame, path: str) -> None:
        self.client.log_table(run_id, frame, path)

    def log_artifacts(self, run_id: str, folder: str | Path, path: str) -> bool:
        """Upload a folder into the run's artifacts (to the server's object store, when tracking
        is a server with `--serve-artifacts`). True once it is there."""
        self.client.log_artifacts(run_id, str(folder), path)
        return True

    def download_artifacts(self, run_id: str, path: str, destination: str | Path) -> Path:
        """A run's artifact folder, fetched into `destination` (created); returns the local folder."""
        Path(destination).mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, path, str(destination)))

    def delete_artifacts(self, run_id: str, path: str) -> None:
        """Remove an artifact folder from a run (a finished one too), wherever the store keeps it:
        through the server's artifact proxy (`--serve-artifacts`), else straight in the folder or
        bucket the run's artifact URI names (file://, s3:// with s3fs, any fsspec store)."""
        # MLflow's Python API has no call that deletes artifacts; its REST API and fsspec do.
        root = self.client.get_run(run_id).info.artifact_uri
        if root.startswith("mlflow-artifacts:"):
            _delete_proxied(self.uri, root, path)
            return
        try:  # a fresh instance: a cached one may hold a stale listing of the bucket
            fs, folder = fsspec.core.url_to_fs(root, skip_instance_cache=True, **_s3_endpoint(root))
        except ImportError as e:
            raise TrackingError(f"deleting artifacts at {root.split('://')[0]}:// needs its fsspec package "
                                f"({e.name}): pip install 'orchestrator[cluster]'") from None
        try:
            fs.rm(f"{folder.rstrip('/')}/{path.strip('/')}", recursive=True)
        except FileNotFoundError:  # deleted already (another process finishing the same study)
            pass

    def has_artifacts(self, run_id: str, path: str) -> bool:
        """Whether the run holds artifact `path`: a folder with files in it, or a file (which MLflow
        lists only from its folder: listing a file's own path finds nothing)."""
        if self.client.list_artifacts(run_id, path):
            return True
        folder, _, name = path.strip("/").rpartition("/")
        return any(a.path == path.strip("/") and not a.is_dir
                   for a in self.client.list_artifacts(run_id, folder or None))

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)


def _leave_running(run_id: str) -> None:
    """At exit, a watched run still active is one whose trial never closed it (an error it did not
    catch): it stays RUNNING, as when a trial's process dies, for the driver to close with what
    happened. Registered after MLflow's own exit hook, this runs first; MLflow's marks it FINISHED."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        # MLflow's one public way to stop a run's monitor and let it go: end it, as still running.
        with contextlib.suppress(Exception):  # a store gone by now: the run is RUNNING anyway
            mlflow.end_run("RUNNING")


def _s3_endpoint(uri: str) -> dict:
    """MLflow's own S3 endpoint setting, so a delete goes where MLflow uploaded (s3fs reads AWS_*)."""
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint and uri.startswith("s3://") else {}


def _delete_proxied(tracking_uri: str, root: str, path: str) -> None:
    """DELETE /api/2.0/mlflow-artifacts/artifacts/<path> on the server that proxies `root`
    (`mlflow-artifacts:/...`, or `mlflow-artifacts://host:port/...` for another server), signed in
    with MLflow's documented client variables."""
    server, artifact = urlparse(tracking_uri), urlparse(root)
    url = (f"{server.scheme}://{artifact.netloc or server.netloc}{server.path.rstrip('/')}"
           f"/api/2.0/mlflow-artifacts/artifacts/{artifact.path.strip('/')}/{path.strip('/')}")
    env = os.environ.get
    user, password, token = env("MLFLOW_TRACKING_USERNAME"), env("MLFLOW_TRACKING_PASSWORD"), env("MLFLOW_TRACKING_TOKEN")
    insecure = env("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1")
    answer = requests.delete(
        url, auth=(user, password) if user and password else None,
        headers={"Authorization": f"Bearer {token}"} if token else None,
        verify=False if insecure else env("MLFLOW_TRACKING_SERVER_CERT_PATH") or True,
        cert=env("MLFLOW_TRACKING_CLIENT_CERT_PATH"), timeout=float(env("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")))
    if answer.ok:
        return
    try:
        body = answer.json()  # MLflow's own error, when the server itself answered
    except ValueError:
        body = None
    body, status = body if isinstance(body, dict) else {}, answer.status_code
    # A 5xx from a proxy in front reads as an outage (`is_outage`); a refused login does not.
    code = body.get("error_code") or ("TEMPORARILY_UNAVAILABLE" if status >= 500 else
                                      "PERMISSION_DENIED" if status in (401, 403) else "BAD_REQUEST")
    raise RestException({"error_code": code, "message": f"DELETE {redact(url)}: HTTP {status}: "
                                                        f"{scrub(str(body.get('message') or answer.text))[:300]}"})


class BestEffort:
    """A Tracker for trial processes: a store outage (`is_outage`) is retried, then logged and
    skipped, so an unreachable MLflow store never fails a trial or loses its Optuna result. After
    an outage, calls are skipped for `pause` seconds instead of each waiting out its own retries.
    Any other error (a refused request, a bug) is raised at once: it fails the trial, with its
    traceback in the trial's log."""

    def __init__(self, factory, attempts: int = 3, wait: float = 1.0, pause: float = 30.0):
        self._factory, self._tracker = factory, None
        self._pause = pause
        self._down_until = 0.0
        self.failures = 0
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts), wait=tenacity.wait_exponential(multiplier=wait),
            retry=tenacity.retry_if_exception(_worth_retrying), before_sleep=_say_retrying,
            retry_error_callback=self._give_up)

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            if time.monotonic() < self._down_until:
                self.failures += 1
                return None
            return self._retrying(self._call, name, *args, **kwargs)

        return call

    def _call(self, name: str, *args, **kwargs):
        if self._tracker is None:
            self._tracker = self._factory()
        return getattr(self._tracker, name)(*args, **kwargs)

    def _give_up(self, state: tenacity.RetryCallState) -> None:
        self.failures += 1
        self._down_until = time.monotonic() + self._pause
        log.warning("MLflow %s failed %d times, skipped (the trial goes on): %s", state.args[0],
                    state.attempt_number, scrub(str(state.outcome.exception()))[:500])


def _worth_retrying(error: BaseException) -> bool:
    # The factory wraps the store's error in a TrackingError; the wrapped error tells.
    return is_outage(error.__cause__ if isinstance(error, TrackingError) else error)


def _say_retrying(state: tenacity.RetryCallState) -> None:
    log.info("MLflow %s: store unreachable (try %d), again in %.1fs", state.args[0], state.attempt_number,
             state.next_action.sleep if state.next_action else 0.0)
