"""Everything that can be wrong with a search's input, found before a study, a run or a file exists.

The config was checked on its own when it was loaded; here it is checked against the world:
the folders the search will write, the study to warm-start from, the data, the model, the
hyperparameters against that model (positions, layers, heads) and that data (the metric's label
names), and last the MLflow store.
Every problem of a kind is reported together; exit code 2, nothing created.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import ConfigError, ExperimentConfig
from orchestrator.config.schema import SCRATCH
from orchestrator.data import DataError, Splits
from orchestrator.execution.base import Executor, ExecutorError
from orchestrator.execution.local import LocalExecutor
from orchestrator.execution.slots import decide_trials_per_gpu, make_slots
from orchestrator.models.heads import check_heads, load_tokenizer
from orchestrator.models.sources import ModelSource
from orchestrator.config.paths import sqlite_path
from orchestrator.registry.encoders import resolve_encoder
from orchestrator.search.components import make_pruner, make_sampler
from orchestrator.search.study import PROBE_PREFIX, StorageError, open_readonly
from orchestrator.search.warm_start import WarmStart, read_warm_start
from orchestrator.training.pretrain.corpus import load_corpus
from orchestrator.tasks import Task, get_task
from orchestrator.tasks.names import check_names
from orchestrator.tracking.client import check_store


@dataclass
class Checked:
    executor: Executor
    splits: Splits
    model: ModelSource | None  # None until a pending pre-training has made it
    task: Task
    warm_start: WarmStart | None = None  # the configurations `search.warm_start` queues first
    packing: str | None = None  # trials per GPU and why, where trials run on GPUs (search.trials_per_gpu)


def preflight(cfg: ExperimentConfig, gpus: str | None, workers: int | str | None, ray_address: str | None = None,
              model_pending: bool = False) -> Checked:
    if ray_address and cfg.search.executor != "ray":
        raise ExecutorError(f"--ray-address {ray_address}: trials run on Ray only with search.executor=ray "
                            f"(the experiment has {cfg.search.executor}); add search.executor=ray")
    if cfg.search.executor == "ray" and (gpus is not None or workers is not None):
        raise ExecutorError("--gpus and --workers choose this machine's slots; with search.executor=ray, Ray "
                            "places trials: set search.gpus_per_trial (search.cpus_per_trial) instead")
    local, packing, per_gpu = None, None, 1
    if cfg.search.executor == "local":
        workers = "auto" if workers is None else workers  # unset: as many as measured fastest (`cpu_workers`)
        slots = make_slots(gpus, workers, cfg.search.gpus_per_trial)
        if not slots[0].cpu:  # trials run on GPUs: how many share one
            per_gpu, packing = trials_per_gpu(cfg)
            if per_gpu > 1:
                slots = make_slots(gpus, workers, cfg.search.gpus_per_trial, trials_per_gpu=per_gpu)
        local = LocalExecutor(slots)
    else:  # whether the cluster has GPUs is known once joined, last: decided (and checked) now
        per_gpu, packing = trials_per_gpu(cfg)
    problems = (writable_problems(cfg) + _attention_problems(cfg, local) + pretrain_problems(cfg)
                + _component_problems(cfg))
    warm = None
    try:
        warm = read_warm_start(cfg)
    except DataError as e:
        problems.append(str(e))
    if problems:
        raise ConfigError(cfg.source, problems)
    task = get_task(cfg.task, cfg)
    splits = task.load_splits(cfg.data)
    check_names(task, splits.label_names, cfg.data)  # before search.metric is matched against those names
    problems = _metric_problems(cfg, splits, task) + task.label_problems(splits.label_names)
    # The encoder a pre-training stage is yet to make is checked once it exists (`check_model`).
    model = None if model_pending else resolve_encoder(cfg.model, cfg.tracking.uri)
    if model is not None:
        tokenizer = load_tokenizer(model.path, trust_remote_code=cfg.model.trust_remote_code)
        problems = _model_problems(cfg, model, tokenizer) + problems
        if not problems:
            problems = _encoding_problems(cfg, tokenizer, task, splits) or _objective_problems(cfg, model, task, splits)
    elif cfg.pretrain is not None and cfg.pretrain.init == SCRATCH:
        # A scratch encoder's sizes are settings: checked now, not after its pre-training.
        problems = _scratch_problems(cfg) + problems
    if problems:
        raise ConfigError(cfg.source, problems)
    check_store(cfg.tracking.uri)
    executor = local or _ray_executor(cfg, ray_address, per_gpu)
    if local is None and not executor.has_gpus:
        packing = None
    return Checked(executor, splits, model, task, warm, packing)


def _component_problems(cfg: ExperimentConfig) -> list[str]:
    """Options each valid alone that Optuna refuses together (TPE's group without multivariate,
    CMA-ES's separable covariance with margin...): the sampler and pruner are built once here,
    so that Optuna's word comes now, not after the stores exist."""
    problems = []
    for kind, build in (("sampler", lambda: make_sampler(cfg.search, 0, cfg.space)),
                        ("pruner", lambda: make_pruner(cfg.search, cfg.training.evals_per_epoch))):
        try:
            build()
        except (ValueError, TypeError) as e:
            problems.append(f"search.{kind}_options: {getattr(cfg.search, kind)} refuses these options together: {e}")
    return problems


def check_model(cfg: ExperimentConfig) -> ModelSource:
    """The model, resolved to a local folder and checked against the hyperparameters."""
    model = resolve_encoder(cfg.model, cfg.tracking.uri)
    problems = _model_problems(cfg, model)
    if problems:
        raise ConfigError(cfg.source, problems)
    return model


def trials_per_gpu(cfg: ExperimentConfig) -> tuple[int, str]:
    """`search.trials_per_gpu`, decided (auto) or checked (N) against the batch-size probes the
    study has cached, if it exists yet (read only: nothing is created), for the largest batch size
    the study can pick. (N, the words the search opens with); `SlotError` for an N that cannot be."""
    s = cfg.search
    wanted = s.gpus_per_trial == 1 and (s.trials_per_gpu == "auto" or s.trials_per_gpu > 1)
    probes = []
    if wanted:
        try:
            study = open_readonly(cfg)
        except StorageError:  # no study yet (or a storage the search itself reports on): no probe
            study = None
        probes = [] if study is None else [v for k, v in study.user_attrs.items()
                                            if k.startswith(PROBE_PREFIX) and isinstance(v, dict)]
    batch = int(max(_values(cfg, "batch_size")))
    return decide_trials_per_gpu(s.trials_per_gpu, probes, batch, s.memory_target, s.gpus_per_trial)


def _ray_executor(cfg: ExperimentConfig, address: str | None, per_gpu: int = 1) -> Executor:
    """Joins the cluster last: the cheaper checks answer first."""
    from orchestrator.execution.ray import RayExecutor

    executor = RayExecutor(address, cfg.search.gpus_per_trial, cfg.search.cpus_per_trial, per_gpu)
    # A SQLite file is one machine's, and so are artifacts an MLflow database (not a server) keeps in a
    # local folder: trials on the other machines could not reach them, or would lose their checkpoints.
    local = [key for key, uri in (("search.storage", cfg.search.storage), ("tracking.uri", cfg.tracking.uri))
             if sqlite_path(uri) is not None]
    if not cfg.tracking.uri.startswith(("http://", "https://")) and "tracking.uri" not in local:
        local.append("tracking.uri")
    if local and len(executor.hosts) > 1:
        raise ExecutorError(f"{' and '.join(local)}: kept on this machine only, but the Ray cluster spans "
                            f"{len(executor.hosts)} machines ({', '.join(executor.hosts[:5])}); use a PostgreSQL "
                            f"storage and an MLflow server every node reaches (README: Team server)")
    return executor


def _values(cfg: ExperimentConfig, name: str) -> list:
    """Every value a hyperparameter can take in this study: the searched bounds/choices or the default."""
    p = cfg.space.get(name)
    if p is None:
        return [getattr(cfg.training, name)]
    return list(p.choices) if p.choices is not None else [p.low, p.high]


def _model_problems(cfg: ExperimentConfig, model: ModelSource, tokenizer=None) -> list[str]:
    tokenizer = tokenizer or load_tokenizer(model.path, trust_remote_code=cfg.model.trust_remote_code)
    problems = _size_problems(cfg, cfg.model.name_or_path, model.max_positions, model.num_layers,
                              tokenizer.num_special_tokens_to_add(pair=False))
    heads = set(_values(cfg, "head"))
    problems += check_heads(model.path, heads, None, cfg.model.trust_remote_code)
    return problems


def _encoding_problems(cfg: ExperimentConfig, tokenizer, task: Task, splits: Splits) -> list[str]:
    """What the task's encoding would refuse (`Task.encoding_problems`) at every max_length searched."""
    found = [p for length in dict.fromkeys(_values(cfg, "max_length"))
             for p in task.encoding_problems(splits, tokenizer, int(length))]
    return list(dict.fromkeys(found))


def _objective_problems(cfg: ExperimentConfig, model: ModelSource, task: Task, splits: Splits) -> list[str]:
    """search.objectives with latency_ms or model_mb: every trial measures its ONNX export, so the
    model must export; tried once now on the untrained model (its head included), in a temporary folder."""
    wanted = set((cfg.search.objectives or [])[1:]) & {"latency_ms", "model_mb"}
    if not wanted:
        return []
    from orchestrator.models.heads import load_encoder
    from orchestrator.training.export import ExportError, export_onnx

    params = dataclasses.replace(cfg.training, head=_values(cfg, "head")[0])
    with tempfile.TemporaryDirectory(prefix="orchestrator-export-check-") as tmp:
        try:
            built = task.build_model(load_encoder(model.path, trust_remote_code=cfg.model.trust_remote_code),
                                     splits.num_labels, params)
            built.save(Path(tmp) / "model", load_tokenizer(model.path, None, cfg.model.trust_remote_code),
                       {"task": task.name, "label_names": splits.label_names, "max_length": cfg.training.max_length,
                        "saved": task.saved_settings(splits)})
            export_onnx(Path(tmp) / "model")
        except (ExportError, RuntimeError, ValueError, TypeError) as e:
            return [f"search.objectives: {', '.join(sorted(wanted))} are measured on each trial's ONNX export, but "
                    f"{cfg.model.name_or_path} could not be exported ({type(e).__name__}: {str(e)[:300]}); remove "
                    f"{' and '.join(sorted(wanted))} from search.objectives (params needs no export)"]
    return []


def _scratch_problems(cfg: ExperimentConfig) -> list[str]:
    """The checks of `_model_problems` that a scratch encoder's settings answer before it exists:
    its positions and layers are `pretrain:` settings, and its tokenizer adds [CLS] and [SEP]."""
    p = cfg.pretrain
    return _size_problems(cfg, f"{cfg.model.name_or_path} (pretrain.init: scratch, pretrain.max_positions "
                               f"{p.max_positions}, pretrain.num_layers {p.num_layers})",
                          p.max_positions, p.num_layers, len(["[CLS]", "[SEP]"]))


def _size_problems(cfg: ExperimentConfig, model: str, max_positions: int | None, num_layers: int | None,
                   special_tokens: int) -> list[str]:
    """max_length against the model's positions and its special tokens, freeze_layers against its layers."""
    problems = []
    key = "space.max_length" if "max_length" in cfg.space else "training.max_length"
    too_long = [v for v in _values(cfg, "max_length") if max_positions and v > max_positions]
    if too_long:
        problems.append(f"{key}: {max(too_long)} is more than {model} takes ({max_positions} tokens); use at "
                        f"most {max_positions}")
    # A sequence holds the tokenizer's special tokens ([CLS] and [SEP]) and at least one of the text.
    least = special_tokens + 1
    too_short = [v for v in _values(cfg, "max_length") if v < least]
    if too_short:
        problems.append(f"{key}: {min(too_short)} leaves no token for the text: {model} adds {special_tokens} "
                        f"special token(s) to every sequence; use at least {least}")
    partial = "partial" in _values(cfg, "strategy")
    too_many = [v for v in _values(cfg, "freeze_layers") if num_layers is not None and v > num_layers]
    if partial and too_many:
        key = "space.freeze_layers" if "freeze_layers" in cfg.space else "training.freeze_layers"
        problems.append(f"{key}: {max(too_many)} layers to freeze, but {model} has {num_layers}; use at most "
                        f"{num_layers}")
    return problems


def pretrain_problems(cfg: ExperimentConfig) -> list[str]:
    """The declared `pretrain:` section, checked whether or not this search uses it: its folder,
    and its corpus files (the default corpus is the training split, which is checked anyway).
    The starting model (`pretrain.init`) is resolved when pre-training runs: a hub name would cost
    a download here even for a search that does not pre-train."""
    p = cfg.pretrain
    if p is None:
        return []
    problems = []
    problem = unwritable(Path(p.work_dir))
    if problem:
        problems.append(f"pretrain.work_dir: cannot write to {p.work_dir}: {problem}")
    if p.corpus:
        try:
            load_corpus(cfg)
        except DataError as e:
            problems.append(str(e))
    return problems


def _attention_problems(cfg: ExperimentConfig, local: LocalExecutor | None) -> list[str]:
    """FlashAttention asked for by name where the trials cannot have it (on this machine's slots;
    a Ray node's own packages are its business)."""
    if cfg.model.attention != "flash_attention_2" or local is None:
        return []
    if local.cpu_only:
        return ["model.attention: flash_attention_2 runs on a GPU only, and this search's trials run on the CPU; "
                "use auto (PyTorch SDPA)"]
    if importlib.util.find_spec("flash_attn") is None:
        return ["model.attention: flash_attention_2 needs the flash-attn package (pip install flash-attn); "
                "use auto to take it where it is installed and SDPA elsewhere"]
    return []


def _metric_problems(cfg: ExperimentConfig, splits: Splits, task: Task) -> list[str]:
    problem = task.metric_problem(cfg.search.metric, cfg.search.direction, splits.label_names)
    return [f"search.metric: {problem}"] if problem else []


def writable_problems(cfg: ExperimentConfig) -> list[str]:
    """The folders a search writes (stores, artifacts, work dir) must be folders it can write."""
    places = [("search.work_dir", Path(cfg.search.work_dir))]
    problems = []
    for key, uri in (("search.storage", cfg.search.storage), ("tracking.uri", cfg.tracking.uri)):
        db = sqlite_path(uri)
        if db is not None:
            places.append((key, db.parent))
            if db.is_dir():
                problems.append(f"{key}: {db} is a folder; name a database file, e.g. {db / 'store.db'}")
    if "://" not in cfg.tracking.artifact_location:
        places.append(("tracking.artifact_location", Path(cfg.tracking.artifact_location)))
    for key, folder in places:
        problem = unwritable(folder)
        if problem:
            problems.append(f"{key}: cannot write to {folder}: {problem}")
    return problems


def unwritable(folder: Path) -> str | None:
    """Why `folder` (existing or to be created) cannot be written, or None. Leaves nothing behind."""
    path = folder.expanduser().absolute()
    while not path.exists():
        path = path.parent
    if not path.is_dir():
        return f"{path} is a file, not a folder; move it away or choose another folder"
    # Try it: permission bits say nothing to root, and some file systems (/proc, read-only
    # mounts) refuse whatever the bits say.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".orchestrator-check-", dir=path))
    except OSError as e:
        return f"cannot create a folder in {path} ({e.strerror or e})"
    return None
