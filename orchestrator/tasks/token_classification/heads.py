"""A prediction per token: `TokenClassifier`, the token_classification task's model.

Heads (`schema.TOKEN_HEADS`):
  linear  dropout + linear on every token's final hidden state
  mlp     the same two-layer MLP as `TextClassifier`'s, then linear, on every token

It is a `TextClassifier` with another `forward`: the constructor, the fine-tuning strategies and
the on-disk format (`save`, `load`) are shared, so a token model is saved and loaded the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from orchestrator.config.schema import TOKEN_HEADS
from orchestrator.models.heads import HeadError, TextClassifier


class TokenClassifier(TextClassifier):
    def __init__(self, encoder: nn.Module, num_labels: int, head: str = "linear", dropout: float = 0.1,
                 mlp_hidden: int = 256):
        if head not in TOKEN_HEADS:
            raise HeadError(f"head {head!r} is not a token head; use one of {', '.join(TOKEN_HEADS)}")
        # TextClassifier builds dropout + `classifier` for any head but cls_mean/pooler, `mlp` for mlp,
        # and drops the unused pooler.
        super().__init__(encoder, num_labels, head, dropout, mlp_hidden)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        """(batch, tokens, labels) logits."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        with torch.set_grad_enabled(self.encoder_trainable and torch.is_grad_enabled()):
            states = self.encoder(**kwargs).last_hidden_state
        feature = self.dropout(states)
        if self.head == "mlp":
            feature = self.mlp(feature)
        return self.classifier(feature)
