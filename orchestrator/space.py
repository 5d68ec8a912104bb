"""YAML search space -> `trial.suggest_*` calls. Pure: no training, no storage.

Each hyperparameter in `space:` overrides the `training:` default of the same name for a trial.
A parameter with `when: {strategy: [partial]}` is only sampled when that condition holds
(Optuna's define-by-run makes conditional spaces natural). `count_configurations` says how many
distinct configurations a space holds, so a study never asks for more trials than there are, and
`configurations` lists them when there are few enough, so a repeat can be replaced by one not
yet tried.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from orchestrator.config.schema import ParamSpace, TrainingConfig

ENUMERATION_LIMIT = 100_000  # beyond this many combinations of condition values, stop counting exactly


def _ordered(space: dict[str, ParamSpace]) -> list[tuple[str, ParamSpace]]:
    # Unconditional parameters first, so conditions can read the values they depend on.
    return sorted(space.items(), key=lambda item: item[1].when is not None)


def _active(p: ParamSpace, values: dict, defaults: TrainingConfig) -> bool:
    return not p.when or all(values.get(dep, getattr(defaults, dep, None)) in allowed
                             for dep, allowed in p.when.items())


def suggest(trial, space: dict[str, ParamSpace], defaults: TrainingConfig) -> TrainingConfig:
    """Sample one configuration: `defaults` with every (active) searched value replaced."""
    values: dict = {}
    for name, p in _ordered(space):
        if not _active(p, values, defaults):
            continue
        if p.choices is not None:
            values[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.is_int:
            values[name] = trial.suggest_int(name, p.low, p.high, step=int(p.step or 1), log=p.log)
        else:
            values[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return dataclasses.replace(defaults, **values)


def size_of(p: ParamSpace) -> int | None:
    """How many values `p` can take; None for a continuous range."""
    if p.choices is not None:
        return len(p.choices)
    if p.is_int:
        return (p.high - p.low) // int(p.step or 1) + 1
    if p.low == p.high:
        return 1
    if p.step is not None:
        return math.floor((p.high - p.low) / p.step + 1e-9) + 1
    return None


def _values(p: ParamSpace) -> list | None:
    if p.choices is not None:
        return list(p.choices)
    if p.is_int:
        return list(range(p.low, p.high + 1, int(p.step or 1)))
    n = size_of(p)
    # i * step + low: the arithmetic Optuna uses for a stepped float, so the values compare equal.
    return None if n is None else [i * (p.step or 0) + p.low for i in range(n)]


def count_configurations(space: dict[str, ParamSpace], defaults: TrainingConfig) -> int | None:
    """Distinct configurations the space holds (1 for an empty space); None when infinite.

    Above `ENUMERATION_LIMIT` combinations of the values that conditions read, a lower bound.
    """
    plain = {n: p for n, p in space.items() if not p.when}
    conditional = {n: p for n, p in space.items() if p.when}
    read = sorted({dep for p in conditional.values() for dep in p.when} & plain.keys())
    independent = 1
    for name, p in plain.items():
        if name not in read:
            size = size_of(p)
            if size is None:
                return None
            independent *= size
    choices = [_values(plain[name]) for name in read]
    if any(c is None for c in choices):
        return None
    combinations = math.prod(len(c) for c in choices)
    if combinations > ENUMERATION_LIMIT:
        return independent * combinations
    total = 0
    for combo in itertools.product(*choices):
        values, count = dict(zip(read, combo)), 1
        for _name, p in _ordered(conditional):
            if _active(p, values, defaults):
                size = size_of(p)
                if size is None:
                    return None
                count *= size
        total += count
    return total * independent


def configurations(space: dict[str, ParamSpace], defaults: TrainingConfig,
                   limit: int = ENUMERATION_LIMIT) -> list[dict] | None:
    """Every distinct configuration (the parameters a trial would hold), or None when the space
    is infinite or holds more than `limit`."""
    n = count_configurations(space, defaults)
    if n is None or n > limit:
        return None
    configs: list[dict] = [{}]
    for name, p in _ordered(space):
        values = _values(p)
        grown = []
        for c in configs:
            grown.extend([{**c, name: v} for v in values] if _active(p, c, defaults) else [c])
        configs = grown
    return configs
