"""Classification heads on any Hugging Face encoder, fine-tuning strategies, and the on-disk format.

A `TextClassifier` is an `AutoModel` encoder plus one of five heads:
  cls       dropout + linear on the first token's final hidden state
  pooler    the encoder's own pooler (dense + tanh on the first token) + linear
  mean      attention-mask-aware mean of the final hidden states + linear
  cls_mean  mean -> fc(128) plus first token -> fc(128), summed, + linear
  mlp       two-layer MLP (hidden size `mlp_hidden`) with dropout on the first token

Saved as a folder of safetensors and JSON only (no pickle): `encoder/` (weights, config and
tokenizer via `save_pretrained`), `head.safetensors`, `classifier.json`.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer

FUSION_DIM = 128


class HeadError(ValueError):
    pass


def attention_kernel(requested: str = "auto", cuda: bool = False) -> str | None:
    """The `attn_implementation` to ask transformers for; None leaves it to transformers, which
    picks PyTorch's SDPA where the model supports it and eager attention where it does not."""
    if requested != "auto":
        return requested
    if cuda and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return None


def load_encoder(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False,
                 pooler: bool = True, attention: str | None = None):
    # safetensors only: a pickled checkpoint can run arbitrary code when loaded.
    kwargs = dict(revision=revision, trust_remote_code=trust_remote_code, use_safetensors=True)
    if attention is not None:
        kwargs["attn_implementation"] = attention
    if not pooler:
        try:  # BERT-family models can skip the pooler; others have none or ignore it
            return AutoModel.from_pretrained(name_or_path, add_pooling_layer=False, **kwargs)
        except TypeError:
            pass
    return AutoModel.from_pretrained(name_or_path, **kwargs)


def load_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    return AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)


def has_pooler(encoder: nn.Module) -> bool:
    return getattr(encoder, "pooler", None) is not None


def check_heads(name_or_path: str, heads: set[str], revision: str | None = None,
                trust_remote_code: bool = False) -> list[str]:
    """Problems with the requested heads for this encoder, found without loading any weights."""
    if "pooler" not in heads:
        return []
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    with torch.device("meta"):  # builds the module tree only: no memory, no weights
        encoder = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    if has_pooler(encoder):
        return []
    return [f"head 'pooler': {type(encoder).__name__} ({name_or_path}) has no pooler layer; "
            f"remove 'pooler' from training.head / space.head (use cls, mean, cls_mean or mlp)"]


class TextClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_labels: int, head: str = "cls", dropout: float = 0.1,
                 mlp_hidden: int = 256):
        super().__init__()
        hidden = encoder.config.hidden_size
        if head == "pooler" and not has_pooler(encoder):
            raise HeadError(f"head 'pooler': {type(encoder).__name__} has no pooler layer; "
                            f"use head cls, mean, cls_mean or mlp")
        if head != "pooler" and has_pooler(encoder):
            # An unused pooler costs compute and leaves parameters without gradients (breaks DDP).
            encoder.pooler = None
        self.encoder = encoder
        self.head, self.num_labels, self.mlp_hidden = head, num_labels, mlp_hidden
        self.dropout = nn.Dropout(dropout)
        if head == "cls_mean":
            self.fc_mean = nn.Linear(hidden, FUSION_DIM)
            self.fc_cls = nn.Linear(hidden, FUSION_DIM)
            hidden = FUSION_DIM
        elif head == "mlp":
            self.mlp = nn.Sequential(nn.Linear(hidden, mlp_hidden), nn.GELU(), nn.Dropout(dropout))
            hidden = mlp_hidden
        self.classifier = nn.Linear(hidden, num_labels)
        self.encoder_trainable = True

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        # A frozen encoder runs without autograd: no activations kept, much faster and lighter.
        with torch.set_grad_enabled(self.encoder_trainable and torch.is_grad_enabled()):
            out = self.encoder(**kwargs)
        states = out.last_hidden_state
        if self.head == "pooler":
            feature = out.pooler_output
        elif self.head == "mean":
            feature = mean_pool(states, attention_mask)
        elif self.head == "cls_mean":
            feature = self.fc_mean(mean_pool(states, attention_mask)) + self.fc_cls(states[:, 0])
        else:  # cls, mlp
            feature = states[:, 0]
        feature = self.dropout(feature)
        if self.head == "mlp":
            feature = self.mlp(feature)
        return self.classifier(feature)

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                if not k.startswith("encoder.")}

    # ------------------------------------------------------------------ fine-tuning strategies

    def apply_strategy(self, strategy: str, freeze_layers: int = 0) -> None:
        if strategy == "full":
            return
        if strategy == "frozen":
            for p in self.encoder.parameters():
                p.requires_grad_(False)
            self.encoder_trainable = False
            return
        if strategy == "partial":
            layers = encoder_layers(self.encoder)
            if freeze_layers > len(layers):
                raise HeadError(f"freeze_layers={freeze_layers} but the encoder has {len(layers)} layers")
            frozen = [self.encoder.get_input_embeddings()] + list(layers[:freeze_layers])
            embeddings = getattr(self.encoder, "embeddings", None)
            if embeddings is not None:
                frozen.append(embeddings)
            for module in frozen:
                for p in module.parameters():
                    p.requires_grad_(False)
            return
        raise HeadError(f"unknown strategy {strategy!r}")

    # ------------------------------------------------------------------ save / load

    def save(self, directory: str | Path, tokenizer, meta: dict) -> Path:
        directory = Path(directory)
        (directory / "encoder").mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory / "encoder")
        tokenizer.save_pretrained(directory / "encoder")
        save_file(self.head_state_dict(), str(directory / "head.safetensors"))
        info = {"head": self.head, "num_labels": self.num_labels, "mlp_hidden": self.mlp_hidden, **meta}
        (directory / "classifier.json").write_text(json.dumps(info, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> tuple[TextClassifier, object, dict]:
        """Model (eval mode), tokenizer and metadata (label names, max length...) from `save`."""
        directory = Path(directory)
        info = json.loads((directory / "classifier.json").read_text())
        encoder = load_encoder(str(directory / "encoder"), pooler=info["head"] == "pooler")
        model = cls(encoder, info["num_labels"], head=info["head"], mlp_hidden=info.get("mlp_hidden", 256))
        missing, unexpected = model.load_state_dict(load_file(str(directory / "head.safetensors")), strict=False)
        bad = [k for k in missing if not k.startswith("encoder.")] + list(unexpected)
        if bad:
            raise HeadError(f"{directory}: head weights do not match the head {info['head']!r}: {bad}")
        return model.eval(), load_tokenizer(str(directory / "encoder")), info


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks, for the BERT-family layouts (and DistilBERT's)."""
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        module = encoder
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise HeadError(f"cannot find the layer stack of {type(encoder).__name__} for strategy 'partial'")
