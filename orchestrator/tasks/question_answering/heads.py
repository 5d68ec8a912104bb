"""The question_answering model: `SpanExtractor`, start and end logits on every token.

The encoder's final hidden states, dropout, and one `nn.Linear(hidden, 2)`: (batch, tokens, 2)
logits, [..., 0] for the answer's first token and [..., 1] for its last (position 0, [CLS], for
"no answer here"). It is a `TokenClassifier` with two fixed outputs, so the fine-tuning
strategies, `forward` (the ONNX export traces it as is) and the on-disk format are shared.
"""

from __future__ import annotations

from torch import nn

from orchestrator.tasks.token_classification.heads import TokenClassifier

OUTPUTS = 2  # start, end


class SpanExtractor(TokenClassifier):
    def __init__(self, encoder: nn.Module, num_labels: int = OUTPUTS, head: str = "linear", dropout: float = 0.1,
                 mlp_hidden: int = 256):
        # `num_labels` is what the loop passes (the splits have no classes): a span has two ends.
        super().__init__(encoder, OUTPUTS, head, dropout, mlp_hidden)
