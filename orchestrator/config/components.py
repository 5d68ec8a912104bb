"""The settings of each sampler and pruner the search offers: `search.sampler_options` and
`search.pruner_options`, one table per component, checked like every other setting.

Each option mirrors a keyword of the Optuna class `search/` builds for that name (config is the
bottom layer and imports no Optuna; `tests/search/test_components.py` checks that every option
here is a keyword the class takes). Options Optuna has deprecated are left out; an option left
unset (None) is not passed, so Optuna's own default applies. What the search sets itself is not an option: the seed (the
study's and the trial's), grid's space (from `space:`), and the pruners' start-up and warm-up
(`search.pruner_startup_trials`, `search.pruner_warmup_epochs`, for every pruner alike).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from orchestrator.config.schema import SECTION, Bool, Float, Int


@dataclass(frozen=True, config=SECTION)
class TPEOptions:
    multivariate: Bool = Field(True, description="model the parameters jointly (Optuna 5's default)")
    constant_liar: Bool = Field(True, description="count running trials as bad, so parallel slots spread out")
    group: Bool = Field(False, description="multivariate over the subspaces of conditional parameters")
    n_startup_trials: Int | None = Field(None, ge=0, description="random trials first; default: half of "
                                                                 "search.n_trials, between 2 and 10")
    n_ei_candidates: Int = Field(24, ge=1, description="candidates scored per sample")


@dataclass(frozen=True, config=SECTION)
class GPOptions:
    n_startup_trials: Int | None = Field(None, ge=0, description="random trials first; default: as for tpe")
    deterministic_objective: Bool = Field(False, description="the objective has no noise (fine-tuning has)")


@dataclass(frozen=True, config=SECTION)
class CmaEsOptions:
    n_startup_trials: Int | None = Field(None, ge=0, description="random trials first; default: as for tpe")
    sigma0: Float | None = Field(None, gt=0, description="initial step size; default: a sixth of each range")
    restart_strategy: Literal["ipop", "bipop"] | None = Field(None, description="restart with a larger population")
    popsize: Int | None = Field(None, ge=2, description="population per generation; default: from the dimension")
    inc_popsize: Int | None = Field(None, ge=1, description="restart_strategy: population growth factor; default: "
                                                            "Optuna's")
    use_separable_cma: Bool = Field(False, description="diagonal covariance (many parameters, few trials)")
    with_margin: Bool = Field(False, description="CMA-ES with margin, for integer and stepped parameters")
    lr_adapt: Bool = Field(False, description="adapt the learning rate (noisy or multimodal objectives)")
    consider_pruned_trials: Bool = Field(False, description="count pruned trials' last value too")


@dataclass(frozen=True, config=SECTION)
class QMCOptions:
    qmc_type: Literal["sobol", "halton"] = Field("sobol", description="low-discrepancy sequence")
    scramble: Bool = Field(True, description="scramble the sequence (seeded by search.seed)")


@dataclass(frozen=True, config=SECTION)
class NoOptions:
    """random and grid: nothing to set (grid's values are the space's choices and steps)."""


@dataclass(frozen=True, config=SECTION)
class MedianOptions:
    interval_steps: Int = Field(1, ge=1, description="evaluations between pruning checks")
    n_min_trials: Int = Field(1, ge=1, description="trials reporting at an evaluation before it can prune")


@dataclass(frozen=True, config=SECTION)
class PercentileOptions:
    percentile: Float = Field(25.0, gt=0, lt=100, description="prune below this percentile of the trials (for "
                                                              "maximize; above 100-p for minimize)")
    interval_steps: Int = Field(1, ge=1, description="evaluations between pruning checks")
    n_min_trials: Int = Field(1, ge=1, description="trials reporting at an evaluation before it can prune")


@dataclass(frozen=True, config=SECTION)
class SuccessiveHalvingOptions:
    min_resource: Int | Literal["auto"] = Field("auto", description="evaluations before the first rung (auto: "
                                                                    "from the first finished trial)")
    reduction_factor: Int = Field(3, ge=2, description="1/reduction_factor of the trials go on at each rung")
    min_early_stopping_rate: Int = Field(0, ge=0, description="rungs skipped before the first")
    bootstrap_count: Int = Field(0, ge=0, description="trials a rung needs before it promotes any")


@dataclass(frozen=True, config=SECTION)
class HyperbandOptions:
    min_resource: Int = Field(1, ge=1, description="evaluations before the first rung")
    max_resource: Int | Literal["auto"] = Field("auto", description="evaluations of a whole trial (auto: from the "
                                                                    "first finished trial)")
    reduction_factor: Int = Field(3, ge=2, description="1/reduction_factor of the trials go on at each rung")
    bootstrap_count: Int = Field(0, ge=0, description="trials a rung needs before it promotes any")


@dataclass(frozen=True, config=SECTION)
class WilcoxonOptions:
    p_threshold: Float = Field(0.1, gt=0, lt=1, description="prune when the trial is worse than the best at this "
                                                            "significance (paired by evaluation)")


@dataclass(frozen=True, config=SECTION)
class NSGAIIOptions:
    population_size: Int = Field(50, ge=2, description="trials per generation (a small budget wants a small one)")
    mutation_prob: Float | None = Field(None, ge=0, le=1, description="per-parameter mutation; default: 1 / the "
                                                                      "number of parameters")
    crossover_prob: Float = Field(0.9, ge=0, le=1, description="share of children made by crossover")
    swapping_prob: Float = Field(0.5, ge=0, le=1, description="uniform crossover: chance a parameter comes from "
                                                              "the other parent")


SAMPLER_OPTIONS: dict[str, type] = {"tpe": TPEOptions, "gp": GPOptions, "cmaes": CmaEsOptions, "qmc": QMCOptions,
                                    "random": NoOptions, "grid": NoOptions, "nsga2": NSGAIIOptions}
MULTI_OBJECTIVE = ("tpe", "gp", "nsga2", "random", "qmc", "grid")  # samplers Optuna runs on several objectives
PRUNER_OPTIONS: dict[str, type] = {"median": MedianOptions, "percentile": PercentileOptions,
                                   "successive_halving": SuccessiveHalvingOptions, "hyperband": HyperbandOptions,
                                   "wilcoxon": WilcoxonOptions, "none": NoOptions}
