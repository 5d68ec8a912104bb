"""Checks that compare settings with each other, or need more than a type, a range or a choice
(those are the schema's, checked by pydantic): names, URLs, the search space's bounds and conditions.

Each appends one line per problem naming the key, what was found and what is allowed; nothing
here touches a file, a store or a model (those checks are in `preflight.py`), and nothing here
knows a task (the tasks' own rules come through `task_rules.TaskRules`).
"""

from __future__ import annotations

import math
import re

from orchestrator.config import space
from orchestrator.config.schema import EXTRA_OBJECTIVES, SCRATCH, ExperimentConfig, ParamSpace
from orchestrator.config.secrets import redact

# Names that become folder names and MLflow entries: no separators, no `..`, nothing a shell,
# a filter string (`tags.x = '...'`) or MLflow's model-name rules (no '/' or ':') would trip on.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
REGISTERED = "models:/"  # model.name_or_path of an encoder in the Model Registry
STORAGES = ("sqlite:///", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://")
TRIALS_PER_GPU_MOST = 16
# Settings every trial of a study must share, or their reported evaluations would not compare.
NOT_SEARCHED = {"evals_per_epoch": "the pruner compares trials evaluation by evaluation",
                "eval_subsample": "the pruner compares trials' interim scores on the same rows"}
TRACKING = ("sqlite:///", "postgresql://", "postgresql+", "mysql://", "mysql+", "mssql://", "mssql+",
            "http://", "https://", "databricks")


def check(cfg: ExperimentConfig, problems: list[str]) -> None:
    if cfg.pretrain is not None:
        _check_pretrain(cfg, problems)
    for name, p in cfg.space.items():
        _check_param(name, p, problems)
    _check_conditions(cfg, problems)
    _check_names(cfg, problems)
    _check_search(cfg, problems)
    _check_components(cfg, problems)
    _check_objectives(cfg, problems)
    _check_tracking(cfg, problems)
    d = cfg.data
    if not d.hub and not d.train:
        problems.append("data: set data.train (a file) or data.hub (a dataset name)")
    if d.label_separator == "":
        problems.append("data.label_separator: '' is empty, so it cannot split a cell into labels; give the "
                        "character between labels (e.g. ';'), or leave it out for JSON-list cells")
    if d.text_column == d.label_column:
        problems.append(f"data.text_column and data.label_column are both {d.text_column!r}; name two columns")
    if d.text_pair_column is not None and d.text_pair_column in (d.text_column, d.label_column):
        other = "data.text_column" if d.text_pair_column == d.text_column else "data.label_column"
        problems.append(f"data.text_pair_column and {other} are both {d.text_pair_column!r}; the second text of a "
                        f"pair needs its own column")
    if "truncation" in cfg.space:  # the encoding is made once per study, not per trial
        problems.append("space.truncation: how pairs are cut is decided once for the study's encoding, not per trial; "
                        "set training.truncation instead")
    if d.text_pair_column is None and cfg.training.truncation != "longest_first":
        problems.append(f"training.truncation: {cfg.training.truncation} says which text of a pair is cut, but "
                        f"there are no pairs (data.text_pair_column is not set); remove it, or set "
                        f"data.text_pair_column")
    if not d.hub and not d.validation and not d.test and d.validation_size + d.test_size >= 1:
        problems.append(f"data.validation_size ({d.validation_size}) + data.test_size ({d.test_size}) must be "
                        f"below 1, so that rows are left to train on")


def _check_param(name: str, p: ParamSpace, problems: list[str]) -> None:
    """The bounds of a searched range fit together (each bound and choice obeys the
    hyperparameter's own rules already: `load._build_space`)."""
    key = f"space.{name}"
    if p.choices is not None:
        return
    if p.low > p.high:
        problems.append(f"{key}: low ({p.low}) is greater than high ({p.high})")
    if p.step is not None and not p.step > 0:
        problems.append(f"{key}.step: must be > 0, found {p.step}")
    if p.log and p.low <= 0:
        problems.append(f"{key}: log scale needs low > 0, found {p.low}")
    if p.log and p.step is not None:
        problems.append(f"{key}: step and log cannot be used together")


def _check_conditions(cfg: ExperimentConfig, problems: list[str]) -> None:
    """Each `when:` can hold: it reads values its parameter can take, and no circle of conditions."""
    for name, p in cfg.space.items():
        for dep, allowed in (p.when or {}).items():
            if dep == name or not hasattr(cfg.training, dep) or not isinstance(allowed, list):
                continue  # reported when the space was read
            possible = space.possible_values(dep, cfg.space, cfg.training)
            if possible is not None and not any(v in possible for v in allowed):
                problems.append(f"space.{name}.when.{dep}: {dep} is never one of {allowed} (it can be "
                                f"{', '.join(map(str, dict.fromkeys(possible)))}), so {name} would never be searched")
    circle = space.cycle(cfg.space)
    if circle:
        problems.append(f"space: the conditions of {', '.join(circle)} depend on each other in a circle")


def _check_names(cfg: ExperimentConfig, problems: list[str]) -> None:
    for key, value in (("name", cfg.name), ("search.study_name", cfg.search.study_name),
                       ("registry.model_name", cfg.registry.model_name)):
        if value is not None and (not NAME.fullmatch(value) or ".." in value):
            problems.append(f"{key}: {value!r} is not a usable name: it names folders and MLflow entries, so it "
                            f"may hold only letters, digits, '.', '_' and '-', must start with a letter or digit, "
                            f"must not contain '..', and has at most 128 characters")
    if cfg.tracking.experiment is not None and not cfg.tracking.experiment.strip():
        problems.append("tracking.experiment: must not be empty (leave it out to use the experiment's name)")


def _check_search(cfg: ExperimentConfig, problems: list[str]) -> None:
    s = cfg.search
    if s.n_trials is None and s.timeout is None:
        problems.append("search: set n_trials, timeout, or both, so the study ends")
    elif s.n_trials is None and s.confirm.top_k:
        problems.append("search.confirm: confirmation starts once search.n_trials trials have finished, and with "
                        "search.timeout alone that never happens; set search.n_trials, or search.confirm.top_k: 0")
    if s.heartbeat_interval >= s.heartbeat_grace_period:
        problems.append(f"search.heartbeat_interval ({s.heartbeat_interval}) must be below "
                        f"search.heartbeat_grace_period ({s.heartbeat_grace_period})")
    if ":memory:" in s.storage:
        problems.append("search.storage: an in-memory database dies with this process, and trial processes cannot "
                        "reach it; use sqlite:///mlruns/optuna.db")
    elif not s.storage.startswith(STORAGES):
        # Processes sharing a study take a lock beside the storage, which these two support.
        problems.append(f"search.storage: {redact(s.storage)!r} is not supported; use sqlite:///path/optuna.db "
                        f"(one machine) or postgresql://user@host/db (several machines; the password in "
                        f"PGPASSWORD or ~/.pgpass, or the whole URL in $ORCHESTRATOR_STORAGE)")


def _check_objectives(cfg: ExperimentConfig, problems: list[str]) -> None:
    """`search.objectives`: the quality metric first, then what it trades against, each once; a
    sampler that searches several objectives; `registry.latency_budget_ms` only with latency_ms."""
    from orchestrator.config.components import MULTI_OBJECTIVE

    s, wanted = cfg.search, cfg.search.objectives
    if wanted is None:
        if cfg.registry.latency_budget_ms is not None:
            problems.append("registry.latency_budget_ms: needs search.objectives with latency_ms (e.g. "
                            "[val_macro_f1, latency_ms]), which measures every trial's latency; remove it, or add that")
        if s.sampler == "nsga2":
            problems.append("search.sampler: nsga2 searches several objectives; set search.objectives (e.g. "
                            "[val_macro_f1, latency_ms]), or use tpe")
        return
    extra = ", ".join(EXTRA_OBJECTIVES)
    if len(wanted) < 2:
        problems.append(f"search.objectives: {wanted} names {len(wanted)} objective(s); give the quality metric and "
                        f"at least one "
                        f"of {extra} (e.g. [{s.metric or 'val_macro_f1'}, latency_ms]), or remove it")
    if wanted and wanted[0] in EXTRA_OBJECTIVES:
        problems.append(f"search.objectives: the first is the quality metric the trials optimise (e.g. "
                        f"val_macro_f1), not {wanted[0]}; put it first")
    unknown = [o for o in wanted[1:] if o not in EXTRA_OBJECTIVES]
    if unknown:
        problems.append(f"search.objectives: {', '.join(map(repr, unknown))} unknown; after the quality metric, use "
                        f"{extra}")
    twice = sorted({o for o in wanted if wanted.count(o) > 1})
    if twice:
        problems.append(f"search.objectives: {', '.join(twice)} named twice; name each objective once")
    if wanted and wanted[0] not in EXTRA_OBJECTIVES and not wanted[0].startswith("val_"):
        problems.append(f"search.objectives: {wanted[0]!r} is no validation metric; the first objective is the "
                        f"quality metric the trials report, e.g. val_macro_f1")
    elif wanted and s.metric is not None and wanted[0] != s.metric and wanted[0] not in EXTRA_OBJECTIVES:
        problems.append(f"search.objectives: its first, {wanted[0]}, is not search.metric ({s.metric}); make them "
                        f"the same, or leave search.metric out")
    if s.sampler not in MULTI_OBJECTIVE:
        problems.append(f"search.sampler: {s.sampler} searches one objective; with search.objectives use one of "
                        f"{', '.join(MULTI_OBJECTIVE)}")
    if cfg.registry.latency_budget_ms is not None and "latency_ms" not in wanted:
        problems.append("registry.latency_budget_ms: needs latency_ms in search.objectives, which measures every "
                        "trial's latency; add it, or remove the budget")


def _check_components(cfg: ExperimentConfig, problems: list[str]) -> None:
    """What the sampler and pruner tables (`components.py`) cannot say field by field."""
    s, o = cfg.search, cfg.search.pruner_options
    if s.trials_per_gpu != "auto" and s.trials_per_gpu < 1:
        problems.append(f"search.trials_per_gpu: must be auto or >= 1, found {s.trials_per_gpu}")
    for key in ("min_resource", "max_resource"):
        if o.get(key, "auto") != "auto" and o[key] < 1:
            problems.append(f"search.pruner_options.{key}: must be auto or >= 1 (evaluations), found {o[key]}")
    if s.pruner == "hyperband" and o.get("max_resource", "auto") != "auto" and o["max_resource"] <= o["min_resource"]:
        problems.append(f"search.pruner_options: hyperband's max_resource ({o['max_resource']}) must be above its "
                        f"min_resource ({o['min_resource']})")
    if s.pruner == "successive_halving" and o.get("bootstrap_count") and o.get("min_resource") == "auto":
        problems.append("search.pruner_options.bootstrap_count: needs a whole-number min_resource (auto waits for a "
                        "finished trial, which bootstrapping rungs never lets come)")
    if s.trials_per_gpu != "auto" and s.trials_per_gpu > 1 and s.gpus_per_trial > 1:
        problems.append(f"search.trials_per_gpu: {s.trials_per_gpu} trials sharing a GPU cannot each take "
                        f"search.gpus_per_trial={s.gpus_per_trial} GPUs; use one or the other")
    if s.trials_per_gpu != "auto" and s.trials_per_gpu > TRIALS_PER_GPU_MOST:
        problems.append(f"search.trials_per_gpu: at most {TRIALS_PER_GPU_MOST} trials share a GPU (each holds a CUDA "
                        f"context and its own copy of the model), found {s.trials_per_gpu}")
    if s.warm_start is not None and "://" not in s.warm_start and ("/" in s.warm_start or
                                                                   s.warm_start.endswith((".db", ".sqlite"))):
        problems.append(f"search.warm_start: {s.warm_start!r} looks like a file; name a SQLite storage as a URL "
                        f"(sqlite:///{s.warm_start}), or give a study name in search.storage")
    if s.sampler == "grid":
        sizes = [space.size_of(p) for p in cfg.space.values()]
        if not cfg.space:
            problems.append("search.sampler: grid needs a space: to list")
        elif None in sizes:
            continuous = [n for n, p in cfg.space.items() if space.size_of(p) is None]
            problems.append(f"search.sampler: grid needs every searched value listed, but space.{continuous[0]} is a "
                            f"continuous range; give it choices: [...] or a step:")
        elif math.prod(sizes) > space.GRID_MOST:
            problems.append(f"search.sampler: the grid of this space has {math.prod(sizes):,} points, more than "
                            f"{space.GRID_MOST:,}; list fewer values (choices, a larger step) or use tpe or random")
        conditional = [n for n, p in cfg.space.items() if p.when]
        if conditional:
            problems.append(f"search.sampler: grid takes no conditional parameters (space.{conditional[0]}.when); "
                            f"use tpe or random, or list the combinations without when:")


def _check_pretrain(cfg: ExperimentConfig, problems: list[str]) -> None:
    p = cfg.pretrain
    if p.max_steps is None and p.max_minutes is None:
        problems.append("pretrain: set max_steps, max_minutes, or both, so pre-training ends")
    if p.init is None and cfg.model.name_or_path.startswith(REGISTERED):
        problems.append(f"pretrain.init: model.name_or_path is {cfg.model.name_or_path}, a registered model; "
                        f"say where pre-training starts: scratch, or the model to continue from (e.g. "
                        f"bert-base-chinese)")
    if p.init is not None and p.init.startswith(REGISTERED):
        problems.append(f"pretrain.init: {p.init!r}: start from scratch, a hub name or a folder (a registered "
                        f"encoder is continued by naming its downloaded folder)")
    if p.init == SCRATCH and p.hidden_size % p.num_heads:
        problems.append(f"pretrain.hidden_size ({p.hidden_size}) must be a multiple of pretrain.num_heads "
                        f"({p.num_heads})")
    if p.objective == "mlm" and p.generator_layers is not None:
        problems.append(f"pretrain.generator_layers: {p.generator_layers} sizes ELECTRA's generator, but "
                        f"pretrain.objective is mlm; set pretrain.objective=electra, or drop generator_layers")
    if p.objective == "electra" and p.init == SCRATCH and (p.generator_layers or 0) > p.num_layers:
        # A continued encoder's layers are known only from its files: `pretrain_stage.plan` checks those.
        problems.append(f"pretrain.generator_layers ({p.generator_layers}) must be at most pretrain.num_layers "
                        f"({p.num_layers}): ELECTRA's generator is the smaller model; lower it or leave it unset "
                        f"(default: a third of num_layers)")
    if not NAME.fullmatch(p.alias) or p.alias.isdigit() or p.alias.lower().startswith("v") and p.alias[1:].isdigit():
        problems.append(f"pretrain.alias: {p.alias!r} is not a usable alias: letters, digits, '.', '_' and '-', "
                        f"not a version number like 3 or v3")
    own = f"{REGISTERED}{cfg.encoder_name}@"
    alias = cfg.model.name_or_path[len(own):] if cfg.model.name_or_path.startswith(own) else None
    if alias is not None and alias != p.alias:
        # Else `search` pre-trains, registers @<pretrain.alias>, and only then finds @<alias> missing
        # (or fine-tunes whatever older version @<alias> still names).
        problems.append(f"model.name_or_path: {cfg.model.name_or_path} names the alias @{alias}, but pre-training "
                        f"registers this experiment's encoder as @{p.alias} (pretrain.alias), never @{alias}; use "
                        f"{own}{p.alias}, or set pretrain.alias={alias}")
    if cfg.model.name_or_path.startswith(REGISTERED) and not cfg.model.name_or_path.startswith(own):
        problems.append(f"model.name_or_path: {cfg.model.name_or_path} is not the encoder this experiment's "
                        f"pre-training registers; use {REGISTERED}{cfg.encoder_name}@{p.alias}, or drop pretrain:")


def _check_tracking(cfg: ExperimentConfig, problems: list[str]) -> None:
    uri = cfg.tracking.uri
    if ":memory:" in uri:
        problems.append("tracking.uri: an in-memory database keeps nothing after the search (no runs, no registered "
                        "model); use sqlite:///mlruns/mlflow.db")
    elif not uri.startswith(TRACKING):
        problems.append(f"tracking.uri: {redact(uri)!r} is not an MLflow tracking store; use "
                        f"sqlite:///mlruns/mlflow.db (embedded), a database URL (postgresql://, mysql://) or an "
                        f"MLflow server (http:// or https://)")
