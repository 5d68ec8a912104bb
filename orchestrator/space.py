"""YAML search space -> `trial.suggest_*` calls. Pure: no training, no storage.

Each hyperparameter in `space:` overrides the `training:` default of the same name for a trial.
A parameter with `when: {strategy: [partial]}` is only sampled when that condition holds
(Optuna's define-by-run makes conditional spaces natural).
"""

from __future__ import annotations

import dataclasses

from orchestrator.config import ParamSpace, TrainingConfig


def suggest(trial, space: dict[str, ParamSpace], defaults: TrainingConfig) -> TrainingConfig:
    """Sample one configuration: `defaults` with every (active) searched value replaced."""
    values: dict = {}
    # Unconditional parameters first, so conditions can read the values they depend on.
    for name, p in sorted(space.items(), key=lambda item: item[1].when is not None):
        if p.when and not all(values.get(dep, getattr(defaults, dep, None)) in allowed
                              for dep, allowed in p.when.items()):
            continue
        if p.choices is not None:
            values[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.is_int:
            values[name] = trial.suggest_int(name, p.low, p.high, step=int(p.step or 1), log=p.log)
        else:
            values[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return dataclasses.replace(defaults, **values)
