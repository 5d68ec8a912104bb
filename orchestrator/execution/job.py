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
import select
import sys
import time
from dataclasses import dataclass, field

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
    datasets: list = field(default_factory=list)  # the study's splits as MLflow dataset inputs (`tracking.lineage`)

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
# (`search/`); a trial reports through events. PostgreSQL's own variables (a password, a password
# file, a service file libpq reads) go only where the tracking store itself is PostgreSQL, which
# the trial does write to.
STUDY_ONLY = {("search", "storage")}
STUDY_PLACEHOLDER = "sqlite:///the-study-is-the-drivers.db"  # in a job's config: no address of the study


def secret_environment(cfg: ExperimentConfig) -> dict[str, str]:
    """What a trial process needs that must not be written down: the tracking store's real URL,
    in the variable a config may take it from (`trial.job_config` reads it back), and the
    credentials MLflow and the object store read from the environment. Not the study's storage."""
    urls = {variable: absolute_sqlite(getattr(getattr(cfg, section), key))
            for (section, key), variable in FROM_ENVIRONMENT.items() if (section, key) not in STUDY_ONLY}
    postgres_tracking = cfg.tracking.uri.startswith("postgresql")
    forwarded = {v: os.environ[v] for v in FORWARDED if os.environ.get(v) and not v.startswith("PG")}
    if postgres_tracking:
        forwarded.update({v: value for v, value in os.environ.items() if v.startswith("PG")})
    return {**forwarded, **urls}


def without_study_secrets(environment: dict[str, str], kept: dict[str, str]) -> dict[str, str]:
    """A trial process's environment: the driver's, less every way into the study storage, plus
    `kept` (what `secret_environment` chose to hand on)."""
    drop = {FROM_ENVIRONMENT[key] for key in STUDY_ONLY}
    return {**{k: v for k, v in environment.items() if k not in drop and not k.startswith("PG")}, **kept}


def config_for_job(cfg_dict: dict) -> dict:
    """The config a job carries: passwords are already redacted (`secrets.public`); the study's
    storage is replaced too, since a trial never opens it."""
    return {**cfg_dict, "search": {**cfg_dict["search"], "storage": STUDY_PLACEHOLDER}}


# A spare trial process (`worker --wait`) sets this before it runs its job: the trial records it.
WARM_START = "ORCHESTRATOR_WARM_START"

# ---------------------------------------------------------------- progress events

EVENT = "@@orchestrator "  # a trial process's stdout line carrying an event


def emit(event: dict) -> None:
    """Called in the trial process: send an event to whoever runs it (`run_child` reads the
    process's stdout and hands each event on, to the driver or across Ray). One write: `print`
    makes two, between which another rank of a multi-process launch may write into the line."""
    sys.stdout.write(EVENT + json.dumps(event) + "\n")
    sys.stdout.flush()


ANSWER_WAIT_S = 600  # a driver silent this long is taken as gone: the trial decides alone
ANSWERS = "ORCHESTRATOR_ANSWERS"  # set to "stdin" by `processes.run_child`: the driver answers there
_asked = 0  # questions this process has asked: an answer names the one it answers
_unread = b""  # what was read from stdin past the last answer's line


def ask(question: dict, wait: float = ANSWER_WAIT_S) -> dict | None:
    """Called in the trial process: send `question` as an event and wait for the driver's answer,
    a JSON line on stdin carrying the question's `seq`. None when there is no answer within `wait`
    seconds (stdin closed: the driver is gone, or the trial runs without one, as in a test); the
    caller then does what it would do unasked. An answer to an earlier question that came too
    late is skipped, never taken for this one."""
    global _asked
    _asked += 1
    seq = _asked
    emit({**question, "ask": True, "seq": seq})
    if os.environ.get(ANSWERS) != "stdin":  # not started by an executor: nobody answers on stdin
        return None
    deadline = time.monotonic() + wait
    try:
        fd = sys.stdin.fileno()  # raises where stdin is no file (pytest's)
        while (line := _answer_line(fd, deadline)) is not None:
            try:
                answer = json.loads(line)
            except ValueError:  # a garbled answer: wait for the next line
                continue
            if isinstance(answer, dict) and answer.pop("seq", None) == seq:
                return answer
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _answer_line(fd: int, deadline: float) -> str | None:
    """The next line on `fd` by `deadline`, or None (time is up, or end of file). Reads the file
    descriptor itself: a buffered reader could hold a line that `select` then never reports."""
    global _unread
    while b"\n" not in _unread:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            return None
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None
        _unread += chunk
    line, _, _unread = _unread.partition(b"\n")
    return line.decode("utf-8", errors="replace")


def parse_event(line: str) -> dict | None:
    """The event on a line of a trial's output, or None for an ordinary line; {} for a garbled
    event. The prefix may follow other text: another process (a rank, a library's thread) can
    write into the same pipe without a newline first."""
    at = line.find(EVENT)
    if at < 0:
        return None
    try:
        event, _ = json.JSONDecoder().raw_decode(line[at + len(EVENT):])
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def text_before_event(line: str) -> str:
    """What another writer left on an event's line before the event, for the trial's log."""
    at = line.find(EVENT)
    return line[:at] if at > 0 else ""
