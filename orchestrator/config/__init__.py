"""The experiment's configuration: typed sections, loading with overrides, checks, secrets, paths.

`schema` is one pydantic dataclass per section (ranges as field constraints); `load` reads YAML and
`key=value` overrides and reports every problem at once; `checks` the rules between settings;
`secrets` keeps passwords out of everything written; `paths` normalises locations once; `space`
is the search space's shape; `task_rules` the seam through which the tasks add their defaults and
checks (config is the bottom layer and names no task).
"""

from orchestrator.config.schema import (  # noqa: I001 - schema first: the others import it
    DIRECTIONS, HEADS, IMBALANCE, PRUNERS, SAMPLERS, SCHEDULERS, STRATEGIES, DataConfig, ExperimentConfig,
    ModelConfig, ParamSpace, PostprocessConfig, PretrainConfig, RegistryConfig, SearchConfig, TrackingConfig,
    TrainingConfig)
from orchestrator.config.task_rules import TaskRules
from orchestrator.config.load import ConfigError, from_dict, load_config

__all__ = ["ConfigError", "DataConfig", "DIRECTIONS", "ExperimentConfig", "from_dict", "HEADS", "IMBALANCE",
           "load_config", "ModelConfig", "ParamSpace", "PostprocessConfig", "PretrainConfig", "PRUNERS",
           "RegistryConfig", "SAMPLERS", "SCHEDULERS", "SearchConfig", "STRATEGIES", "TaskRules", "TrackingConfig",
           "TrainingConfig"]
