"""The experiment's settings: one dataclass per section, each field with its default, its
allowed range or choices, and a line of documentation (`setting`).

Ranges live on the fields, not in a separate list of checks, so a new setting cannot be added
without saying what values it takes; `checks.py` applies them to the values and to every bound
and choice of the search space.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

HEADS = ("cls", "pooler", "mean", "cls_mean", "mlp")  # one vector per text
TOKEN_HEADS = ("linear", "mlp")  # one prediction per token (token_classification)
STRATEGIES = ("full", "partial", "frozen")
IMBALANCE = ("none", "class_weights", "oversample", "undersample")
SCHEDULERS = ("linear", "cosine")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
DIRECTIONS = ("maximize", "minimize")
EXECUTORS = ("local", "ray")
TAG_SCHEMES = ("auto", "BIO", "BIOES", "BMES")
THRESHOLDS = ("none", "tune")
THRESHOLD_OBJECTIVES = ("f1", "precision", "recall")
ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2")
SCRATCH = "scratch"  # pretrain.init: a new encoder, not a pretrained one


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric setting; None means unbounded on that side."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` is out of range, or None when it is in range."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # types are checked elsewhere
        if value != value:  # NaN compares false with everything
            return f"must be a number, found {value}"
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        return None if ok else f"must be {self.describe()}, found {value}"

    def describe(self) -> str:
        parts = []
        if self.ge is not None:
            parts.append(f">= {self.ge:g}")
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.le is not None:
            parts.append(f"<= {self.le:g}")
        if self.lt is not None:
            parts.append(f"< {self.lt:g}")
        return " and ".join(parts)


def setting(default: Any, doc: str = "", *, ge=None, gt=None, le=None, lt=None,
            choices: tuple | None = None) -> Any:
    """A config field: its default, one line of documentation, and what values it allows."""
    bounds = Range(ge, gt, le, lt) if any(b is not None for b in (ge, gt, le, lt)) else None
    return field(default=default, metadata={"doc": doc, "range": bounds, "choices": choices})


def rules(cls: type, name: str) -> tuple[Range | None, tuple | None]:
    """(range, choices) declared for field `name` of the dataclass `cls`."""
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}[name]
    return meta.get("range"), meta.get("choices")


SEED = {"ge": 0, "lt": 2**32}  # numpy's seeds are unsigned 32-bit


@dataclass(frozen=True)
class DataConfig:
    train: str | None = setting(None, "training file (csv, tsv, json/jsonl, parquet; pkg:// and .zip!member "
                                      "paths allowed)")
    validation: str | None = setting(None, "validation file; carved from train when missing")
    test: str | None = setting(None, "test file; carved from train when missing")
    hub: str | None = setting(None, "a Hugging Face hub dataset name instead of files")
    hub_config: str | None = setting(None, "the hub dataset's configuration name")
    delimiter: str | None = setting(None, "csv delimiter; default: tab for .tsv, comma otherwise")
    text_column: str = setting("text", "column holding the text")
    label_column: str = setting("label", "column holding the label (multi_label: the labels)")
    label_separator: str | None = setting(None, "multi_label: separator of the labels in one cell, e.g. ';' "
                                                "(a JSON list needs none)")
    tokens_column: str = setting("tokens", "token_classification: column holding the list of tokens")
    tags_column: str = setting("tags", "token_classification: column holding the list of tags")
    tag_scheme: str = setting("auto", "token_classification: BIO, BIOES, BMES (segmentation) or auto",
                              choices=TAG_SCHEMES)
    validation_size: float = setting(0.15, "share of train carved as validation (when no file)", gt=0, lt=1)
    test_size: float = setting(0.2, "share of train carved as test (when no file)", gt=0, lt=1)
    max_train_rows: int | None = setting(None, "stratified subsample of train, for quick runs", ge=1)
    seed: int = setting(42, "seed of the carved splits", **SEED)


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = setting("bert-base-uncased", "hub name, local folder, or pkg://package/folder")
    revision: str | None = setting(None, "hub revision (branch, tag or commit)")
    trust_remote_code: bool = setting(False, "run Python code that ships with the model (off: never)")
    attention: str = setting("auto", "attention kernel: auto (FlashAttention 2 on a GPU where flash-attn is "
                                     "installed, else PyTorch SDPA where the model has it, else eager), sdpa, "
                                     "eager or flash_attention_2", choices=ATTENTION)


@dataclass(frozen=True)
class TrainingConfig:
    """Defaults for every hyperparameter; the search space overrides any of them per trial."""

    learning_rate: float = setting(5e-5, "peak learning rate (AdamW)", gt=0, le=1)
    weight_decay: float = setting(0.01, "AdamW weight decay (not on biases and LayerNorm)", ge=0, le=1)
    warmup_ratio: float = setting(0.1, "share of steps spent warming the learning rate up", ge=0, lt=1)
    epochs: int = setting(3, "passes over the training split", ge=1)
    batch_size: int = setting(16, "effective training batch size (per device x accumulation x processes)", ge=1)
    eval_batch_size: int = setting(64, "evaluation batch size", ge=1)
    max_length: int = setting(128, "tokens per text; checked against the model's position limit", ge=2)
    dropout: float = setting(0.1, "dropout before the classification layer", ge=0, lt=1)
    head: str | None = setting(None, "head; default: the task's first (cls for texts, linear for tokens)",
                               choices=HEADS + ("linear",))
    mlp_hidden: int = setting(256, "hidden size of the mlp head", ge=1)
    strategy: str = setting("full", "fine-tuning strategy", choices=STRATEGIES)
    freeze_layers: int = setting(0, "bottom encoder layers frozen by strategy partial", ge=0)
    imbalance: str = setting("none", "class-imbalance handling (training split only)", choices=IMBALANCE)
    scheduler: str = setting("linear", "learning-rate schedule after warm-up", choices=SCHEDULERS)
    window_overlap: int = setting(32, "token_classification: tokens shared by the windows a long sequence is "
                                      "cut into", ge=0)
    grad_clip: float = setting(1.0, "max gradient norm; 0 turns clipping off", ge=0)
    log_every: int = setting(5, "optimizer steps between train_loss / learning_rate points", ge=1)
    group_by_length: bool | None = setting(None, "training batches of texts of similar length (less padding); "
                                                 "false: plain shuffling; unset: on a CPU, off on a GPU (measured "
                                                 "faster on a CPU, slower on an H200: docs/benchmarks.md)")
    compile: bool = setting(False, "torch.compile the model (GPU only: on a CPU the compile costs more than it "
                                   "saves)")
    seed: int = setting(42, "seed of initialisation, dropout and shuffling", **SEED)


@dataclass(frozen=True)
class ParamSpace:
    """One searched hyperparameter: `choices` (categorical) or `low`/`high` (int or float)."""

    choices: tuple | None = None
    low: Any = None  # int or float, checked against the hyperparameter's type
    high: Any = None
    log: bool = False
    step: Any = None
    # Only sampled when another parameter has one of these values, e.g. {strategy: [partial]}.
    when: dict | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)


@dataclass(frozen=True)
class SearchConfig:
    n_trials: int | None = setting(10, "finished (COMPLETE or PRUNED) trials the study ends with", ge=1)
    timeout: float | None = setting(None, "seconds for this invocation", gt=0)
    sampler: str = setting("tpe", "Optuna sampler", choices=SAMPLERS)
    pruner: str = setting("median", "Optuna pruner", choices=PRUNERS)
    pruner_startup_trials: int = setting(2, "trials that finish before any is pruned", ge=0)
    pruner_warmup_epochs: int = setting(2, "epochs a trial runs before it can be pruned", ge=0)
    seed: int = setting(42, "sampler seed (each trial's sampling is seeded by it and the trial number)", **SEED)
    metric: str | None = setting(None, "validation metric the search optimises; default: the task's "
                                       "(val_macro_f1; token_classification val_f1)")
    direction: str = setting("maximize", "whether a higher metric is better", choices=DIRECTIONS)
    # When the experiment does not set it: $ORCHESTRATOR_STORAGE, else this (see `load.py`).
    storage: str = setting("sqlite:///mlruns/optuna.db", "Optuna storage URL (sqlite:/// or postgresql://)")
    heartbeat_interval: int = setting(30, "seconds between a running trial's heartbeats", gt=0)
    heartbeat_grace_period: int = setting(90, "a trial this long without a heartbeat is dead", gt=0)
    study_name: str | None = setting(None, "default: the experiment's name")
    work_dir: str = setting("mlruns/studies", "per study: splits, caches, checkpoints, trial logs")
    gpus_per_trial: int = setting(1, ">1: each trial is an Accelerate multi-process (DDP) launch", ge=1)
    executor: str = setting("local", "where trials run: local (child processes on this machine's slots) or ray "
                                     "(Ray tasks on any node of the cluster at --ray-address)", choices=EXECUTORS)
    cpus_per_trial: int = setting(1, "ray: CPUs a trial asks for (on a cluster without GPUs, its only request)",
                                  ge=1)
    keep_checkpoints: int = setting(3, "trials whose best-epoch checkpoint stays in the artifact store at the end "
                                       "(the best ones)", ge=1)
    memory_target: float = setting(0.9, "batch-size probe: peak share of GPU memory a trial may use", gt=0, le=1)


@dataclass(frozen=True)
class PostprocessConfig:
    threshold: str | None = setting(None, "decision thresholds tuned on validation (tune) or not (none); default: "
                                          "tune for multi_label, none otherwise", choices=THRESHOLDS)
    objective: str = setting("f1", "f1: the threshold of best F1; precision (recall): the one that reaches "
                                   "postprocess.target precision (recall) with the most recall (precision)",
                             choices=THRESHOLD_OBJECTIVES)
    target: float | None = setting(None, "the precision or recall to reach (objective precision / recall)",
                                   gt=0, le=1)
    positive_label: str | None = setting(None, "single_label with two classes: the positive class; default: the "
                                               "second label in sorted order (1 of 0/1, spam of ham/spam)")


@dataclass(frozen=True)
class TrackingConfig:
    # When the experiment does not set it: $ORCHESTRATOR_TRACKING_URI, else this (see `load.py`).
    uri: str = setting("sqlite:///mlruns/mlflow.db", "MLflow tracking URI")
    artifact_location: str = setting("mlruns/artifacts", "where a new MLflow experiment keeps artifacts (a local "
                                                          "folder: embedded stores only; a server keeps its own)")
    experiment: str | None = setting(None, "MLflow experiment; default: the experiment's name")


@dataclass(frozen=True)
class RegistryConfig:
    model_name: str | None = setting(None, "registered model name; default: the experiment's name")
    register: bool = setting(True, "register the best trial's model at the end")


@dataclass(frozen=True)
class PretrainConfig:
    """Masked-language-model training of the encoder on unlabeled text, before the search."""

    init: str | None = setting(None, "where pre-training starts: scratch (a new BERT of the sizes below and a "
                                     "WordPiece tokenizer trained on the corpus) or a model (hub name, folder, "
                                     "pkg://) to continue from; default: model.name_or_path")
    corpus: tuple[str, ...] | None = setting(None, "unlabeled text files (txt: one text per line; csv, tsv, "
                                                   "jsonl, parquet: pretrain.text_column); default: the "
                                                   "experiment's training split (never validation or test)")
    text_column: str | None = setting(None, "the corpus files' text column; default: data.text_column")
    mlm_probability: float = setting(0.15, "share of tokens masked", gt=0, lt=1)
    whole_word_masking: bool = setting(False, "mask whole words, not single tokens (Chinese: words found by jieba)")
    max_steps: int | None = setting(1000, "optimizer steps; the run ends at whichever of max_steps and "
                                          "max_minutes comes first", ge=1)
    max_minutes: float | None = setting(None, "minutes of training, summed over resumed runs", gt=0)
    batch_size: int = setting(32, "effective batch size (per device x accumulation x processes)", ge=1)
    learning_rate: float = setting(1e-4, "peak learning rate (AdamW)", gt=0, le=1)
    weight_decay: float = setting(0.01, "AdamW weight decay", ge=0, le=1)
    warmup_ratio: float = setting(0.06, "share of max_steps spent warming the learning rate up", ge=0, lt=1)
    max_length: int = setting(128, "tokens per text (longer texts are cut)", ge=8)
    eval_share: float = setting(0.05, "share of the corpus held out for perplexity", gt=0, lt=0.5)
    eval_every: int = setting(100, "optimizer steps between held-out perplexity measurements", ge=1)
    save_every: int = setting(100, "optimizer steps between checkpoints (the run resumes from the last)", ge=1)
    log_every: int = setting(10, "optimizer steps between train_loss points", ge=1)
    seed: int = setting(42, "seed of the held-out split, initialisation, shuffling and masking", **SEED)
    alias: str = setting("pretrained", "alias the registered encoder gets (models:/<model_name>-encoder@<alias>)")
    work_dir: str = setting("mlruns/pretrain", "checkpoints and the trained encoder, per corpus and settings")
    # init: scratch only: the encoder's size.
    vocab_size: int = setting(8000, "scratch: WordPiece vocabulary size", ge=100)
    hidden_size: int = setting(256, "scratch: hidden size", ge=8)
    num_layers: int = setting(4, "scratch: transformer layers", ge=1)
    num_heads: int = setting(4, "scratch: attention heads (hidden_size must be a multiple)", ge=1)
    intermediate_size: int = setting(1024, "scratch: feed-forward size", ge=8)
    max_positions: int = setting(512, "scratch: longest input in tokens", ge=8)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    # Checked against the tasks' registry (`orchestrator.tasks.REGISTRY`), which a new task joins.
    task: str = setting("single_label", "what is predicted: single_label, multi_label or token_classification")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    space: dict[str, ParamSpace] = field(default_factory=dict)
    search: SearchConfig = field(default_factory=SearchConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    pretrain: PretrainConfig | None = None  # a pre-training stage, when the experiment declares one
    source: str = "<defaults>"  # the file it came from, for messages

    @property
    def study_name(self) -> str:
        return self.search.study_name or self.name

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def model_name(self) -> str:
        return self.registry.model_name or self.name

    @property
    def encoder_name(self) -> str:
        """The registered model that `pretrain` registers its encoder under."""
        return f"{self.model_name}-encoder"

    def to_dict(self) -> dict[str, Any]:
        """Every setting, secrets included: for this process only (see `secrets.public_dict`)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        # Unset fields are left out; `is`, not `in`: 0 and 0.0 equal False, and `low: 0.0` is a bound.
        d["space"] = {k: {f: v for f, v in dataclasses.asdict(p).items() if v is not None and v is not False}
                      for k, p in self.space.items()}
        return d
