"""The contract between the driver and a trial, wherever the trial runs.

The driver hands an executor a `TrialJob` (what to train, where its data, model and checkpoint
folder are, the machine plan) and gets a `TrialOutcome` back; while the trial runs it sends
progress events (`emit`). Both travel as JSON: in a job file to a child process, as task
arguments to a Ray worker. The job's config has every password redacted; the stores' real URLs
reach the trial through its environment only (`secret_environment`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from orchestrator.config import ExperimentConfig
from orchestrator.config.load import FROM_ENVIRONMENT
from orchestrator.config.secrets import SECRET_VARIABLES
from orchestrator.config.paths import absolute_sqlite

STATES = ("COMPLETE", "PRUNED", "FAIL")


@dataclass(frozen=True)
class TrialJob:
    number: int
    trial_id: int  # the Optuna trial the process re-attaches to (its parameters are sampled already)
    params: dict
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


def secret_environment(cfg: ExperimentConfig) -> dict[str, str]:
    """What a trial process needs that must not be written down: the stores' real URLs, in the
    variables a config may take them from (`trial.job_config` reads them back), and the
    credentials MLflow and the object store read from the environment."""
    urls = {variable: absolute_sqlite(getattr(getattr(cfg, section), key))
            for (section, key), variable in FROM_ENVIRONMENT.items()}
    return {**{v: os.environ[v] for v in FORWARDED if os.environ.get(v)}, **urls}


# A spare trial process (`worker --wait`) sets this before it runs its job: the trial records it.
WARM_START = "ORCHESTRATOR_WARM_START"

# ---------------------------------------------------------------- progress events

EVENT = "@@orchestrator "  # a trial process's stdout line carrying an event


def emit(event: dict) -> None:
    """Called in the trial process: send a progress event to whoever runs it (`run_child` reads
    the process's stdout and hands each event on, to the driver's progress or across Ray)."""
    print(EVENT + json.dumps(event), flush=True)


def parse_event(line: str) -> dict | None:
    """The event on a line of a trial's output, or None for an ordinary line (or a garbled event)."""
    if not line.startswith(EVENT):
        return None
    try:
        event = json.loads(line[len(EVENT):])
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}
