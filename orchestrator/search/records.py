"""A study as `status`, `report` and `ui --optuna` read it: opened read-only (`study.open_readonly`),
its trials, Optuna's figures of it, and optuna-dashboard on its storage.

What is handed out is plain: names and values, and the trials as Optuna freezes them
(`FrozenTrial`: `number`, `state.name`, `value`, `params`, `distributions`,
`intermediate_values`, `user_attrs`, `datetime_start`, `datetime_complete`), so that the readers
never import Optuna themselves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property

import optuna
from optuna.trial import FrozenTrial, TrialState

from orchestrator.config import ExperimentConfig, paths
from orchestrator.search.study import open_readonly

Trial = FrozenTrial  # a study's trial, as the readers' type hints name it
TRIAL_STATES = tuple(s.name for s in TrialState)  # every state a trial can be in, in Optuna's order
# Optuna's plotly views of a study (`optuna.visualization`), by the name the report gives their section.
FIGURES = {"history": "plot_optimization_history", "importances": "plot_param_importances",
           "parallel": "plot_parallel_coordinate", "slice": "plot_slice"}


@dataclass
class StudyRecord:
    name: str
    direction: str  # "maximize" or "minimize"
    trials: list[Trial]  # every trial, by number
    user_attrs: dict  # the study's own (e.g. mlflow_parent_run_id)
    _study: optuna.Study = field(repr=False)
    _storage: object = field(default=None, repr=False)  # the storage it was read from (its front is beside it)

    @cached_property
    def best(self) -> Trial | None:
        """Optuna's best trial; None until one has completed."""
        try:
            return self._study.best_trial
        except ValueError:  # no trial has completed
            return None

    @property
    def evals_per_epoch(self) -> int:
        """Evaluations a trial reports each epoch (`training.evals_per_epoch`, as the study recorded it)."""
        return int((self.user_attrs.get("evaluations") or {}).get("evals_per_epoch") or 1)

    def confirmation(self) -> list[dict]:
        """The confirmed configurations (`confirm.Group.to_dict`), [] when the study confirmed none."""
        from orchestrator.search.confirm import groups

        maximize = self.direction == "maximize"
        return [g.to_dict(maximize) for g in groups(self._study)]

    @cached_property
    def front(self) -> optuna.Study | None:
        """The study's Pareto front (`search.objectives`, `objectives.py`), None when it has none."""
        from orchestrator.search.objectives import front_name

        storage = self._storage
        name = front_name(self.name)
        if storage is None or name not in [s.study_name for s in optuna.get_all_study_summaries(storage)]:
            return None
        return optuna.load_study(study_name=name, storage=storage)

    def pareto_figure(self):
        """Optuna's Pareto-front plot of the front (quality against each measured objective)."""
        front = self.front
        return optuna.visualization.plot_pareto_front(front, target_names=front.user_attrs.get("objectives"))

    def pareto_table(self) -> list[dict]:
        from orchestrator.search.objectives import table

        objectives = (self.front.user_attrs.get("objectives") or [])[1:] if self.front is not None else []
        return table(self._study, self.front, objectives) if self.front is not None else []

    def figure(self, kind: str):
        """Optuna's plotly figure `kind` (a key of `FIGURES`) of the study. Raises what Optuna
        raises, e.g. a ValueError or RuntimeError when importances cannot be estimated."""
        return getattr(optuna.visualization, FIGURES[kind])(self._study)


def params_of(trial: Trial) -> dict:
    """A trial's parameters; for one still queued (a warm start, a retry), those it was queued with."""
    return dict(trial.params) or dict(trial.system_attrs.get("fixed_params", {}))


def epoch_values(trial: Trial, evals_per_epoch: int) -> list[tuple[float, float]]:
    """A trial's reported evaluations as (epoch, value): evaluation n is epoch n / evals_per_epoch
    (2.5: half way through the third epoch)."""
    return [(step / evals_per_epoch, value) for step, value in sorted(trial.intermediate_values.items())]


def best_epoch(trial: Trial, evals_per_epoch: int, maximize: bool) -> int | None:
    """The epoch whose end scored best (what the trial keeps), None before an epoch ended."""
    ends = [(epoch, value) for epoch, value in epoch_values(trial, evals_per_epoch) if float(epoch).is_integer()]
    if not ends:
        return None
    pick = max if maximize else min
    return int(pick(ends, key=lambda e: e[1])[0])


def as_studied(cfg: ExperimentConfig, record: StudyRecord) -> ExperimentConfig:
    """`cfg` with the metric and direction the study optimises (recorded when it started), which
    win over the config's: a study's values are of its own metric, whatever the YAML says now."""
    objective = record.user_attrs.get("objective") or {}
    metric, direction = objective.get("metric", cfg.search.metric), record.direction
    if (metric, direction) == (cfg.search.metric, cfg.search.direction):
        return cfg
    return dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, metric=metric, direction=direction))


def read_study(cfg: ExperimentConfig) -> StudyRecord:
    """The study `cfg.study_name`, read as it is now; `StorageError` when it is not there."""
    study, storage = open_readonly(cfg, with_storage=True)
    return StudyRecord(cfg.study_name, study.direction.name.lower(), study.get_trials(deepcopy=False),
                       dict(study.user_attrs), study, storage)


def check_study(cfg: ExperimentConfig) -> None:
    """`StorageError` (saying what to do) unless the study is in its storage; reads no trial."""
    open_readonly(cfg)


def serve_dashboard(storage: str, host: str, port: int) -> None:
    """optuna-dashboard on `storage` (which must exist), in this process: the storage URL, which
    may hold a password, never reaches a command line. Returns when the server stops."""
    from optuna_dashboard import run_server

    run_server(paths.absolute_sqlite(storage, create=False), host=host, port=port)
