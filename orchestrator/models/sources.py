"""Where the encoder comes from, and whether it can be used, found before anything is created.

`resolve_model` turns `model.name_or_path` into a local folder (a path, `pkg://`, or a hub name
fetched once into the Hugging Face cache with `snapshot_download`, so trial processes never reach
the hub; a registered encoder, `models:/`, is fetched by `orchestrator.registry.encoders`), then
checks what every trial would otherwise find out one by one: the config loads (and needs no code
of its own unless `model.trust_remote_code` says so), the weights are safetensors that open, the
tokenizer loads. It also reads the limits the search space must respect (positions, layers) and a
fingerprint of the model's content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import paths
from orchestrator.config import ModelConfig
from orchestrator.data import DataError, tokenizer_fingerprint

# What a hub snapshot needs: configs, safetensors weights, tokenizer files; never pickles.
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "tokenizer*", "vocab*", "merges*",
             "spiece*", "sentencepiece*"]
REGISTERED = "models:/"
NO_LIMIT = 10**6  # tokenizers without a length limit report a huge model_max_length
# A folder without any of these has no tokenizer: transformers would quietly build a near-empty
# one from the config (every word [UNK]) and every trial would train on nothing.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model", "sentencepiece.model", "vocab.model")


@dataclass(frozen=True)
class ModelSource:
    path: str  # local folder every process loads from
    fingerprint: str  # 16 hex digits over config, tokenizer and weights
    max_positions: int | None  # longest input the model takes, in tokens
    num_layers: int | None
    record: dict  # {name_or_path, revision, fingerprint}: what a study records


def resolve_model(cfg: ModelConfig, registered: tuple[Path, dict] | None = None) -> ModelSource:
    """A usable local copy of the configured model, or a `DataError` saying what to do.

    `models:/NAME@ALIAS` (an encoder `pretrain` registered) is the registry's to fetch: resolve it
    with `orchestrator.registry.encoders.resolve_encoder`, which passes its files here as
    `registered` (the local folder, and its lineage for the study's record)."""
    if cfg.name_or_path.startswith(REGISTERED):
        if registered is None:
            raise DataError(f"model.name_or_path: {cfg.name_or_path} is an encoder in the Model Registry; it is "
                            f"fetched through orchestrator.registry.encoders.resolve_encoder, with the tracking.uri "
                            f"of the store that holds it")
        folder, lineage = registered
    else:
        folder, lineage = _local_folder(cfg), {}
    if not any(folder.glob("*.safetensors")):
        raise DataError(f"model.name_or_path: {cfg.name_or_path} holds no *.safetensors weights "
                        f"(only safetensors are loaded; convert the checkpoint or pick another model)")
    config = _load_config(folder, cfg)
    digest = hashlib.sha256()
    for weights in sorted(folder.glob("*.safetensors")):
        _check_weights(weights, cfg)
        digest.update(weights.name.encode())
        with open(weights, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    tokenizer = _load_tokenizer(folder, cfg)
    digest.update(config.to_json_string().encode())
    digest.update(tokenizer_fingerprint(tokenizer).encode())
    limits = [n for n in (getattr(config, "max_position_embeddings", None), tokenizer.model_max_length)
              if isinstance(n, int) and 0 < n < NO_LIMIT]
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    fingerprint = digest.hexdigest()[:16]
    return ModelSource(str(folder), fingerprint, min(limits) if limits else None, layers,
                       {"name_or_path": cfg.name_or_path, "revision": cfg.revision, "fingerprint": fingerprint,
                        **lineage})


def _local_folder(cfg: ModelConfig) -> Path:
    try:
        location = paths.resolve(cfg.name_or_path)
    except paths.PathError as e:
        raise DataError(f"model.name_or_path: {e}") from None
    local = cfg.name_or_path.startswith((paths.PKG, "/", ".", "~")) or Path(location).exists()
    if local:
        folder = Path(location).expanduser()
        if not folder.is_dir():
            raise DataError(f"model.name_or_path: folder not found: {cfg.name_or_path}")
        return folder.resolve()
    return _from_hub(cfg)


def _from_hub(cfg: ModelConfig) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    patterns = HUB_FILES + (["*.py"] if cfg.trust_remote_code else [])
    try:
        return Path(snapshot_download(cfg.name_or_path, revision=cfg.revision, allow_patterns=patterns))
    except HFValidationError as e:
        raise DataError(f"model.name_or_path: {cfg.name_or_path!r} is neither a local folder nor a valid hub "
                        f"name ({e})") from None
    except OSError as e:  # the hub's errors (offline, not found, gated, HTTP) are all OSErrors
        raise DataError(
            f"model.name_or_path: cannot get {cfg.name_or_path!r}"
            f"{f' (revision {cfg.revision})' if cfg.revision else ''} from the Hugging Face hub: "
            f"{str(e).strip().splitlines()[-1][:300]}. Without a network, download it once where there is one "
            f"(`hf download {cfg.name_or_path}`) and copy the Hugging Face cache, or set model.name_or_path "
            f"to a local folder") from None


def _load_config(folder: Path, cfg: ModelConfig):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=cfg.trust_remote_code)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise DataError(f"model.name_or_path: {cfg.name_or_path} needs Python code that ships with it; "
                            f"set model.trust_remote_code: true only if you trust its author (that code runs "
                            f"in every trial)") from None
        raise DataError(f"model.name_or_path: {cfg.name_or_path}: unusable config.json: {e}") from None
    except OSError as e:
        raise DataError(f"model.name_or_path: {cfg.name_or_path}: cannot read its config.json: {e}") from None


def _check_weights(path: Path, cfg: ModelConfig) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        raise DataError(f"model.name_or_path: {cfg.name_or_path}: {path.name} is not a readable safetensors "
                        f"file ({e}); re-download or re-save the model") from None


def _load_tokenizer(folder: Path, cfg: ModelConfig):
    from transformers import AutoTokenizer

    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise DataError(f"model.name_or_path: {cfg.name_or_path} has no tokenizer (none of "
                        f"{', '.join(TOKENIZER_FILES)}); save the tokenizer into the model folder "
                        f"(tokenizer.save_pretrained)")
    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        raise DataError(f"model.name_or_path: {cfg.name_or_path}: its tokenizer does not load ({e}); the folder "
                        f"needs tokenizer files (tokenizer.json, or vocab.txt / merges.txt)") from None
