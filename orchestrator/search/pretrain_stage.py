"""`python -m orchestrator pretrain`, and the stage `search` runs first when the encoder it is
told to fine-tune (`models:/<model_name>-encoder@<alias>`) does not exist yet.

One pre-training is identified by its fingerprint: the corpus's texts, where it starts (scratch,
or the starting model's own fingerprint) and every setting. Its checkpoints live in
`pretrain.work_dir/<encoder>/<fingerprint>/`, its MLflow run is tagged with it, and so is the
registered version, so that the same experiment run again reuses (or resumes) what exists and a
changed corpus or setting never gets an encoder trained on something else.

The objective is part of it: an electra fingerprint always holds `objective: electra` and its own
settings; an mlm one leaves those out, as it did before objectives existed, so encoders
pre-trained then keep their fingerprint (and are not trained again) while the two objectives
never share a folder or a registered version. The checkpoint records its objective too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orchestrator.config import ConfigError, ExperimentConfig, ModelConfig
from orchestrator.config.schema import SCRATCH
from orchestrator.config.secrets import public, scrub
from orchestrator.data import DataError
from orchestrator.training.pretrain.corpus import Corpus, load_corpus

log = logging.getLogger(__name__)

ROLE = "pretrain"
OBJECTIVE_TAG = "pretrain_objective"
# Settings that change how often things are written, not what is trained.
NOT_FINGERPRINTED = ("alias", "work_dir", "eval_every", "save_every", "log_every")
ELECTRA_ONLY = ("objective", "electra_weight", "generator_layers")  # not in an mlm fingerprint (see above)
# The held-out figure each objective is summed up by: the masked LM's perplexity; for ELECTRA,
# its generator's (the encoder's own skill, replaced-token detection, is logged beside it).
PERPLEXITY = {"mlm": "eval_perplexity", "electra": "eval_generator_perplexity"}


@dataclass
class Plan:
    corpus: Corpus
    start: str  # "scratch" or the local folder of the model pre-training continues from
    start_record: dict
    fingerprint: str
    folder: Path  # checkpoints, tokenizer (scratch), the saved encoder


@dataclass
class Outcome:
    name: str
    version: str
    alias: str
    run_id: str
    steps: int
    minutes: float
    perplexity: float  # held-out; electra: the generator's
    reused: bool = False  # an encoder with the same fingerprint was registered already

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


def plan(cfg: ExperimentConfig) -> Plan:
    """Everything pre-training reads, checked, and its fingerprint. Creates nothing."""
    from orchestrator.registry.encoders import resolve_encoder
    from orchestrator.search.preflight import unwritable

    p = cfg.pretrain
    problem = unwritable(Path(p.work_dir))
    if problem:
        raise ConfigError(cfg.source, [f"pretrain.work_dir: cannot write to {p.work_dir}: {problem}"])
    corpus = load_corpus(cfg)
    if p.init == SCRATCH:
        start, record = SCRATCH, {"init": SCRATCH}
    else:
        model = ModelConfig(p.init, None, cfg.model.trust_remote_code) if p.init else cfg.model
        try:
            source = resolve_encoder(model)
        except DataError as e:
            if not p.init:
                raise
            raise DataError(str(e).replace("model.name_or_path", "pretrain.init")) from None
        start, record = source.path, {"init": model.name_or_path, "init_fingerprint": source.fingerprint}
        if p.objective == "electra":
            _check_electra(cfg, source.path)
    left_out = NOT_FINGERPRINTED + (ELECTRA_ONLY if p.objective == "mlm" else ())
    settings = {k: v for k, v in dataclasses.asdict(p).items() if k not in left_out}
    settings["corpus"] = list(settings["corpus"] or [])
    text = json.dumps({"settings": settings, "corpus": corpus.digest, **record}, sort_keys=True)
    fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Plan(corpus, start, record, fingerprint, Path(p.work_dir).resolve() / cfg.encoder_name / fingerprint)


def _check_electra(cfg: ExperimentConfig, folder: str) -> None:
    """An encoder ELECTRA cannot be built around: exit 2 naming the key, before anything is created."""
    from transformers import AutoConfig

    from orchestrator.training.pretrain.electra import unsupported

    config = AutoConfig.from_pretrained(folder, trust_remote_code=cfg.model.trust_remote_code)
    problem = unsupported(config, cfg.pretrain.generator_layers)
    if problem:
        raise ConfigError(cfg.source, [problem])


def unused(cfg: ExperimentConfig) -> str | None:
    """Why the declared `pretrain:` section does nothing in `search` (one line), or None.

    A notice, not an error: the same experiment file serves `python -m orchestrator pretrain` on
    its own, and the README's comparison of a hub encoder with the pre-trained one overrides only
    model.name_or_path. What must not happen is that it passes unsaid."""
    if cfg.pretrain is None or cfg.model.name_or_path.startswith(f"models:/{cfg.encoder_name}@"):
        return None
    return (f"pretrain: declared but not used: model.name_or_path is {scrub(cfg.model.name_or_path)}, not the "
            f"encoder pre-training registers; to fine-tune that one, set model.name_or_path="
            f"models:/{cfg.encoder_name}@{cfg.pretrain.alias}")


def pending(cfg: ExperimentConfig) -> tuple[str | None, Plan | None]:
    """(why `search` must pre-train first, or None; the plan when it was made on the way): the
    experiment fine-tunes its own registered encoder, and `@alias` is missing or points to an
    encoder pre-trained with other text or settings."""
    from orchestrator.config.paths import sqlite_path
    from orchestrator.registry.encoders import encoder_version
    from orchestrator.registry.versions import FINGERPRINT_TAG
    from orchestrator.tracking.client import check_store

    if cfg.pretrain is None or not cfg.model.name_or_path.startswith(f"models:/{cfg.encoder_name}@"):
        return None, None
    alias = cfg.model.name_or_path.split("@", 1)[1]
    database = sqlite_path(cfg.tracking.uri)
    if database is not None and not database.expanduser().exists():
        return f"{cfg.model.name_or_path} does not exist yet", None  # not even the store does
    check_store(cfg.tracking.uri)  # a dead or refusing server: a clear message, not a traceback
    version = encoder_version(cfg.tracking.uri, cfg.encoder_name, alias)
    if version is None:
        return f"{cfg.model.name_or_path} does not exist yet", None
    work = plan(cfg)
    made_by = version.tags.get(OBJECTIVE_TAG, "mlm")
    if made_by != cfg.pretrain.objective:
        return (f"{cfg.model.name_or_path} (version {version.version}) was pre-trained with objective {made_by}, "
                f"this experiment's pretrain.objective is {cfg.pretrain.objective}"), work
    if version.tags.get(FINGERPRINT_TAG) != work.fingerprint:
        return (f"{cfg.model.name_or_path} (version {version.version}) was pre-trained with other text or settings "
                f"(fingerprint {version.tags.get(FINGERPRINT_TAG)}, this experiment's is {work.fingerprint})"), work
    return None, work


def run_pretrain(cfg: ExperimentConfig, say: Callable[[str], None] = print, work: Plan | None = None) -> Outcome:
    """Pre-train (or resume, or reuse) the experiment's encoder; log it; register it with its alias.
    `work`: `plan(cfg)` when the caller made it already (reading the corpus is not free)."""
    from orchestrator.registry.versions import FINGERPRINT_TAG, encoder_versions, register_encoder
    from orchestrator.tracking.client import BestEffort, Tracker, TrackingError, check_store, is_outage

    if cfg.pretrain is None:
        raise ConfigError(cfg.source, ["pretrain: the experiment has no pretrain: section; add one (see "
                                       "experiments/chnsenticorp.yaml)"])
    p = cfg.pretrain
    check_store(cfg.tracking.uri)
    work = work or plan(cfg)
    tracker = Tracker(cfg.tracking.uri, cfg.experiment_name, cfg.tracking.artifact_location)
    client = tracker.client
    done = encoder_versions(client, cfg.encoder_name, work.fingerprint)
    if done:
        version = max(done, key=lambda v: int(v.version))
        register_encoder(client, cfg.encoder_name, version.run_id, {FINGERPRINT_TAG: work.fingerprint}, p.alias)
        metrics = tracker.run_metrics(version.run_id)
        say(f"pre-training {work.fingerprint} was done before: {cfg.encoder_name} version {version.version} "
            f"is @{p.alias}")
        return Outcome(cfg.encoder_name, str(version.version), p.alias, version.run_id,
                       int(metrics.get("steps", 0)), metrics.get("pretrain_minutes", 0.0),
                       metrics.get(PERPLEXITY[p.objective], math.nan), reused=True)

    work.folder.mkdir(parents=True, exist_ok=True)
    run_id = _run(tracker, cfg, work)
    say(f"pre-training {cfg.encoder_name} ({work.start_record['init']}) on {len(work.corpus.train)} texts, "
        f"{len(work.corpus.held_out)} held out; checkpoints in {work.folder}")
    best_effort = BestEffort(lambda: tracker)  # a store outage mid-training loses points, not the training
    try:
        result, model, tokenizer = _train(cfg, work, best_effort, run_id, say)
    except BaseException:
        # Interrupted or failed: the checkpoint stays for the rerun, which re-opens this run.
        best_effort.end_run(run_id, "KILLED")
        raise
    encoder = _save_encoder(_encoder_of(model), tokenizer, work.folder)
    final = {"eval_loss": result.eval_loss, "eval_perplexity": result.perplexity} if p.objective == "mlm" else \
        {"eval_loss": result.eval_loss, **result.metrics}
    perplexity = final.get(PERPLEXITY[p.objective], math.nan)
    try:
        tracker.log_metrics(run_id, {"steps": result.step, "pretrain_minutes": result.minutes, **final},
                            result.step)
        tracker.log_artifacts(run_id, encoder, "encoder")
        _log_curves(tracker, run_id, result)
        tags = {FINGERPRINT_TAG: work.fingerprint, "corpus": work.corpus.digest, "init": work.start_record["init"],
                "steps": str(result.step), OBJECTIVE_TAG: p.objective,
                PERPLEXITY[p.objective]: f"{perplexity:.4f}",
                **({"eval_rtd_f1": f"{final.get('eval_rtd_f1', math.nan):.4f}"} if p.objective == "electra" else {})}
        version = register_encoder(client, cfg.encoder_name, run_id, tags, p.alias)
        tracker.end_run(run_id)
    except Exception as e:
        if not is_outage(e):
            raise
        raise TrackingError(f"tracking.uri: the MLflow store stopped answering after pre-training "
                            f"({scrub(str(e))[:300]}); the encoder is saved in {encoder}: run the same command again "
                            f"to log and register it (training does not repeat)") from e
    say(f"pre-trained ({p.objective}) {result.step} steps in {result.minutes:.1f} min (stopped by "
        f"{result.stopped_by}{f', resumed from step {result.resumed_from}' if result.resumed_from else ''}); "
        f"held-out {_figures(p.objective, final)}; registered {cfg.encoder_name} version {version} as @{p.alias}")
    return Outcome(cfg.encoder_name, version, p.alias, run_id, result.step, result.minutes, perplexity)


def _figures(objective: str, metrics: dict) -> str:
    if objective == "electra":
        return (f"generator perplexity {metrics.get('eval_generator_perplexity', math.nan):.2f}, replaced-token "
                f"detection accuracy {metrics.get('eval_rtd_accuracy', math.nan):.4f}, F1 "
                f"{metrics.get('eval_rtd_f1', math.nan):.4f}")
    return f"perplexity {metrics.get('eval_perplexity', math.nan):.2f}"


def _encoder_of(model):
    """What is registered: the masked LM itself, or ELECTRA's discriminator without generator or head."""
    from orchestrator.training.pretrain.electra import ElectraPair

    return model.encoder if isinstance(model, ElectraPair) else model


def _run(tracker, cfg: ExperimentConfig, work: Plan) -> str:
    """The pre-training's MLflow run: the one a killed run of the same fingerprint left, else a new one."""
    from orchestrator.tracking.client import TAG_ROLE

    known = work.folder / "run.json"
    if known.is_file():
        run_id = json.loads(known.read_text())["run_id"]
        if tracker.exists(run_id):
            tracker.client.update_run(run_id, status="RUNNING")
            return run_id
    run = tracker.client.create_run(tracker.experiment_id, run_name=f"pretrain-{cfg.encoder_name}", tags={
        TAG_ROLE: ROLE, "pretrain_fingerprint": work.fingerprint, "encoder": cfg.encoder_name,
        OBJECTIVE_TAG: cfg.pretrain.objective,
        "corpus": work.corpus.digest})
    params = {f"pretrain.{k}": v for k, v in public(dataclasses.asdict(cfg.pretrain)).items()}
    params.update({"corpus.train_texts": len(work.corpus.train), "corpus.held_out_texts": len(work.corpus.held_out),
                   "corpus.fingerprint": work.corpus.digest, "corpus.source": json.dumps(work.corpus.record),
                   **{f"start.{k}": v for k, v in work.start_record.items()}})
    tracker.log_params(run.info.run_id, params)
    known.write_text(json.dumps({"run_id": run.info.run_id}))
    return run.info.run_id


def _train(cfg: ExperimentConfig, work: Plan, tracker, run_id: str, say):
    import torch
    from accelerate.utils import set_seed
    from transformers import AutoTokenizer

    from orchestrator.training.pretrain import electra, loop, masking, scratch

    p = cfg.pretrain
    set_seed(p.seed)
    if work.start == SCRATCH:
        tok_dir = work.folder / "tokenizer"
        tokenizer = AutoTokenizer.from_pretrained(tok_dir) if (tok_dir / "tokenizer.json").is_file() else \
            scratch.train_tokenizer(work.corpus.train, p.vocab_size, tok_dir)
    else:
        tokenizer = AutoTokenizer.from_pretrained(work.start, trust_remote_code=cfg.model.trust_remote_code)
    model = _model(cfg, work, tokenizer)
    if tokenizer.mask_token is None:
        raise DataError(f"pretrain.init: {work.start_record['init']} has no [MASK] token, so it cannot be trained "
                        f"as a masked language model; pick a BERT-like encoder or init: scratch")
    train_rows = masking.encode(work.corpus.train, tokenizer, p.max_length, p.whole_word_masking)
    held_rows = masking.encode(work.corpus.held_out, tokenizer, p.max_length, p.whole_word_masking)
    max_per_device = None
    if torch.cuda.is_available():
        # ELECTRA's step runs the generator, then the discriminator (about 3x its layers) on the
        # same batch: half the generator's largest batch is a rough bound.
        max_per_device = _probe(model, p, cfg.search.memory_target) if p.objective == "mlm" else \
            max(1, _probe(model.generator, p, cfg.search.memory_target) // 2)
    settings = loop.Settings(p.max_steps, p.max_minutes, p.batch_size, p.learning_rate, p.weight_decay,
                             p.warmup_ratio, p.mlm_probability, p.whole_word_masking, p.eval_every, p.save_every,
                             p.log_every, p.seed, max_per_device, p.objective)
    measures = electra.measures(p.electra_weight) if p.objective == "electra" else loop.MLM

    def on_eval(step: int, metrics: dict) -> None:
        tracker.log_metrics(run_id, metrics, step)
        say(f"  step {step}: held-out loss {metrics['eval_loss']:.4f}, {_figures(p.objective, metrics)}")

    result = loop.pretrain_mlm(model, tokenizer, train_rows, held_rows, settings, work.folder,
                               on_log=lambda step, m: tracker.log_metrics(run_id, m, step), on_eval=on_eval,
                               measures=measures)
    return result, model, tokenizer


def _model(cfg: ExperimentConfig, work: Plan, tokenizer):
    """What trains: a masked LM (mlm), or ELECTRA's generator + encoder pair sharing embeddings."""
    from transformers import AutoModel, AutoModelForMaskedLM

    from orchestrator.training.pretrain import electra, scratch

    p, remote = cfg.pretrain, cfg.model.trust_remote_code
    if p.objective == "mlm":
        return scratch.new_model(p, tokenizer) if work.start == SCRATCH else \
            AutoModelForMaskedLM.from_pretrained(work.start, use_safetensors=True, trust_remote_code=remote)
    encoder = scratch.new_encoder(p, tokenizer) if work.start == SCRATCH else \
        AutoModel.from_pretrained(work.start, use_safetensors=True, trust_remote_code=remote)
    return electra.ElectraPair(electra.new_generator(encoder.config, p.generator_layers), encoder,
                               p.electra_weight, p.seed)


def _probe(model, p, target: float) -> int:
    """The largest per-device batch of `p.max_length` tokens under `target` of GPU memory."""
    import copy

    import torch

    from orchestrator.training import probe as memory
    from orchestrator.training.loop import precision_for

    class Logits(torch.nn.Module):  # what the probe's measurement calls: inputs in, logits out
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **batch):
            return self.inner(**batch).logits

    class Objective:  # random tokens to predict at every position: the worst case
        @staticmethod
        def dummy_labels(batch_size, max_length, classes, device):
            return torch.randint(0, classes, (batch_size, max_length), device=device)

        @staticmethod
        def loss(logits, labels):
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    def build():
        probe = Logits(copy.deepcopy(model)).to("cuda:0").train()
        return probe, torch.optim.AdamW(probe.parameters(), lr=1e-5)

    measure = memory.cuda_measure(build, model.config.vocab_size, p.max_length, precision_for(False), 0, Objective())
    result = memory.find_max_batch(measure, torch.cuda.get_device_properties(0).total_memory, target)
    return max(1, result.batch_size)


def _save_encoder(model, tokenizer, folder: Path) -> Path:
    """The trained masked-LM (weights as safetensors) and its tokenizer, in `folder/encoder`."""
    target, tmp = folder / "encoder", folder / "encoder.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    getattr(model, "module", model).to("cpu").save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def _log_curves(tracker, run_id: str, result) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not result.history:
        return
    key = "eval_perplexity" if "eval_perplexity" in result.history[0] else "eval_generator_perplexity"
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in result.history], [h[key] for h in result.history], marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out perplexity" if key == "eval_perplexity" else "held-out generator perplexity")
    ax.set_yscale("log")
    ax.set_title("masked-LM pre-training" if key == "eval_perplexity" else "ELECTRA pre-training")
    fig.tight_layout()
    tracker.log_figure(run_id, fig, "pretrain_perplexity.png")
