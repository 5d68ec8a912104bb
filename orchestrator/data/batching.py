"""Batches of texts of similar length, so dynamic padding pads little.

Training: `LengthGroupedBatches` shuffles the rows, sorts them by length within mega-batches
(transformers' `get_length_grouped_indices`, the Trainer's `group_by_length`), cuts batches and
shuffles the batches, so every epoch sees a new order and no batch mixes a 10-token text with a
128-token one. The batch holding the longest row comes first: an out-of-memory shows at step 1,
not at the end of an epoch. Evaluation: `by_length` orders rows longest first; the caller puts
the outputs back in the split's order.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


class LengthGroupedBatches(Sampler[list[int]]):
    """A batch sampler: lists of row indices, `batch_size` rows each (the last may be short)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator):
        self.lengths, self.batch_size, self.generator = list(lengths), batch_size, generator

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if not self.lengths:
            return iter(())
        order = get_length_grouped_indices(self.lengths, self.batch_size, generator=self.generator)
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rest = torch.randperm(len(batches) - 1, generator=self.generator).tolist()
        return iter([batches[0], *(batches[1 + i] for i in rest)])


def by_length(lengths: Sequence[int]) -> np.ndarray:
    """Row indices, longest first (stable among equal lengths)."""
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")


def restore_order(outputs, order: np.ndarray):
    """Outputs computed over rows in `order` (an array, or a list with one entry per row), back in
    the rows' original order."""
    if isinstance(outputs, np.ndarray):
        restored = np.empty_like(outputs)
        restored[order] = outputs
        return restored
    restored = [None] * len(outputs)
    for position, row in enumerate(order):
        restored[row] = outputs[position]
    return restored


def lengths_of(dataset) -> list[int]:
    """Tokens per row of an encoded split (its attention mask's length)."""
    return [len(ids) for ids in dataset["input_ids"]]
