"""The experiment's settings: one pydantic dataclass per section, each field with its default, its
allowed range (`Field(ge=..., lt=...)`) or choices (`Literal`), and a line of documentation.

Ranges live on the fields, not in a separate list of checks, so a new setting cannot be added
without saying what values it takes. Pydantic dataclasses, not models: `dataclasses.replace`,
`asdict` and `fields` keep working on them, and `replace` validates the new values too.
`load.py` turns pydantic's errors into one line per key; `checks.py` holds the rules that
compare settings with each other.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, ConfigDict, Field, Strict
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

Head = Literal["cls", "pooler", "mean", "cls_mean", "mlp"]  # one vector per text
TokenHead = Literal["linear", "mlp"]  # one prediction per token
Strategy = Literal["full", "partial", "frozen"]
Imbalance = Literal["none", "class_weights", "oversample", "undersample"]
Scheduler = Literal["linear", "cosine"]
Sampler = Literal["tpe", "gp", "cmaes", "qmc", "random", "grid", "nsga2"]
# What `search.objectives` may add to the quality metric (each minimised): a trial's latency on its
# ONNX export (batch 1, one thread), its parameter count, its ONNX file's size.
EXTRA_OBJECTIVES = ("latency_ms", "params", "model_mb")
PretrainObjective = Literal["mlm", "electra"]
Pruner = Literal["median", "percentile", "successive_halving", "hyperband", "wilcoxon", "none"]
Direction = Literal["maximize", "minimize"]
HEADS, TOKEN_HEADS, STRATEGIES = get_args(Head), get_args(TokenHead), get_args(Strategy)
IMBALANCE, SCHEDULERS, SAMPLERS = get_args(Imbalance), get_args(Scheduler), get_args(Sampler)
PRUNERS, DIRECTIONS = get_args(Pruner), get_args(Direction)
SCRATCH = "scratch"  # pretrain.init: a new encoder, not a pretrained one


def _number(value: Any) -> Any:
    # YAML 1.1 reads `5e-5` (no dot) as a string: take it as the number it obviously is.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, float) and value != value:  # not a number: say so, not which bound it missed
        raise PydanticCustomError("nan", "must be a number, found nan")
    if isinstance(value, float) and abs(value) == float("inf"):  # search.timeout=.inf would never end a study
        raise PydanticCustomError("inf", "must be a finite number, found {found}", {"found": repr(value)})
    return value


def _file_names(value: Any) -> Any:
    items = [value] if isinstance(value, str) else value  # one name alone is a list of one
    if isinstance(items, (list, tuple)) and items and all(isinstance(v, str) and v for v in items):
        return tuple(items)
    raise PydanticCustomError("file_names", "expected a file name or a list of file names, found {found}",
                              {"found": repr(value)})


# Strict: YAML's `true` is not the number 1, `3.5` is not the whole number 3, `"yes"` is not a boolean.
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Float = Annotated[float, BeforeValidator(_number), Strict()]
FileNames = Annotated[tuple[str, ...], BeforeValidator(_file_names)]
SEED = {"ge": 0, "lt": 2**32}  # numpy's seeds are unsigned 32-bit
SECTION = ConfigDict(extra="forbid")  # an unknown key is an error, not a silent default


@dataclass(frozen=True, config=SECTION)
class DataConfig:
    train: str | None = Field(None, description="training file (csv, tsv, json/jsonl, parquet; pkg:// and "
                                                ".zip!member paths allowed)")
    validation: str | None = Field(None, description="validation file; carved from train when missing")
    test: str | None = Field(None, description="test file; carved from train when missing")
    hub: str | None = Field(None, description="a Hugging Face hub dataset name instead of files")
    hub_config: str | None = Field(None, description="the hub dataset's configuration name")
    delimiter: str | None = Field(None, description="csv delimiter; default: tab for .tsv, comma otherwise")
    text_column: str = Field("text", description="column holding the text")
    text_pair_column: str | None = Field(None, min_length=1, description="sentence pairs (NLI, paraphrase, similarity): column "
                                                           "holding each row's second text, given to the tokenizer "
                                                           "as its text_pair")
    label_column: str = Field("label", description="column holding the label (or the labels, where a text has "
                                                   "several)")
    label_separator: str | None = Field(None, description="where a text has several labels: separator of the "
                                                          "labels in one cell, e.g. ';' (a JSON list needs none)")
    tokens_column: str = Field("tokens", description="token tagging: column holding the list of tokens")
    tags_column: str = Field("tags", description="token tagging: column holding the list of tags")
    tag_scheme: Literal["auto", "BIO", "BIOES", "BMES"] = Field(
        "auto", description="token tagging: BIO, BIOES, BMES (segmentation) or auto")
    question_column: str = Field("question", description="question answering (flat files): column holding the "
                                                         "question")
    context_column: str = Field("context", description="question answering (flat files): column holding the "
                                                       "passage the answer is cut from")
    answers_column: str = Field("answers", description="question answering (flat files): column holding the answers, "
                                                       "{text: [...], answer_start: [...]} or a list of {text, "
                                                       "answer_start}; empty: unanswerable")
    id_column: str = Field("id", description="question answering (flat files): column holding the question id "
                                             "(optional; messages name it)")
    validation_size: Float = Field(0.15, gt=0, lt=1, description="share of train carved as validation (when no file)")
    test_size: Float = Field(0.2, gt=0, lt=1, description="share of train carved as test (when no file)")
    max_train_rows: Int | None = Field(None, ge=1, description="stratified subsample of train, for quick runs")
    seed: Int = Field(42, **SEED, description="seed of the carved splits")


@dataclass(frozen=True, config=SECTION)
class ModelConfig:
    name_or_path: str = Field("bert-base-uncased", description="hub name, local folder, or pkg://package/folder")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    trust_remote_code: Bool = Field(False, description="run Python code that ships with the model (off: never)")
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="attention kernel: auto (FlashAttention 2 on a GPU where flash-attn is installed, else "
                            "PyTorch SDPA where the model has it, else eager), sdpa, eager or flash_attention_2")


@dataclass(frozen=True, config=SECTION)
class TrainingConfig:
    """Defaults for every hyperparameter; the search space overrides any of them per trial."""

    learning_rate: Float = Field(5e-5, gt=0, le=1, description="peak learning rate (AdamW)")
    weight_decay: Float = Field(0.01, ge=0, le=1, description="AdamW weight decay (not on biases and LayerNorm)")
    warmup_ratio: Float = Field(0.1, ge=0, lt=1, description="share of steps spent warming the learning rate up")
    epochs: Int = Field(3, ge=1, description="passes over the training split")
    batch_size: Int = Field(16, ge=1, description="effective training batch size (per device x accumulation x "
                                                  "processes)")
    eval_batch_size: Int = Field(64, ge=1, description="evaluation batch size")
    max_length: Int = Field(128, ge=2, description="tokens per text; checked against the model's position limit")
    truncation: Literal["longest_first", "only_first", "only_second"] = Field(
        "longest_first", description="sentence pairs: which text is cut when a pair exceeds max_length (longest_first: "
                                     "the longer, token by token)")
    dropout: Float = Field(0.1, ge=0, lt=1, description="dropout before the classification layer")
    head: Literal[Head, TokenHead] | None = Field(None, description="head; default: the task's first (cls for "
                                                                      "texts, linear for tokens)")
    mlp_hidden: Int = Field(256, ge=1, description="hidden size of the mlp head")
    strategy: Strategy = Field("full", description="fine-tuning strategy")
    freeze_layers: Int = Field(0, ge=0, description="bottom encoder layers frozen by strategy partial")
    imbalance: Imbalance = Field("none", description="class-imbalance handling (training split only)")
    loss: Literal["mse", "huber"] | None = Field(None, description="a numeric target: the training loss, mse or "
                                                                 "huber (less pulled by outliers); default: mse")
    standardize_target: Bool | None = Field(None, description="a numeric target: standardised for training by the "
                                                              "training split's mean and standard deviation (kept "
                                                              "with the model, undone on its outputs); default: "
                                                              "true")
    scheduler: Scheduler = Field("linear", description="learning-rate schedule after warm-up")
    window_overlap: Int = Field(32, ge=0, description="token tagging: tokens shared by the windows a long sequence "
                                                      "is cut into")
    doc_stride: Int = Field(128, ge=1, description="question answering: context tokens shared by the windows a "
                                                   "long context is cut into (Hugging Face's doc_stride); below "
                                                   "max_length less the question")
    max_answer_length: Int = Field(30, ge=1, description="question answering: the longest answer predicted, in "
                                                          "tokens")
    grad_clip: Float = Field(1.0, ge=0, description="max gradient norm; 0 turns clipping off")
    log_every: Int = Field(5, ge=1, description="optimizer steps between train_loss / learning_rate points")
    group_by_length: Bool | None = Field(None, description="training batches of texts of similar length (less "
                                                           "padding); false: plain shuffling; unset: on a CPU, off "
                                                           "on a GPU (measured faster on a CPU, slower on an H200: "
                                                           "docs/benchmarks.md)")
    evals_per_epoch: Int = Field(1, ge=1, description="validation passes per epoch, each a report to the pruner "
                                                      "(the last at the epoch's end); the trial's score is its best "
                                                      "epoch-end score")
    eval_subsample: Int | None = Field(None, ge=1, description="validation rows the evaluations inside an epoch "
                                                               "read (stratified, the same rows every time); the "
                                                               "epoch's end always reads the whole split; unset: all")
    compile: Bool = Field(False, description="torch.compile the model (GPU only: on a CPU the compile costs more "
                                             "than it saves)")
    seed: Int = Field(42, **SEED, description="seed of initialisation, dropout and shuffling")


@dataclass(frozen=True, config=SECTION)
class ParamSpace:
    """One searched hyperparameter: `choices` (categorical) or `low`/`high` (int or float).
    Their values are checked against the hyperparameter's own field in `load.py`."""

    choices: tuple | None = None
    low: Any = None
    high: Any = None
    log: Bool = False
    step: Any = None
    # Only sampled when another parameter has one of these values, e.g. {strategy: [partial]}.
    when: dict | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)


@dataclass(frozen=True, config=SECTION)
class ConfirmConfig:
    """After the budget, the best configurations trained again on new seeds (`search/confirm.py`)."""

    top_k: Int = Field(0, ge=0, le=20, description="configurations confirmed (the best completed trials); 0: none, "
                                                    "the champion is the single best trial")
    seeds: Int = Field(3, ge=1, le=20, description="new training seeds per confirmed configuration (training.seed "
                                                    "+ 1, + 2, ...)")


@dataclass(frozen=True, config=SECTION)
class SearchConfig:
    n_trials: Int | None = Field(10, ge=1, description="finished (COMPLETE or PRUNED) trials the study ends with")
    timeout: Float | None = Field(None, gt=0, description="seconds for this invocation")
    sampler: Sampler = Field("tpe", description="Optuna sampler: tpe, gp (Gaussian process; small budgets), cmaes, "
                                                "qmc (quasi-random), random, grid (every configuration of a listed "
                                                "space), nsga2 (genetic; several objectives)")
    sampler_options: dict[str, Any] | None = Field(default_factory=dict, description="the sampler's settings "
                                                                              "(config/components.py)")
    pruner: Pruner = Field("median", description="Optuna pruner: median, percentile, successive_halving (ASHA), "
                                                 "hyperband, wilcoxon, none; it judges every evaluation "
                                                 "(training.evals_per_epoch)")
    pruner_options: dict[str, Any] | None = Field(default_factory=dict, description="the pruner's settings "
                                                                            "(config/components.py)")
    pruner_startup_trials: Int = Field(2, ge=0, description="trials that finish before any is pruned")
    pruner_warmup_epochs: Float = Field(2.0, ge=0, description="epochs a trial trains before it can be pruned "
                                                               "(0.5: from the middle of the first)")
    warm_start: str | None = Field(None, min_length=1, description="a finished study whose best configurations run first: its "
                                                     "name in search.storage, or a storage URL (with #study_name "
                                                     "where it holds several)")
    warm_start_trials: Int = Field(3, ge=1, description="warm_start: how many of its best configurations")
    seed: Int = Field(42, **SEED, description="sampler seed (each trial's sampling is seeded by it and the trial "
                                              "number)")
    metric: str | None = Field(None, description="validation metric the search optimises; default: the task's "
                                                 "main metric (e.g. val_macro_f1)")
    direction: Direction | None = Field(None, description="whether a higher metric is better; default: what the "
                                                          "task says of search.metric (a loss is minimised)")
    # When the experiment does not set it: $ORCHESTRATOR_STORAGE, else this (see `load.py`).
    storage: str = Field("sqlite:///mlruns/optuna.db", description="Optuna storage URL (sqlite:/// or "
                                                                   "postgresql://)")
    heartbeat_interval: Int = Field(30, gt=0, description="seconds between a running trial's heartbeats")
    heartbeat_grace_period: Int = Field(90, gt=0, description="a trial this long without a heartbeat is dead")
    study_name: str | None = Field(None, description="default: the experiment's name")
    work_dir: str = Field("mlruns/studies", description="per study: splits, caches, checkpoints, trial logs")
    gpus_per_trial: Int = Field(1, ge=1, description=">1: each trial is an Accelerate multi-process (DDP) launch")
    executor: Literal["local", "ray"] = Field(
        "local", description="where trials run: local (child processes on this machine's slots) or ray (Ray tasks "
                             "on any node of the cluster at --ray-address)")
    cpus_per_trial: Int = Field(1, ge=1, description="ray: CPUs a trial asks for (on a cluster without GPUs, its "
                                                     "only request)")
    keep_checkpoints: Int = Field(3, ge=1, description="trials whose best-epoch checkpoint stays in the artifact "
                                                       "store at the end (the best ones)")
    memory_target: Float = Field(0.9, gt=0, le=1, description="batch-size probe: peak share of GPU memory a trial "
                                                              "may use (trials packed on one GPU share it)")
    confirm: ConfirmConfig = dataclasses.field(default_factory=ConfirmConfig)
    objectives: list[str] | None = Field(None, description="a quality metric and what it trades against: "
                                                          "latency_ms, params, model_mb (e.g. [val_macro_f1, "
                                                          "latency_ms]); the Pareto front is searched "
                                                          "(search/objectives.py)")
    trials_per_gpu: Int | Literal["auto"] = Field("auto", description="trials side by side on one GPU: N, or auto "
                                                                      "(as many as the probed memory needs fit "
                                                                      "under memory_target)")


@dataclass(frozen=True, config=SECTION)
class PostprocessConfig:
    threshold: Literal["none", "tune"] | None = Field(
        None, description="decision thresholds tuned on validation (tune) or not (none); default: the task's "
                          "(tune where every label has its own threshold, none otherwise)")
    objective: Literal["f1", "precision", "recall"] = Field(
        "f1", description="f1: the threshold of best F1; precision (recall): the one that reaches postprocess.target "
                          "precision (recall) with the most recall (precision)")
    target: Float | None = Field(None, gt=0, le=1, description="the precision or recall to reach (objective "
                                                               "precision / recall)")
    positive_label: str | None = Field(None, description="one label per text, two classes: the positive class; "
                                                         "default: the second label in sorted order (1 of 0/1, spam "
                                                         "of ham/spam)")


@dataclass(frozen=True, config=SECTION)
class TrackingConfig:
    # When the experiment does not set it: $ORCHESTRATOR_TRACKING_URI, else this (see `load.py`).
    uri: str = Field("sqlite:///mlruns/mlflow.db", description="MLflow tracking URI")
    artifact_location: str = Field("mlruns/artifacts", description="where a new MLflow experiment keeps artifacts "
                                                                   "(a local folder: embedded stores only; a server "
                                                                   "keeps its own)")
    experiment: str | None = Field(None, description="MLflow experiment; default: the experiment's name")


@dataclass(frozen=True, config=SECTION)
class RegistryConfig:
    model_name: str | None = Field(None, description="registered model name; default: the experiment's name")
    register: Bool = Field(True, description="register the best trial's model at the end")
    min_confidence: Float = Field(0.95, gt=0.5, lt=1, description="@champion moves only when a paired bootstrap "
                                                                  "over the test rows finds the new model better "
                                                                  "this often")
    min_improvement: Float | None = Field(None, gt=0, description="or when it is better on test by at least this "
                                                                  "much (the metric's units); default: only "
                                                                  "min_confidence decides")
    export: Bool = Field(True, description="register an ONNX export and its int8 quantisation beside the PyTorch "
                                           "model, with their latency and test score")
    latency_budget_ms: Float | None = Field(None, gt=0, description="search.objectives with latency_ms: the best "
                                                                    "model under this latency also gets @fast")


@dataclass(frozen=True, config=SECTION)
class PretrainConfig:
    """Pre-training of the encoder on unlabeled text, before the search: masked-LM or ELECTRA."""

    objective: PretrainObjective = Field("mlm", description="mlm: predict the masked tokens; electra: a small "
                                                          "generator fills the masked tokens and the encoder learns "
                                                          "to tell, for every token, whether it was replaced (Clark "
                                                          "et al. 2020); more costly per step, more signal per text")
    init: str | None = Field(None, description="where pre-training starts: scratch (a new BERT of the sizes below "
                                               "and a WordPiece tokenizer trained on the corpus) or a model (hub "
                                               "name, folder, pkg://) to continue from; default: model.name_or_path")
    corpus: FileNames | None = Field(None, description="unlabeled text files (txt: one text per line; csv, tsv, "
                                                       "jsonl, parquet: pretrain.text_column); default: the "
                                                       "experiment's training split (never validation or test)")
    text_column: str | None = Field(None, description="the corpus files' text column; default: data.text_column")
    mlm_probability: Float = Field(0.15, gt=0, lt=1, description="share of tokens masked")
    whole_word_masking: Bool = Field(False, description="mask whole words, not single tokens (Chinese: words found "
                                                        "by jieba)")
    max_steps: Int | None = Field(1000, ge=1, description="optimizer steps; the run ends at whichever of max_steps "
                                                          "and max_minutes comes first")
    max_minutes: Float | None = Field(None, gt=0, description="minutes of training, summed over resumed runs")
    batch_size: Int = Field(32, ge=1, description="effective batch size (per device x accumulation x processes)")
    learning_rate: Float = Field(1e-4, gt=0, le=1, description="peak learning rate (AdamW)")
    weight_decay: Float = Field(0.01, ge=0, le=1, description="AdamW weight decay")
    warmup_ratio: Float = Field(0.06, ge=0, lt=1, description="share of max_steps spent warming the learning rate up")
    max_length: Int = Field(128, ge=8, description="tokens per text (longer texts are cut)")
    eval_share: Float = Field(0.05, gt=0, lt=0.5, description="share of the corpus held out for perplexity")
    eval_every: Int = Field(100, ge=1, description="optimizer steps between held-out perplexity measurements")
    save_every: Int = Field(100, ge=1, description="optimizer steps between checkpoints (the run resumes from the "
                                                   "last)")
    log_every: Int = Field(10, ge=1, description="optimizer steps between train_loss points")
    seed: Int = Field(42, **SEED, description="seed of the held-out split, initialisation, shuffling and masking")
    alias: str = Field("pretrained", description="alias the registered encoder gets "
                                                 "(models:/<model_name>-encoder@<alias>)")
    work_dir: str = Field("mlruns/pretrain", description="checkpoints and the trained encoder, per corpus and "
                                                         "settings")
    # objective: electra only.
    electra_weight: Float = Field(50.0, gt=0, description="electra: weight of the replaced-token-detection loss "
                                                          "against the generator's masked-LM loss (the paper's 50)")
    generator_layers: Int | None = Field(None, ge=1, description="electra: the generator's transformer layers (its "
                                                                 "hidden size is the encoder's); default: a third of "
                                                                 "the encoder's, at least 1")
    # init: scratch only: the encoder's size.
    vocab_size: Int = Field(8000, ge=100, description="scratch: WordPiece vocabulary size")
    hidden_size: Int = Field(256, ge=8, description="scratch: hidden size")
    num_layers: Int = Field(4, ge=1, description="scratch: transformer layers")
    num_heads: Int = Field(4, ge=1, description="scratch: attention heads (hidden_size must be a multiple)")
    intermediate_size: Int = Field(1024, ge=8, description="scratch: feed-forward size")
    max_positions: Int = Field(512, ge=8, description="scratch: longest input in tokens")


@dataclass(frozen=True, config=SECTION)
class ExperimentConfig:
    name: str = "experiment"
    # Checked against `TaskRules.names()` (the tasks' registry), which a new task joins.
    task: str | None = Field(None, description="what is predicted: one of the tasks' registry "
                                               "(orchestrator.tasks.REGISTRY); default: its first")
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    space: dict[str, ParamSpace] = dataclasses.field(default_factory=dict)
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    postprocess: PostprocessConfig = dataclasses.field(default_factory=PostprocessConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    registry: RegistryConfig = dataclasses.field(default_factory=RegistryConfig)
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
