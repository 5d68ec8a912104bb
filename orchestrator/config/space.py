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
import math

from orchestrator.config.schema import ParamSpace, TrainingConfig

ENUMERATION_LIMIT = 100_000  # beyond this many combinations of condition values, stop counting exactly


def _ordered(space: dict[str, ParamSpace]) -> list[tuple[str, ParamSpace]]:
    """Unconditional parameters first, then each conditional one after the parameters its
    condition reads (which may be conditional themselves), so conditions see the values they
    depend on. A cycle (reported by the config checks) leaves the rest in the given order."""
    order = [(n, p) for n, p in space.items() if not p.when]
    placed = {n for n, _ in order}
    pending = [(n, p) for n, p in space.items() if p.when]
    while pending:
        ready = [(n, p) for n, p in pending if all(d in placed or d not in space or d == n for d in p.when)]
        if not ready:
            return order + pending
        order += ready
        placed.update(n for n, _ in ready)
        pending = [item for item in pending if item not in ready]
    return order


def cycle(space: dict[str, ParamSpace]) -> list[str]:
    """The conditional parameters whose conditions depend on each other in a circle ([] if none)."""
    order = _ordered(space)
    placed: set[str] = set()
    for name, p in order:
        if p.when and any(d in space and d not in placed and d != name for d in p.when):
            return [n for n, q in order[order.index((name, p)):]]
        placed.add(name)
    return []


def possible_values(name: str, space: dict[str, ParamSpace], defaults: TrainingConfig) -> list | None:
    """What a hyperparameter can be in some trial (None: a continuous range)."""
    p = space.get(name)
    if p is None:
        return [getattr(defaults, name)]
    values = _values(p)
    # A conditional parameter that is not sampled keeps its training value.
    return values if values is None or not p.when else [*values, getattr(defaults, name)]


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


GRID_MOST = 10_000  # points of a grid sampler's space (Optuna holds them all in memory)


def grid(space: dict[str, ParamSpace]) -> dict[str, list] | None:
    """Each parameter's values, for a grid sampler; None when one of them is a continuous range
    or the grid would hold more than `GRID_MOST` points (counted before any value is listed)."""
    sizes = [size_of(p) for p in space.values()]
    if None in sizes or math.prod(sizes) > GRID_MOST:
        return None
    return {name: _values(p) for name, p in space.items()}


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

    Counted by listing them up to `ENUMERATION_LIMIT`; beyond, the product of the unconditional
    parameters' sizes, a lower bound.
    """
    sizes = [size_of(p) for p in space.values()]
    if any(n is None for n in sizes):
        return None
    if math.prod(sizes) <= ENUMERATION_LIMIT:
        return len(configurations(space, defaults))
    return math.prod(size_of(p) for p in space.values() if not p.when)


def configurations(space: dict[str, ParamSpace], defaults: TrainingConfig,
                   limit: int = ENUMERATION_LIMIT) -> list[dict] | None:
    """Every distinct configuration (the parameters a trial would hold), or None when the space
    is infinite or could hold more than `limit`."""
    sizes = [size_of(p) for p in space.values()]
    if any(n is None for n in sizes) or math.prod(sizes) > limit:
        return None
    configs: list[dict] = [{}]
    for name, p in _ordered(space):
        values = _values(p)
        grown = []
        for c in configs:
            grown.extend([{**c, name: v} for v in values] if _active(p, c, defaults) else [c])
        configs = grown
    return configs
