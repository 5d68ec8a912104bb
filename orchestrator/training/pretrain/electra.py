"""ELECTRA's objective (Clark et al. 2020): a small generator, a masked LM, fills the masked
positions with tokens sampled from its predictions; the encoder being trained (the discriminator)
tells for every token whether it was replaced. Loss = generator MLM loss + `weight` x replaced-token
detection (RTD) loss.

The two share their token (and position and type) embeddings, as in the paper: the generator's
masked-LM decoder is tied to them too, so the discriminator's input embeddings learn from both
losses. Only the discriminator's encoder is what pre-training registers; the generator and the RTD
head live in the training checkpoints (this module's `ElectraPair` is what those save).

The generator is built from the encoder's own config with fewer layers (same hidden size), as a
`transformers` masked LM (`AutoModelForMaskedLM.from_config`), so any encoder with a masked-LM
class can be continued; `unsupported` says when one has none.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from orchestrator.training.pretrain.loop import Measures

IGNORE = -100  # the masking collator's label at positions that were not masked
SHARED = ("word_embeddings", "position_embeddings", "token_type_embeddings")


def default_generator_layers(encoder_layers: int) -> int:
    """A third of the encoder's layers, at least 1 (the paper's generators are 1/4 to 1/2 its size)."""
    return max(1, round(encoder_layers / 3))


def unsupported(config, generator_layers: int | None) -> str | None:
    """Why an encoder of `config` cannot be pre-trained as ELECTRA's discriminator (one line naming
    the key), or None."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return (f"pretrain.objective: electra builds its generator as a masked LM of the encoder's own kind, and "
                f"transformers has no masked LM for model_type {config.model_type!r}; use objective: mlm, or "
                f"pretrain.init: a BERT-like encoder (bert, roberta, electra, ...) or scratch")
    layers = getattr(config, "num_hidden_layers", None)
    if generator_layers is not None and layers is not None and generator_layers > layers:
        return (f"pretrain.generator_layers ({generator_layers}) must be at most the encoder's {layers} layers: "
                f"ELECTRA's generator is the smaller model; lower it or leave it unset (default "
                f"{default_generator_layers(layers)})")
    return None


def new_generator(encoder_config, layers: int | None):
    """A masked LM like the encoder (same kind, hidden size and vocabulary) with fewer layers, random weights."""
    from transformers import AutoModelForMaskedLM

    config = copy.deepcopy(encoder_config)
    config.num_hidden_layers = layers or default_generator_layers(encoder_config.num_hidden_layers)
    config.tie_word_embeddings = True  # its output layer is its (shared) input embeddings
    return AutoModelForMaskedLM.from_config(config)


def share_embeddings(generator, encoder) -> list[str]:
    """Make `generator` use `encoder`'s embedding tables where the shapes agree; returns their names."""
    shared = []
    theirs, ours = _embeddings(encoder), _embeddings(generator.base_model)
    for name in SHARED:
        table, mine = getattr(theirs, name, None), getattr(ours, name, None)
        if isinstance(table, nn.Embedding) and isinstance(mine, nn.Embedding) and \
                table.weight.shape == mine.weight.shape:
            setattr(ours, name, table)
            shared.append(name)
    if "word_embeddings" not in shared:  # not BERT-shaped: the input embeddings at least
        generator.set_input_embeddings(encoder.get_input_embeddings())
        shared.insert(0, "word_embeddings")
    generator.tie_weights()  # the decoder follows the input embeddings it now has
    return shared


def _embeddings(model) -> nn.Module:
    return getattr(model, "embeddings", None) or nn.Module()


@dataclass
class ElectraOutput:
    loss: torch.Tensor
    generator_loss: torch.Tensor
    discriminator_loss: torch.Tensor
    counts: dict  # tensors: masked, tokens, replaced, correct, true_pos, false_pos, false_neg


class ElectraPair(nn.Module):
    """Generator + discriminator (the encoder) + RTD head, trained as one module on masked batches."""

    def __init__(self, generator, encoder, weight: float, seed: int = 0):
        super().__init__()
        self.generator, self.encoder = generator, encoder
        self.shared = share_embeddings(generator, encoder)
        self.rtd_head = nn.Linear(encoder.config.hidden_size, 1)
        if isinstance(getattr(encoder, "pooler", None), nn.Module):
            # No loss reaches a continued encoder's pooler (it keeps its weights), and DDP stops on
            # parameters that get no gradient.
            encoder.pooler.requires_grad_(False)
        self.weight, self.seed = weight, seed
        self._eval_draws: torch.Generator | None = None

    def train(self, mode: bool = True):
        # Each evaluation samples the generator from the same seed, so the held-out figures differ
        # only by the model, and evaluating leaves training's random state alone.
        self._eval_draws = None
        return super().train(mode)

    def forward(self, input_ids, attention_mask, labels) -> ElectraOutput:
        masked = labels != IGNORE
        logits = self.generator(input_ids=input_ids, attention_mask=attention_mask).logits
        n_masked = masked.sum()
        generator_loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1),
                                         ignore_index=IGNORE, reduction="sum") / n_masked.clamp(min=1)
        original = torch.where(masked, labels, input_ids)
        with torch.no_grad():  # ELECTRA does not backpropagate through the sampling
            sampled = self._sample(logits[masked].float())
        corrupted = original.clone()
        corrupted[masked] = sampled
        targets = replaced_labels(original, corrupted, attention_mask)
        hidden = self.encoder(input_ids=corrupted, attention_mask=attention_mask).last_hidden_state
        rtd_logits = self.rtd_head(hidden).squeeze(-1).float()
        real = attention_mask.bool()
        discriminator_loss = F.binary_cross_entropy_with_logits(rtd_logits[real], targets[real])
        return ElectraOutput(generator_loss + self.weight * discriminator_loss, generator_loss, discriminator_loss,
                             _counts(rtd_logits.detach(), targets, real, n_masked))

    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[0] == 0:
            return torch.zeros(0, dtype=torch.long, device=logits.device)
        draws = None
        if not self.training:
            if self._eval_draws is None:
                self._eval_draws = torch.Generator(device=logits.device).manual_seed(self.seed)
            draws = self._eval_draws
        return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=draws).squeeze(-1)


def replaced_labels(original: torch.Tensor, corrupted: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """1.0 where the discriminator's input differs from the text, else 0.0 (a sampled token equal to
    the original counts as original); padding is 0.0 and left out of the loss by the caller."""
    return ((corrupted != original) & attention_mask.bool()).float()


def _counts(logits: torch.Tensor, targets: torch.Tensor, real: torch.Tensor, n_masked: torch.Tensor) -> dict:
    said, truth = (logits > 0)[real], targets[real].bool()
    return {"masked": n_masked, "tokens": real.sum(), "replaced": truth.sum(), "correct": (said == truth).sum(),
            "true_pos": (said & truth).sum(), "false_pos": (said & ~truth).sum(), "false_neg": (~said & truth).sum()}


def measures(weight: float) -> Measures:
    """The loop's figures for ELECTRA: the held-out generator perplexity and the discriminator's
    replaced-token detection (accuracy, F1 on "replaced"), and each logged batch's two losses."""
    return Measures(_tally, partial(_summary, weight=weight), _train_figures)


def _tally(batch: dict, out: ElectraOutput) -> dict:
    return {"generator_loss_sum": out.generator_loss.detach() * out.counts["masked"],
            "rtd_loss_sum": out.discriminator_loss.detach() * out.counts["tokens"], **out.counts}


def _summary(sums: dict, weight: float) -> dict:
    tokens, tp, fp, fn = sums["tokens"], sums["true_pos"], sums["false_pos"], sums["false_neg"]
    generator = sums["generator_loss_sum"] / sums["masked"] if sums["masked"] else float("nan")
    rtd = sums["rtd_loss_sum"] / tokens if tokens else float("nan")
    return {"eval_loss": generator + weight * rtd, "eval_generator_loss": generator,
            "eval_generator_perplexity": math.exp(min(generator, 50.0)), "eval_rtd_loss": rtd,
            "eval_rtd_accuracy": sums["correct"] / tokens if tokens else float("nan"),
            "eval_rtd_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            "eval_replaced_share": sums["replaced"] / tokens if tokens else float("nan")}


def _train_figures(out: ElectraOutput) -> dict:
    c = out.counts
    return {"generator_loss": out.generator_loss.item(), "discriminator_loss": out.discriminator_loss.item(),
            "replaced_accuracy": (c["correct"] / c["tokens"].clamp(min=1)).item(),
            "replaced_share": (c["replaced"] / c["tokens"].clamp(min=1)).item()}
