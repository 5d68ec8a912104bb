"""Seed-confirmed champion (`search.confirm`): the best configurations trained again on new seeds,
and the champion chosen by their mean, not by one lucky run.

Fine-tuning a pretrained encoder on a few hundred rows moves by several points with the seed
alone (Dodge et al. 2020; Mosbach et al. 2021), so the single best trial of a search is partly
the best draw of noise. After the trial budget, the `top_k` best configurations (by validation
score, completed trials only) are each trained again with `seeds` new training seeds
(`training.seed + 1`, `+ 2`, ...). A confirmation is an ordinary trial of the study with the
configuration's parameters and user attrs `confirms` (the trial it repeats) and `confirm_seed`:
it runs, is tracked and can be recovered like any other, but it is never pruned (its score must
be the full training's), it does not count against `search.n_trials` (the summary shows its own
budget), and the sampler's no-repeat rule lets it through.

The champion is the configuration with the best mean validation score over its runs (the trial
and its confirmations that completed); the registered weights are that configuration's best
single run. Planning is idempotent: a configuration gets each missing seed queued once, whoever
plans (several processes on one study, or a resumed run), so a study ends with exactly
`top_k * seeds` confirmations for its final top configurations.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from orchestrator.config import ExperimentConfig

CONFIRMS = "confirms"  # user attr: the number of the trial whose configuration this one trains again
SEED = "confirm_seed"  # user attr: its training seed
PLAN = "confirmation"  # study user attr: what was planned, for the report and resumed runs


def is_confirmation(trial: FrozenTrial | optuna.Trial) -> bool:
    return CONFIRMS in trial.user_attrs


def searched(trials) -> list:
    """The trials of the search proper: not confirmations (which have their own budget)."""
    return [t for t in trials if CONFIRMS not in t.user_attrs]


def seeds(cfg: ExperimentConfig) -> list[int]:
    """The new training seeds: the search's seed plus 1, 2, ... (kept under numpy's 2**32)."""
    return [(cfg.training.seed + i) % 2**32 for i in range(1, cfg.search.confirm.seeds + 1)]


def enabled(cfg: ExperimentConfig) -> bool:
    return cfg.search.confirm.top_k > 0


def top_configurations(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The `k` best completed trials of the search proper, best first (ties: the earlier trial)."""
    done = searched(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    return sorted(done, key=lambda t: (sign * t.value, t.number))[:k]


def plan(study: optuna.Study, cfg: ExperimentConfig) -> tuple[int, str | None]:
    """Queue the confirmations the top configurations still lack (call under the study lock).
    Returns (how many were queued now, a note when fewer configurations completed than top_k)."""
    k = cfg.search.confirm.top_k
    top = top_configurations(study, k)
    have = {(t.user_attrs[CONFIRMS], t.user_attrs.get(SEED)) for t in study.get_trials(deepcopy=False)
            if CONFIRMS in t.user_attrs}
    queued = 0
    for t in top:
        for seed in seeds(cfg):
            if (t.number, seed) not in have:
                study.enqueue_trial(dict(t.params), user_attrs={CONFIRMS: t.number, SEED: seed},
                                    skip_if_exists=False)
                queued += 1
    study.set_user_attr(PLAN, {"top_k": k, "seeds": seeds(cfg), "trials": [t.number for t in top]})
    note = None
    if len(top) < k:
        note = (f"search.confirm.top_k={k}, but only {len(top)} trial(s) completed: confirming "
                f"{len(top)} configuration(s)")
    return queued, note


def budget(study: optuna.Study) -> tuple[int, int]:
    """(confirmations finished, confirmations planned) of the current plan's configurations."""
    recorded = study.user_attrs.get(PLAN) or {}
    planned = set(recorded.get("trials", []))
    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(CONFIRMS) in planned]
    done = {(t.user_attrs[CONFIRMS], t.user_attrs.get(SEED)) for t in mine
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    return len(done), len(planned) * len(recorded.get("seeds", []))


def outstanding(study: optuna.Study) -> int:
    """Confirmations queued or running (by any process)."""
    return len([t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
                if CONFIRMS in t.user_attrs])


def waiting(study: optuna.Study) -> int:
    return len([t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                if CONFIRMS in t.user_attrs])


@dataclass
class Group:
    """One confirmed configuration: its trial and the confirmations that completed."""

    trial: FrozenTrial  # the search's trial that found the configuration
    runs: list[FrozenTrial] = field(default_factory=list)  # it and its completed confirmations
    planned: int = 0  # confirmations planned for it

    @property
    def values(self) -> list[float]:
        return [t.value for t in self.runs]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation over the runs (0 for one run)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def best_run(self, maximize: bool) -> FrozenTrial:
        return (max if maximize else min)(self.runs, key=lambda t: (t.value if maximize else -t.value, -t.number))

    def to_dict(self, maximize: bool) -> dict:
        best = self.best_run(maximize)
        return {"trial": self.trial.number, "params": dict(self.trial.params), "mean": self.mean, "std": self.std,
                "runs": [{"trial": t.number, "seed": t.user_attrs.get(SEED), "value": t.value} for t in self.runs],
                "completed": len(self.runs), "planned": 1 + self.planned, "best_run": best.number}


def groups(study: optuna.Study) -> list[Group]:
    """The configurations the study's plan confirms, with their runs; [] before any plan."""
    recorded = study.user_attrs.get(PLAN)
    if not recorded:
        return []
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    out = []
    for number in recorded["trials"]:
        origin = by_number.get(number)
        if origin is None or origin.state != TrialState.COMPLETE:
            continue
        mine = [t for t in trials if t.user_attrs.get(CONFIRMS) == number]
        done = [t for t in mine if t.state == TrialState.COMPLETE]
        out.append(Group(origin, [origin, *sorted(done, key=lambda t: t.number)],
                         planned=len({t.user_attrs.get(SEED) for t in mine})))
    return out


def choose(study: optuna.Study, confirming: bool = True) -> tuple[FrozenTrial | None, Group | None, list[Group]]:
    """(the run whose weights become the champion, its configuration's group, every group, by
    mean, best first). With confirmations (`confirming`: search.confirm is on): the group of best
    mean, and its best run. Without (none planned, or search.confirm turned off since): the
    study's best trial of the search proper, and no group."""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    found = groups(study) if confirming else []
    found.sort(key=lambda g: (-g.mean if maximize else g.mean, g.trial.number))
    if found:
        best = (max if maximize else min)(found, key=lambda g: (g.mean if maximize else -g.mean, -g.trial.number))
        return best.best_run(maximize), best, found
    top = top_configurations(study, 1)
    return (top[0] if top else None), None, []


def describe(group: Group, maximize: bool, metric: str) -> str:
    """One line: the champion's configuration, its mean and spread, where its weights come from."""
    best = group.best_run(maximize)
    runs = ", ".join(f"{t.value:.4f}" for t in group.runs)
    source = "the configuration's own trial" if best.number == group.trial.number else \
        f"trial {best.number} (seed {best.user_attrs.get(SEED)})"
    return (f"champion: configuration of trial {group.trial.number}, {metric} mean {group.mean:.4f} ± "
            f"{group.std:.4f} over {len(group.runs)} run(s) ({runs}; {len(group.runs)} of {1 + group.planned} "
            f"completed); registered weights from {source}")
