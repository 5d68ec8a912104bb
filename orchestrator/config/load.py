"""Experiment YAML + `key=value` overrides -> a typed `ExperimentConfig`, validated once.

Every problem (unknown key, wrong type, value out of range, impossible search space) is collected
and reported together in one `ConfigError`, so a user fixes a config in one pass. Pydantic checks
the types, ranges and choices the schema declares; its errors become one `section.key: ...` line
each, in the words this project has always used ("must be >= 1, found 0").

Two settings may come from the environment when the experiment leaves them out, so that a
password need not sit in a file or on a command line: `search.storage` from
`$ORCHESTRATOR_STORAGE` and `tracking.uri` from `$ORCHESTRATOR_TRACKING_URI`. (Not MLflow's own
`MLFLOW_TRACKING_URI`: `mlflow.set_tracking_uri` sets that one in-process, so it would leak one
study's store into the next config loaded by the same process.)

The task is not known here (config is the bottom layer): settings whose default depends on the
task, and the task's own rules, come from `rules` (see `task_rules.py`), which the tasks supply.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from orchestrator.config import checks, components, secrets
from orchestrator.config.schema import ExperimentConfig, Float, ParamSpace, TrainingConfig
from orchestrator.config.task_rules import TaskRules

FROM_ENVIRONMENT = {("search", "storage"): "ORCHESTRATOR_STORAGE", ("tracking", "uri"): "ORCHESTRATOR_TRACKING_URI"}
BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
TYPES = {"int_type": "int", "float_type": "float", "bool_type": "bool", "string_type": "str", "dict_type": "dict",
         "tuple_type": "a list"}
_INVALID = object()  # a searched value that was reported


class ConfigError(ValueError):
    """Bad experiment configuration. `problems` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the experiment config:\n{lines}")


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                rules: TaskRules | None = None) -> ExperimentConfig:
    """Read an experiment YAML, apply `a.b=value` overrides, and validate everything at once
    (the task's defaults and rules too when `rules` is given: `orchestrator.tasks.load_experiment`)."""
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
    return from_dict(raw, source=source, problems=problems, rules=rules)


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


def from_dict(raw: dict, source: str = "<dict>", problems: list[str] | None = None,
              rules: TaskRules | None = None) -> ExperimentConfig:
    """The config of `raw` (sections as in the YAML). Without `rules`, the task is not checked and
    the settings whose default depends on it stay unset: enough for a config that was complete
    already, as the one a trial process rebuilds from `to_dict()` is."""
    problems = list(problems or [])
    sections = {n for n, f in ExperimentConfig.__pydantic_fields__.items() if dataclasses.is_dataclass(f.annotation)}
    raw = {k: {} if v is None and k in sections else v for k, v in raw.items()}  # `search:` with nothing under it
    space = _build_space(raw.pop("space", None) or {}, problems)
    if "source" in raw:  # the file's name, recorded by the loader, not a setting
        problems.append(_unknown("source", ExperimentConfig))
        del raw["source"]
    cfg = _build(ExperimentConfig, {**raw, "source": source}, problems)
    if cfg is not None:
        cfg = dataclasses.replace(cfg, space=space)
        if rules is not None:
            cfg = rules.settle(cfg)
        secrets.remember(cfg.search.storage)
        secrets.remember(cfg.tracking.uri)
        cfg = _settle_components(cfg, problems)
        checks.check(cfg, problems)
        if rules is not None and cfg.task not in rules.names():
            problems.append(f"task: {cfg.task!r} is not one of {', '.join(rules.names())}")
        elif rules is not None:
            problems.extend(rules.problems(cfg))
    if problems:
        raise ConfigError(source, problems)
    return cfg


def _settle_components(cfg: ExperimentConfig, problems: list[str]) -> ExperimentConfig:
    """The sampler's and the pruner's options checked against their tables (`components.py`), and
    kept as the complete settings (defaults filled in), so that what a study ran with is on record."""
    settled = {}
    for kind, table in (("sampler", components.SAMPLER_OPTIONS), ("pruner", components.PRUNER_OPTIONS)):
        name, given = getattr(cfg.search, kind), getattr(cfg.search, f"{kind}_options") or {}  # `options:` alone
        cls, key = table[name], f"search.{kind}_options"
        allowed = [f.name for f in dataclasses.fields(cls)]
        for option in given:
            if option not in allowed:
                # Often the options of the component the YAML names, left behind by an override of it.
                owners = [n for n, c in table.items() if option in {f.name for f in dataclasses.fields(c)}]
                hint = (f"; it is an option of {kind} {' and '.join(owners)}: with search.{kind}={name}, drop it "
                        f"(on the command line: {key}={{}})" if owners else "")
                problems.append(f"{key}.{option}: not an option of {kind} {name} (its options: "
                                f"{', '.join(allowed) or 'none'}){hint}")
        built = _build(cls, {k: v for k, v in given.items() if k in allowed}, problems, f"{key}.")
        settled[f"{kind}_options"] = dataclasses.asdict(built) if built is not None else {}
    return dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, **settled))


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


@functools.cache
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp)


def _build(cls: type, raw: Any, problems: list[str], prefix: str = "") -> Any:
    """`cls` from `raw`, each problem reported. A setting with a problem is built with its
    default instead, so that the checks comparing settings still run on the others."""
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.') or 'top level'}: expected a mapping of keys, found {raw!r}")
        return None
    while True:
        try:
            return _adapter(cls).validate_python(raw)
        except ValidationError as e:
            left = raw
            for error in e.errors():
                line = _line(cls, error, prefix)
                if line not in problems:  # each branch of a union says the same
                    problems.append(line)
                left = _without(left, error["loc"])
            if left == raw:  # nothing left to fall back on (not seen: every error has a key)
                return None
            raw = left


def _without(raw: dict, loc: tuple) -> dict:
    """`raw` less the value at `loc`."""
    head, *rest = loc
    if rest and isinstance(raw.get(head), dict):
        return {**raw, head: _without(raw[head], tuple(rest))}
    return {k: v for k, v in raw.items() if k != head}


def _line(cls: type, error: dict, prefix: str = "") -> str:
    """One pydantic error as `key: what was found, what is allowed`."""
    parts, path = [str(part) for part in error["loc"]], []
    while parts:  # down the sections to the setting; what is left names a branch of its type
        path.append(parts.pop(0))
        field = cls.__pydantic_fields__.get(path[-1])
        nested = field and next((a for a in (field.annotation, *typing.get_args(field.annotation))
                                 if dataclasses.is_dataclass(a)), None)
        if not parts or nested is None:
            break
        cls = nested
    name, key = path[-1], prefix + ".".join(path)
    if parts and field is not None:  # a setting of several types (int or 'auto'): one line for all
        return f"{key}: expected {_allowed(field.annotation)}, found {error['input']!r}"
    if error["type"] == "unexpected_keyword_argument":
        return _unknown(key, cls)
    return f"{key}: {_what(error, cls.__pydantic_fields__.get(name), name)}"


def _what(error: dict, field: Any = None, name: str = "") -> str:
    """What is wrong with the value `error` is about, and what `field` (a FieldInfo) allows."""
    value, kind = error["input"], error["type"]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bounds = [f"{sign} {getattr(m, attr):g}" for m in field.metadata for attr, sign in BOUNDS if hasattr(m, attr)]
        return f"must be {' and '.join(bounds)}, found {value}"
    if kind == "literal_error":
        return f"{value!r} is not one of {', '.join(map(str, _choices(field.annotation)))}"
    if kind == "string_too_short":
        return "must not be empty (leave the key out instead)"
    if kind == "dataclass_type":
        return f"expected a mapping of keys, found {value!r}"
    if kind == "string_type" and isinstance(value, (bool, int, float)):  # YAML read `positive_label: 1` as a number
        return (f"expected str, found {value!r} ({type(value).__name__}); YAML reads an unquoted 1, 1.0 or true as "
                f"a number or a boolean: quote it, as in {name}: \"{json.dumps(value)}\"")
    if kind in TYPES:
        return f"expected {TYPES[kind]}, found {value!r} ({type(value).__name__})"
    return error["msg"]  # this project's own errors (schema.py) say it in its words already


def _allowed(tp: Any) -> str:
    """What a type takes, in words: `Int | Literal["auto"]` -> "a whole number or 'auto'"."""
    if typing.get_origin(tp) is typing.Annotated:
        return _allowed(typing.get_args(tp)[0])
    if typing.get_origin(tp) is typing.Literal:
        return " or ".join(map(repr, typing.get_args(tp)))
    if typing.get_origin(tp) is dict:
        return "a mapping of names to values"
    if typing.get_args(tp):
        return " or ".join(_allowed(a) for a in typing.get_args(tp) if a is not type(None))
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(tp, str(tp))


def _unknown(key: str, cls: type) -> str:
    known = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(known)
    return f"{key}: unknown key ({hint})"


def _choices(tp: Any) -> list:
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    return [c for arg in typing.get_args(tp) for c in _choices(arg)]


def _build_space(raw: Any, problems: list[str]) -> dict[str, ParamSpace]:
    """Shapes of the `space:` entries, and each bound and choice checked as the `training:`
    setting of that name would be; the rules between them are in `checks.py`."""
    if not isinstance(raw, dict):
        problems.append(f"space: expected a mapping of hyperparameter -> range, found {raw!r}")
        return {}
    fields = TrainingConfig.__pydantic_fields__
    space = {}
    for name, spec in raw.items():
        key = f"space.{name}"
        if name in checks.NOT_SEARCHED:
            problems.append(f"{key}: not searchable: {checks.NOT_SEARCHED[name]}; set training.{name} instead")
            continue
        if name not in fields:
            close = difflib.get_close_matches(str(name), fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "searchable keys are those under training:"
            problems.append(f"{key}: unknown hyperparameter ({hint})")
            continue
        p = _build(ParamSpace, {"choices": spec} if isinstance(spec, list) else spec, problems, f"{key}.")
        if p is None:
            continue
        tp = fields[name].annotation
        if p.choices is not None:
            if len(p.choices) == 0:
                problems.append(f"{key}.choices: must be a non-empty list")
                continue
            if p.low is not None or p.high is not None:
                problems.append(f"{key}: give either choices or low/high, not both")
            values = tuple(_hyperparameter(name, v, f"{key}.choices", problems) for v in p.choices)
            if _INVALID in values:
                continue
            if len(set(values)) != len(values):
                problems.append(f"{key}.choices: {list(p.choices)} repeats a value")
            p = dataclasses.replace(p, choices=values)
        elif p.low is None or p.high is None:
            problems.append(f"{key}: needs choices: [...] or both low and high")
            continue
        elif tp is int and any(isinstance(v, bool) or not isinstance(v, int) for v in (p.low, p.high, p.step)
                               if v is not None):
            problems.append(f"{key}: low, high and step must be whole numbers for this integer hyperparameter")
            continue
        elif tp in (int, float):
            low, high = (_hyperparameter(name, v, f"{key}.{end}", problems) for end, v in (("low", p.low),
                                                                                         ("high", p.high)))
            step = p.step if p.step is None or tp is int else _value(Float, p.step, f"{key}.step", problems)
            if _INVALID in (low, high, step):
                continue
            p = dataclasses.replace(p, low=low, high=high, step=step)
        else:
            problems.append(f"{key}: {name} takes one of a list of values; write {key}: [a, b]")
            continue
        for dep, values in (p.when or {}).items():
            if dep == name:
                problems.append(f"{key}.when: {name} cannot depend on itself")
            elif dep not in fields:
                problems.append(f"{key}.when: unknown hyperparameter {dep!r}")
            elif not isinstance(values, list) or not values:
                problems.append(f"{key}.when.{dep}: expected a non-empty list of values")
        space[name] = p
    return space


def _hyperparameter(name: str, value: Any, key: str, problems: list[str]) -> Any:
    """`value` as training setting `name` takes it (5e-5 written as a string is a number), or
    _INVALID with the problem reported under `key`."""
    try:
        return getattr(_adapter(TrainingConfig).validate_python({name: value}), name)
    except ValidationError as e:
        field = TrainingConfig.__pydantic_fields__[name]
        problems.extend(f"{key}: {_what(error, field, name)}" for error in e.errors())
        return _INVALID


def _value(tp: Any, value: Any, key: str, problems: list[str]) -> Any:
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError as e:
        problems.extend(f"{key}: {_what(error)}" for error in e.errors())
        return _INVALID
