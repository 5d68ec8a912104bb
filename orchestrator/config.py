"""Typed experiment configuration: load YAML, apply `key=value` overrides, validate once.

Every problem in a file (unknown key, wrong type, bad value, impossible search space) is
collected and reported together in one `ConfigError`, so a user fixes a config in one pass.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HEADS = ("cls", "pooler", "mean", "cls_mean", "mlp")
STRATEGIES = ("full", "partial", "frozen")
IMBALANCE = ("none", "class_weights", "oversample", "undersample")
SCHEDULERS = ("linear", "cosine")
SAMPLERS = ("tpe", "random")
STORAGES = ("sqlite:///", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://")
PRUNERS = ("median", "none")
DIRECTIONS = ("maximize", "minimize")


class ConfigError(ValueError):
    """Bad experiment configuration. `problems` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the experiment config:\n{lines}")


@dataclass(frozen=True)
class DataConfig:
    # Files (csv, tsv, json/jsonl, parquet; `pkg://` and `zip://...::` paths allowed) or a hub name.
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    hub: str | None = None
    hub_config: str | None = None
    delimiter: str | None = None  # default: by extension (tab for .tsv, comma otherwise)
    text_column: str = "text"
    label_column: str = "label"
    # Used only for the splits not given: carved from train, stratified by label.
    validation_size: float = 0.15
    test_size: float = 0.2
    max_train_rows: int | None = None  # stratified subsample of train, for quick runs
    seed: int = 42


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = "bert-base-uncased"  # hub name, local folder, or pkg://package/folder
    revision: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class TrainingConfig:
    """Defaults for every hyperparameter; the search space overrides any of them per trial."""

    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    epochs: int = 3
    batch_size: int = 16
    eval_batch_size: int = 64
    max_length: int = 128
    dropout: float = 0.1
    head: str = "cls"
    mlp_hidden: int = 256
    strategy: str = "full"
    freeze_layers: int = 0
    imbalance: str = "none"
    scheduler: str = "linear"
    grad_clip: float = 1.0
    log_every: int = 5  # optimizer steps between train_loss / learning_rate points
    seed: int = 42


@dataclass(frozen=True)
class ParamSpace:
    """One searched hyperparameter: `choices` (categorical) or `low`/`high` (int or float)."""

    choices: tuple | None = None
    low: Any = None  # int or float, checked against the hyperparameter's type
    high: Any = None
    log: bool = False
    step: Any = None
    # Only sampled when another parameter has one of these values, e.g. {strategy: [partial]}.
    when: dict | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)


@dataclass(frozen=True)
class SearchConfig:
    n_trials: int | None = 10
    timeout: float | None = None  # seconds for this invocation
    sampler: str = "tpe"
    pruner: str = "median"
    pruner_startup_trials: int = 2
    pruner_warmup_epochs: int = 2  # never prune on epoch 1: it is mostly warm-up
    seed: int = 42
    metric: str = "val_macro_f1"
    direction: str = "maximize"
    storage: str = "sqlite:///mlruns/optuna.db"
    heartbeat_interval: int = 30  # seconds between a running trial's heartbeats in the storage
    heartbeat_grace_period: int = 90  # a trial this long without one is dead (its machine went away)
    study_name: str | None = None  # default: the experiment's name
    work_dir: str = "mlruns/studies"  # per study: saved splits, tokenized cache, checkpoints, trial logs
    gpus_per_trial: int = 1  # >1: each trial is an Accelerate multi-process (DDP) launch; on CPU, processes
    memory_target: float = 0.9  # batch-size probe: peak share of GPU memory a trial may use


@dataclass(frozen=True)
class TrackingConfig:
    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_location: str = "mlruns/artifacts"
    experiment: str | None = None  # default: the experiment's name


@dataclass(frozen=True)
class RegistryConfig:
    model_name: str | None = None  # default: the experiment's name
    register: bool = True


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    space: dict[str, ParamSpace] = field(default_factory=dict)
    search: SearchConfig = field(default_factory=SearchConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    source: str = "<defaults>"  # the file it came from, for messages

    @property
    def study_name(self) -> str:
        return self.search.study_name or self.name

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def model_name(self) -> str:
        return self.registry.model_name or self.name

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        d["space"] = {k: {f: v for f, v in dataclasses.asdict(p).items() if v not in (None, False)}
                      for k, p in self.space.items()}
        return d


# ---------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read an experiment YAML, apply `a.b=value` overrides, and validate everything at once."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError(source, [f"file not found: {path} (pass --config with an existing YAML file)"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(source, [f"malformed YAML at {where}: {e.problem}"]) from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(source, [f"unreadable YAML: {e}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"the top level must be a mapping of sections, found {type(raw).__name__}"])
    problems: list[str] = []
    for item in overrides:
        _apply_override(raw, item, problems)
    return from_dict(raw, source=source, problems=problems)


def from_dict(raw: dict, source: str = "<dict>", problems: list[str] | None = None) -> ExperimentConfig:
    problems = list(problems or [])
    raw = dict(raw)
    space_raw = raw.pop("space", None) or {}
    cfg = _build(ExperimentConfig, raw, "", problems, skip={"space", "source"})
    space = _build_space(space_raw, problems)
    if cfg is not None:
        _check_values(cfg, space, problems)
    if problems:
        raise ConfigError(source, problems)
    return dataclasses.replace(cfg, space=space, source=source)


def _apply_override(raw: dict, item: str, problems: list[str]) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        problems.append(f"override {item!r}: expected key=value, e.g. search.n_trials=5")
        return
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = parsed


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    """Check `value` against a field type; return the (possibly coerced) value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], key, problems)
    if tp is float:
        # YAML 1.1 reads `5e-5` (no dot) as a string; accept it as the number it obviously is.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
    else:
        return value
    problems.append(f"{key}: expected {_type_name(tp)}, found {value!r} ({type(value).__name__})")
    return None


def _build(cls: type, raw: Any, prefix: str, problems: list[str], skip: set[str] = frozenset()):
    where = prefix.rstrip(".") or "top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping of keys, found {raw!r}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(fields)})"
            problems.append(f"{prefix}{key}: unknown key{hint}")
    kwargs = {}
    for name in fields:
        if name not in raw:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], f"{prefix}{name}.", problems)
        else:
            kwargs[name] = _coerce(raw[name], tp, f"{prefix}{name}", problems)
    kwargs = {k: v for k, v in kwargs.items() if v is not None or _allows_none(hints[k])}
    try:
        return cls(**kwargs)
    except TypeError as e:  # only reached when a nested section failed to build
        problems.append(f"{where}: {e}")
        return None


def _allows_none(tp: Any) -> bool:
    return type(None) in typing.get_args(tp)


def _build_space(raw: Any, problems: list[str]) -> dict[str, ParamSpace]:
    if not isinstance(raw, dict):
        problems.append(f"space: expected a mapping of hyperparameter -> range, found {raw!r}")
        return {}
    known = {f.name for f in dataclasses.fields(TrainingConfig)}
    float_keys = {n for n, t in typing.get_type_hints(TrainingConfig).items() if t is float}
    space = {}
    for name, spec in raw.items():
        key = f"space.{name}"
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "searchable keys are those under training:"
            problems.append(f"{key}: unknown hyperparameter ({hint})")
            continue
        if isinstance(spec, list):
            spec = {"choices": spec}
        p = _build(ParamSpace, spec, f"{key}.", problems)
        if p is None:
            continue
        if p.choices is not None:
            if not isinstance(p.choices, (list, tuple)) or len(p.choices) == 0:
                problems.append(f"{key}.choices: must be a non-empty list")
                continue
            p = dataclasses.replace(p, choices=tuple(p.choices))
            if p.low is not None or p.high is not None:
                problems.append(f"{key}: give either choices or low/high, not both")
        else:
            if p.low is None or p.high is None:
                problems.append(f"{key}: needs choices: [...] or both low and high")
                continue
            if name in float_keys:
                lo, hi = _coerce(p.low, float, f"{key}.low", problems), _coerce(p.high, float, f"{key}.high", problems)
                if lo is None or hi is None:
                    continue
                p = dataclasses.replace(p, low=lo, high=hi)
            elif not (p.is_int):
                problems.append(f"{key}: low and high must be whole numbers for this integer hyperparameter")
                continue
            if p.low > p.high:
                problems.append(f"{key}: low ({p.low}) is greater than high ({p.high})")
            if p.log and p.low <= 0:
                problems.append(f"{key}: log scale needs low > 0, found {p.low}")
            if p.log and p.step is not None:
                problems.append(f"{key}: step and log cannot be used together")
        if p.when is not None:
            for dep, values in p.when.items():
                if dep not in raw and dep not in known:
                    problems.append(f"{key}.when: unknown hyperparameter {dep!r}")
                elif not isinstance(values, list):
                    problems.append(f"{key}.when.{dep}: expected a list of values")
        space[name] = p
    return space


def _check_values(cfg: ExperimentConfig, space: dict[str, ParamSpace], problems: list[str]) -> None:
    """Checks that need values, not just types: enums, ranges, choice contents."""
    t = cfg.training
    allowed = {"head": HEADS, "strategy": STRATEGIES, "imbalance": IMBALANCE, "scheduler": SCHEDULERS}
    for name, options in allowed.items():
        values = space[name].choices if name in space and space[name].choices else (getattr(t, name),)
        for v in values or ():
            if v not in options:
                where = f"space.{name}.choices" if name in space else f"training.{name}"
                problems.append(f"{where}: {v!r} is not one of {', '.join(options)}")
    hints = typing.get_type_hints(TrainingConfig)
    for name, p in space.items():
        if p.choices and name not in allowed:
            for v in p.choices:
                _coerce(v, hints[name], f"space.{name}.choices", problems)
    positive = {"learning_rate": t.learning_rate, "epochs": t.epochs, "batch_size": t.batch_size,
                "eval_batch_size": t.eval_batch_size, "max_length": t.max_length, "log_every": t.log_every}
    for name, v in positive.items():
        if v is not None and v <= 0:
            problems.append(f"training.{name}: must be > 0, found {v}")
    for name in ("dropout", "warmup_ratio"):
        v = getattr(t, name)
        if v is not None and not 0 <= v < 1:
            problems.append(f"training.{name}: must be in [0, 1), found {v}")
    s = cfg.search
    if s.sampler not in SAMPLERS:
        problems.append(f"search.sampler: {s.sampler!r} is not one of {', '.join(SAMPLERS)}")
    if s.pruner not in PRUNERS:
        problems.append(f"search.pruner: {s.pruner!r} is not one of {', '.join(PRUNERS)}")
    if s.direction not in DIRECTIONS:
        problems.append(f"search.direction: {s.direction!r} is not one of {', '.join(DIRECTIONS)}")
    if s.n_trials is None and s.timeout is None:
        problems.append("search: set n_trials, timeout, or both, so the study ends")
    if s.n_trials is not None and s.n_trials <= 0:
        problems.append(f"search.n_trials: must be > 0, found {s.n_trials}")
    if not 0 < s.heartbeat_interval < s.heartbeat_grace_period:
        problems.append(f"search.heartbeat_interval ({s.heartbeat_interval}) must be > 0 and below "
                        f"search.heartbeat_grace_period ({s.heartbeat_grace_period})")
    if not s.storage.startswith(STORAGES):
        # Processes sharing a study take a lock beside the storage, which these two support.
        problems.append(f"search.storage: {s.storage!r} is not supported; use sqlite:///path/optuna.db "
                        f"(one machine) or postgresql://user:password@host/db (several machines)")
    d = cfg.data
    if not d.hub and not d.train:
        problems.append("data: set data.train (a file) or data.hub (a dataset name)")
    for name in ("validation_size", "test_size"):
        v = getattr(d, name)
        if v is not None and not 0 < v < 1:
            problems.append(f"data.{name}: must be between 0 and 1, found {v}")
