"""Experiment YAML + `key=value` overrides -> a typed `ExperimentConfig`, validated once.

Every problem (unknown key, wrong type, value out of range, impossible search space) is collected
and reported together in one `ConfigError`, so a user fixes a config in one pass.

Two settings may come from the environment when the experiment leaves them out, so that a
password need not sit in a file or on a command line: `search.storage` from
`$ORCHESTRATOR_STORAGE` and `tracking.uri` from `$ORCHESTRATOR_TRACKING_URI`. (Not MLflow's own
`MLFLOW_TRACKING_URI`: `mlflow.set_tracking_uri` sets that one in-process, so it would leak one
study's store into the next config loaded by the same process.)
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config import checks, secrets
from orchestrator.config.schema import ExperimentConfig, ParamSpace, TrainingConfig

FROM_ENVIRONMENT = {("search", "storage"): "ORCHESTRATOR_STORAGE", ("tracking", "uri"): "ORCHESTRATOR_TRACKING_URI"}


class ConfigError(ValueError):
    """Bad experiment configuration. `problems` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the experiment config:\n{lines}")


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read an experiment YAML, apply `a.b=value` overrides, and validate everything at once."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError(source, [f"file not found: {path} (pass --config with an existing YAML file)"])
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
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
    _defaults_from_environment(raw)
    return from_dict(raw, source=source, problems=problems)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: PyYAML keeps
    the last one silently, so a forgotten earlier setting would quietly lose."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def from_dict(raw: dict, source: str = "<dict>", problems: list[str] | None = None) -> ExperimentConfig:
    problems = list(problems or [])
    raw = dict(raw)
    space_raw = raw.pop("space", None) or {}
    cfg = _build(ExperimentConfig, raw, "", problems, skip={"space", "source"})
    space = _build_space(space_raw, problems)
    if cfg is not None:
        cfg = _task_defaults(dataclasses.replace(cfg, space=space, source=source))
        secrets.remember(cfg.search.storage)
        secrets.remember(cfg.tracking.uri)
        checks.check(cfg, problems)
    if problems:
        raise ConfigError(source, problems)
    return cfg


def _task_defaults(cfg: ExperimentConfig) -> ExperimentConfig:
    """Settings whose default depends on the task: the head and the metric the search optimises."""
    from orchestrator.tasks import REGISTRY, task_class

    if cfg.task not in REGISTRY:
        return cfg  # reported by the checks
    task = task_class(cfg.task)
    if cfg.training.head is None:
        cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, head=task.heads[0]))
    if cfg.search.metric is None:
        cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, metric=f"val_{task.main_metric}"))
    return cfg


def _defaults_from_environment(raw: dict) -> None:
    for (section, key), variable in FROM_ENVIRONMENT.items():
        value = os.environ.get(variable)
        part = raw.get(section)
        if value and (part is None or isinstance(part, dict)) and key not in (part or {}):
            raw[section] = {**(part or {}), key: value}


def _apply_override(raw: dict, item: str, problems: list[str]) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        problems.append(f"override {item!r}: expected key=value, e.g. search.n_trials=5")
        return
    if not value.strip():
        problems.append(f"override {item!r}: no value; write {key.strip()}=null to unset a setting")
        return
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    # Only a value written as {...} or [...] is a mapping or a list: YAML would read
    # `sqlite:///:memory:` (a colon at the end) as a mapping.
    if isinstance(parsed, dict) and not value.lstrip().startswith("{") or \
            isinstance(parsed, list) and not value.lstrip().startswith("["):
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


def coerce(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    """Check `value` against a field type; return the (possibly coerced) value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return coerce(value, inner[0], key, problems)
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
        if isinstance(value, (bool, int, float)):  # YAML read `positive_label: 1` (a label "1") as a number
            problems.append(f"{key}: expected str, found {value!r} ({type(value).__name__}); YAML reads an unquoted "
                            f"1, 1.0 or true as a number or a boolean: quote it, as in {key.rsplit('.', 1)[-1]}: "
                            f"\"{json.dumps(value)}\"")
            return None
    elif origin is tuple:  # a list of names; one name alone is a list of one
        items = [value] if isinstance(value, str) else value
        if isinstance(items, (list, tuple)) and items and all(isinstance(v, str) and v for v in items):
            return tuple(items)
        problems.append(f"{key}: expected a file name or a list of file names, found {value!r}")
        return None
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
        section = _section_type(tp)
        if section is not None and not (raw[name] is None and _allows_none(tp)):
            kwargs[name] = _build(section, raw[name], f"{prefix}{name}.", problems)
        else:
            kwargs[name] = coerce(raw[name], tp, f"{prefix}{name}", problems)
    kwargs = {k: v for k, v in kwargs.items() if v is not None or _allows_none(hints[k])}
    try:
        return cls(**kwargs)
    except TypeError as e:  # only reached when a nested section failed to build
        problems.append(f"{where}: {e}")
        return None


def _section_type(tp: Any) -> type | None:
    """The dataclass of a section field (`PretrainConfig` of `PretrainConfig | None` too), else None."""
    candidates = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return candidates[0] if len(candidates) == 1 and dataclasses.is_dataclass(candidates[0]) else None


def _allows_none(tp: Any) -> bool:
    return type(None) in typing.get_args(tp)


def _build_space(raw: Any, problems: list[str]) -> dict[str, ParamSpace]:
    """Shapes and types of `space:` entries; their values are checked in `checks.py`."""
    if not isinstance(raw, dict):
        problems.append(f"space: expected a mapping of hyperparameter -> range, found {raw!r}")
        return {}
    hints = typing.get_type_hints(TrainingConfig)
    space = {}
    for name, spec in raw.items():
        key = f"space.{name}"
        if name not in hints:
            close = difflib.get_close_matches(str(name), hints, n=1)
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
            if p.low is not None or p.high is not None:
                problems.append(f"{key}: give either choices or low/high, not both")
            values = tuple(coerce(v, hints[name], f"{key}.choices", problems) for v in p.choices)
            if None in values:
                continue
            if len(set(values)) != len(values):
                problems.append(f"{key}.choices: {list(p.choices)} repeats a value")
            p = dataclasses.replace(p, choices=values)
        else:
            if p.low is None or p.high is None:
                problems.append(f"{key}: needs choices: [...] or both low and high")
                continue
            if hints[name] is float:
                lo = coerce(p.low, float, f"{key}.low", problems)
                hi = coerce(p.high, float, f"{key}.high", problems)
                step = coerce(p.step, float, f"{key}.step", problems) if p.step is not None else None
                if lo is None or hi is None:
                    continue
                p = dataclasses.replace(p, low=lo, high=hi, step=step)
            elif hints[name] is int:
                whole = [v for v in (p.low, p.high, p.step) if v is not None]
                if not p.is_int or any(isinstance(v, bool) or not isinstance(v, int) for v in whole):
                    problems.append(f"{key}: low, high and step must be whole numbers for this integer "
                                    f"hyperparameter")
                    continue
            else:
                problems.append(f"{key}: {name} takes one of a list of values; write {key}: [a, b]")
                continue
        if p.when is not None:
            for dep, values in p.when.items():
                if dep == name:
                    problems.append(f"{key}.when: {name} cannot depend on itself")
                elif dep not in hints:
                    problems.append(f"{key}.when: unknown hyperparameter {dep!r}")
                elif not isinstance(values, list) or not values:
                    problems.append(f"{key}.when.{dep}: expected a non-empty list of values")
        space[name] = p
    return space
