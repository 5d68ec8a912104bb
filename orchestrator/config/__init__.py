"""The experiment's configuration: typed sections (`schema`), loading with overrides (`load`),
value checks (`checks`) and secrets kept out of everything written (`secrets`)."""

from orchestrator.config.schema import (  # noqa: I001 - schema first: the others import it
    DIRECTIONS, HEADS, IMBALANCE, PRUNERS, SAMPLERS, SCHEDULERS, STRATEGIES, DataConfig, ExperimentConfig,
    ModelConfig, ParamSpace, PretrainConfig, RegistryConfig, SearchConfig, TrackingConfig, TrainingConfig)
from orchestrator.config.load import ConfigError, from_dict, load_config

__all__ = ["ConfigError", "DataConfig", "DIRECTIONS", "ExperimentConfig", "from_dict", "HEADS", "IMBALANCE",
           "load_config", "ModelConfig", "ParamSpace", "PretrainConfig", "PRUNERS", "RegistryConfig", "SAMPLERS",
           "SCHEDULERS", "SearchConfig", "STRATEGIES", "TrackingConfig", "TrainingConfig"]
