"""Length-grouped training batches and length-sorted evaluation (orchestrator/data/batching.py)."""

import numpy as np
import torch

from orchestrator.data.batching import LengthGroupedBatches, by_length, restore_order


def _padded_tokens(batches, lengths):
    return sum(max(lengths[i] for i in b) * len(b) for b in batches)


def test_every_row_once_per_epoch_longest_first_and_far_less_padding_than_shuffling():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 129, size=1000).tolist()
    sampler = LengthGroupedBatches(lengths, 16, torch.Generator().manual_seed(1))
    first, second = list(sampler), list(sampler)
    for epoch in (first, second):
        assert sorted(i for b in epoch for i in b) == list(range(1000))
        assert sorted(len(b) for b in epoch) == [8] + [16] * 62 and len(sampler) == 63
        assert max(lengths) in [lengths[i] for i in epoch[0]]  # an out-of-memory shows at step 1
    assert first != second  # a new grouping and order every epoch
    shuffled = torch.randperm(1000, generator=torch.Generator().manual_seed(1)).tolist()
    plain = [shuffled[i:i + 16] for i in range(0, 1000, 16)]
    assert _padded_tokens(first, lengths) < 0.75 * _padded_tokens(plain, lengths)
    # Batches are not simply sorted: their order is shuffled.
    maxima = [max(lengths[i] for i in b) for b in first[1:]]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_the_same_seed_gives_the_same_batches():
    lengths = list(range(1, 200))
    a = list(LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(3)))
    b = list(LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(3)))
    assert a == b
    assert list(LengthGroupedBatches([], 8, torch.Generator())) == []


def test_outputs_in_length_order_go_back_to_the_rows_order():
    lengths = [3, 9, 1, 9, 5]
    order = by_length(lengths)
    assert order.tolist() == [1, 3, 4, 0, 2]  # longest first, ties in row order
    rows = np.arange(5)[:, None] * np.ones((1, 2))  # row i's output is i
    np.testing.assert_array_equal(restore_order(rows[order], order), rows)
    tokens = [np.full(n, i) for i, n in enumerate(lengths)]  # per-token outputs, one array per row
    back = restore_order([tokens[i] for i in order], order)
    assert all(np.array_equal(b, t) for b, t in zip(back, tokens))
