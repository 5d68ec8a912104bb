"""The contract between the driver and a trial, wherever the trial runs.

The driver hands an executor a `TrialJob` (what to train, where its data, model and checkpoint
folder are, the machine plan) and gets a `TrialOutcome` back (the value, the MLflow run, where the
checkpoint went, timings). While the trial runs it sends events (`emit`: progress, facts for the
study's records) and asks questions only the driver can answer (`ask`: "prune after this epoch?",
"is this score among the checkpoints kept?"). The trial never opens the study's storage: the
driver alone calls Optuna, so a node that runs trials needs the package and the tracking store,
not the study database or its password.

Everything travels as JSON: the job in a file to a child process or as a Ray task argument,
events as lines on the trial's stdout, answers as lines on its stdin. The job's config has every
password redacted; the tracking store's real URL reaches the trial through its environment only
(`secret_environment`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

import sys

from orchestrator.config import ExperimentConfig
from orchestrator.config.load import FROM_ENVIRONMENT
from orchestrator.config.paths import absolute_sqlite
from orchestrator.config.secrets import SECRET_VARIABLES

STATES = ("COMPLETE", "PRUNED", "FAIL")


@dataclass(frozen=True)
class TrialJob:
    number: int
    params: dict  # sampled by the driver
    config: dict  # the experiment, passwords redacted
    source: str  # where the config came from, for messages
    model_path: str
    model_fingerprint: str
    parent_run_id: str
    data_dir: str  # saved splits, and the tokenization cache beside them
    checkpoint_dir: str
    keep_local_checkpoint: bool = True  # False where the trial's disk is not the driver's (Ray)
    keep_checkpoints: int = 3  # a trial uploads its checkpoint only while it ranks among this many best
    memory_target: float = 0.9  # share of GPU memory the batch-size probe may plan for
    lineage: dict = field(default_factory=dict)  # tags naming the encoder (`search.lineage`), for the trial's run
    probes: dict = field(default_factory=dict)  # batch-size probes the study has cached, by key

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TrialJob:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class TrialOutcome:
    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None = None
    reason: str | None = None
    metrics: dict = field(default_factory=dict)  # the best epoch's validation metrics
    lost: bool = False  # the process or node died before recording an outcome: the driver re-queues it once
    run_id: str | None = None  # the trial's MLflow run (None when the store was unreachable)
    checkpoint: str | None = None  # the best epoch's model on the trial's disk, where it was kept there
    checkpoint_run: str | None = None  # the run whose artifacts hold the checkpoint, where it was uploaded
    timings: dict = field(default_factory=dict)  # setup/train/eval seconds, for the driver's overhead share
    attrs: dict = field(default_factory=dict)  # other facts for the study's records (threshold notes...)

    def __post_init__(self):
        if self.state not in STATES:
            raise ValueError(f"trial outcome state {self.state!r}: expected one of {STATES}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrialOutcome:
        return cls(**json.loads(text))


# Credentials and endpoints a trial needs when it runs where the driver's environment is not
# inherited (a Ray node): passed on with the stores' URLs, if the driver has them.
FORWARDED = (*SECRET_VARIABLES, "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_INSECURE_TLS",
             "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_CLIENT_CERT_PATH", "MLFLOW_S3_ENDPOINT_URL",
             "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION",
             "PGUSER", "PGSSLMODE")


# What a trial never gets: the study storage's URL. The driver alone talks to the study
# (`search/`); a trial reports through events. PostgreSQL's own variables (the password libpq
# reads) go only where the tracking store itself is PostgreSQL, which the trial does write to.
STUDY_ONLY = {("search", "storage")}
POSTGRES_VARIABLES = ("PGPASSWORD", "PGUSER", "PGSSLMODE")


def secret_environment(cfg: ExperimentConfig) -> dict[str, str]:
    """What a trial process needs that must not be written down: the tracking store's real URL,
    in the variable a config may take it from (`trial.job_config` reads it back), and the
    credentials MLflow and the object store read from the environment. Not the study's storage."""
    urls = {variable: absolute_sqlite(getattr(getattr(cfg, section), key))
            for (section, key), variable in FROM_ENVIRONMENT.items() if (section, key) not in STUDY_ONLY}
    postgres_tracking = cfg.tracking.uri.startswith("postgresql")
    forwarded = [v for v in FORWARDED if os.environ.get(v) and (postgres_tracking or v not in POSTGRES_VARIABLES)]
    return {**{v: os.environ[v] for v in forwarded}, **urls}


def without_study_secrets(environment: dict[str, str], kept: dict[str, str]) -> dict[str, str]:
    """A trial process's environment: the driver's, less every way into the study storage, plus
    `kept` (what `secret_environment` chose to hand on)."""
    drop = {FROM_ENVIRONMENT[key] for key in STUDY_ONLY} | set(POSTGRES_VARIABLES)
    return {**{k: v for k, v in environment.items() if k not in drop}, **kept}


# A spare trial process (`worker --wait`) sets this before it runs its job: the trial records it.
WARM_START = "ORCHESTRATOR_WARM_START"

# ---------------------------------------------------------------- progress events

EVENT = "@@orchestrator "  # a trial process's stdout line carrying an event


def emit(event: dict) -> None:
    """Called in the trial process: send a progress event to whoever runs it (`run_child` reads
    the process's stdout and hands each event on, to the driver's progress or across Ray)."""
    print(EVENT + json.dumps(event), flush=True)


def ask(question: dict) -> dict | None:
    """Called in the trial process: send `question` as an event and wait for the driver's answer,
    a JSON line on stdin. None when there is no answer (stdin closed: the driver is gone, or the
    trial runs without one, as in a test); the caller then does what it would do unasked."""
    emit({**question, "ask": True})
    try:
        line = sys.stdin.readline() if sys.stdin is not None else ""
        answer = json.loads(line) if line.strip() else None
    except (OSError, ValueError):  # no readable stdin, or a garbled answer
        return None
    return answer if isinstance(answer, dict) else None


def parse_event(line: str) -> dict | None:
    """The event on a line of a trial's output, or None for an ordinary line (or a garbled event)."""
    if not line.startswith(EVENT):
        return None
    try:
        event = json.loads(line[len(EVENT):])
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}
