"""The samplers and pruners a study can use: one table each, from the name in `search.sampler` /
`search.pruner` to the Optuna object, built with the options `config/components.py` checked.

Every process builds them afresh (Optuna stores neither), and the samplers once per trial: a
sampler seeded by the study's seed and the trial's number draws the same sample in any process,
and no two trials replay one random sequence. Each reads the study's history from the storage,
so a fresh one loses nothing: TPE and GP refit on the finished trials, CMA-ES restores its state
from the trials' system attrs, grid finds the points not yet run, QMC takes the next point of
its sequence by the trial's number. Those two keep the study's own seed (`PER_STUDY_SEED`): a
new scramble per trial would lose QMC's even spread, and a new shuffle would renumber grid's points.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import optuna

from orchestrator.config import space
from orchestrator.config.schema import ParamSpace, SearchConfig

SamplerFactory = Callable[[dict, int, int, dict], optuna.samplers.BaseSampler]  # options, seed, startup, space


def _startup(options: dict, default: int) -> int:
    return options.get("n_startup_trials", default)


def _tpe(options: dict, seed: int, startup: int, _: dict) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, **{**options, "n_startup_trials": _startup(options, startup)})


def _gp(options: dict, seed: int, startup: int, _: dict) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, **{**options, "n_startup_trials": _startup(options, startup)})


def _cmaes(options: dict, seed: int, startup: int, _: dict) -> optuna.samplers.BaseSampler:
    # Categorical parameters (head, batch size) are outside CMA-ES: they are drawn at random, seeded.
    return optuna.samplers.CmaEsSampler(seed=seed, independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                                        warn_independent_sampling=False,
                                        **{**options, "n_startup_trials": _startup(options, startup)})


def _qmc(options: dict, seed: int, startup: int, _: dict) -> optuna.samplers.BaseSampler:
    return optuna.samplers.QMCSampler(seed=seed, independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                                      warn_independent_sampling=False, **options)


def _random(options: dict, seed: int, startup: int, _: dict) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _grid(options: dict, seed: int, startup: int, grid: dict) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GridSampler(grid, seed=seed)


def _nsga2(options: dict, seed: int, startup: int, _: dict) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, **options)


SAMPLERS: dict[str, SamplerFactory] = {"tpe": _tpe, "gp": _gp, "cmaes": _cmaes, "qmc": _qmc, "random": _random,
                                       "grid": _grid, "nsga2": _nsga2}
# Samplers whose order is the study's: QMC's sequence, and grid's shuffled list of points (a
# point is known by its place in the list, so every trial must shuffle it alike).
PER_STUDY_SEED = {"qmc", "grid"}


def make_sampler(s: SearchConfig, trial_number: int = 0,
                 params: dict[str, ParamSpace] | None = None) -> optuna.samplers.BaseSampler:
    """The sampler for trial `trial_number` (see the module's docstring for the seeding)."""
    seed = s.seed if s.sampler in PER_STUDY_SEED else (s.seed + trial_number) % 2**32
    # With a small budget, Optuna's 10 random start-up trials would be the whole study.
    startup = max(2, min(10, (s.n_trials or 20) // 2))
    with warnings.catch_warnings():  # GP, QMC and some TPE options are "experimental": they are what was asked for
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        options = {k: v for k, v in s.sampler_options.items() if v is not None}  # unset: Optuna's default
        return SAMPLERS[s.sampler](options, seed, startup, space.grid(params or {}) or {})


PrunerFactory = Callable[[dict, SearchConfig, int], optuna.pruners.BasePruner]  # options, search, warm-up evals


def _median(options: dict, s: SearchConfig, warmup: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials, n_warmup_steps=warmup, **options)


def _percentile(options: dict, s: SearchConfig, warmup: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.PercentilePruner(n_startup_trials=s.pruner_startup_trials, n_warmup_steps=warmup,
                                           **options)


class _WarmUp:
    """`search.pruner_startup_trials` and `search.pruner_warmup_epochs` for a pruner that has no
    such settings of its own (successive halving, hyperband, wilcoxon): nothing is pruned before
    `startup` trials have finished, nor at an evaluation before `warmup`. A subclass, not a
    wrapper: Optuna's samplers look for a `HyperbandPruner` to keep to a bracket."""

    startup: int = 0
    warmup: int = 0

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        # Asked every time, also when its answer is ignored: successive halving records each
        # trial's value at each rung as it passes, and later trials are ranked against those.
        verdict = super().prune(study, trial)
        step = trial.last_step
        if step is None or step < self.warmup:
            return False
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                        optuna.trial.TrialState.PRUNED))
        return verdict and len(done) >= self.startup


class WarmSuccessiveHalving(_WarmUp, optuna.pruners.SuccessiveHalvingPruner):
    pass


class WarmHyperband(_WarmUp, optuna.pruners.HyperbandPruner):
    pass


class WarmWilcoxon(_WarmUp, optuna.pruners.WilcoxonPruner):
    pass


def _warm(cls: type, options: dict, s: SearchConfig, warmup: int) -> optuna.pruners.BasePruner:
    with warnings.catch_warnings():  # Wilcoxon is "experimental" since Optuna 3.6
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        pruner = cls(**options)
    pruner.startup, pruner.warmup = s.pruner_startup_trials, warmup
    return pruner


def _halving(options: dict, s: SearchConfig, warmup: int) -> optuna.pruners.BasePruner:
    return _warm(WarmSuccessiveHalving, options, s, warmup)


def _hyperband(options: dict, s: SearchConfig, warmup: int) -> optuna.pruners.BasePruner:
    return _warm(WarmHyperband, options, s, warmup)


def _wilcoxon(options: dict, s: SearchConfig, warmup: int) -> optuna.pruners.BasePruner:
    # Its own n_startup_steps is the warm-up: evaluations before it compares a trial at all.
    return _warm(WarmWilcoxon, {**options, "n_startup_steps": warmup}, s, warmup)


def _none(options: dict, s: SearchConfig, warmup: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


PRUNERS: dict[str, PrunerFactory] = {"median": _median, "percentile": _percentile, "successive_halving": _halving,
                                     "hyperband": _hyperband, "wilcoxon": _wilcoxon, "none": _none}


def warmup_evaluations(warmup_epochs: float, evals_per_epoch: int) -> int:
    """`search.pruner_warmup_epochs` in evaluations, the unit a trial reports in: evaluation
    `warmup` is the first a pruner judges (2 epochs at 1 a epoch: from the second epoch's end).
    Rounded up: a warm-up of 1.25 epochs at 2 evaluations an epoch is never judged at epoch 1."""
    return math.ceil(warmup_epochs * evals_per_epoch - 1e-9)


def make_pruner(s: SearchConfig, evals_per_epoch: int = 1) -> optuna.pruners.BasePruner:
    """The study's pruner. Every process that reports evaluations must build it: Optuna does not
    store it, and `load_study` without one prunes by Optuna's defaults, not the experiment's."""
    warmup = warmup_evaluations(s.pruner_warmup_epochs, evals_per_epoch)
    return PRUNERS[s.pruner](dict(s.pruner_options), s, warmup)


def idle_pruner(cfg) -> str | None:
    """A line saying the pruner can never act, where its warm-up or start-up outlasts the search:
    a setting that is valid but does nothing should not pass silently."""
    s = cfg.search
    if s.pruner == "none":
        return None
    longest = max(space.possible_values("epochs", cfg.space, cfg.training) or [cfg.training.epochs])
    if s.pruner_warmup_epochs >= longest:
        return (f"note: search.pruner {s.pruner} never acts: its warm-up of {s.pruner_warmup_epochs:g} epochs is not "
                f"shorter than the longest trial ({longest} epochs); lower search.pruner_warmup_epochs")
    if s.n_trials is not None and s.pruner_startup_trials >= s.n_trials:
        return (f"note: search.pruner {s.pruner} never acts: it waits for {s.pruner_startup_trials} finished trials "
                f"and the study has {s.n_trials}; lower search.pruner_startup_trials")
    return None
