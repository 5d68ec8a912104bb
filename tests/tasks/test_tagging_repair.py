"""Repairs name each changed tag the way seqeval's chunk rules see it (tagging.py keeps no copy)."""

from __future__ import annotations

import random

import pytest
from seqeval.metrics.sequence_labeling import start_of_chunk

from orchestrator.tasks.token_classification import tagging

POOLS = {
    "BIO": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
    "BIOES": ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"],
    "BMES": ["B", "M", "E", "S"],
}


def _prefix_and_type(tag: str) -> tuple[str, str]:
    prefix, type_ = tagging.split_tag(tag)
    return ("I" if prefix == "M" else prefix), type_


@pytest.mark.parametrize("scheme", sorted(POOLS))
def test_orphan_means_seqeval_starts_an_entity_on_a_continuing_tag(scheme):
    rng = random.Random(0)
    for _ in range(500):
        tags = rng.choices(POOLS[scheme], k=rng.randint(0, 10))
        _, changed = tagging.repair(tags, scheme)
        for i, kind in changed:
            prev = _prefix_and_type(tags[i - 1]) if i else ("O", tagging.NO_TYPE)
            cur = _prefix_and_type(tags[i])
            orphan = cur[0] in ("I", "E") and start_of_chunk(prev[0], cur[0], prev[1], cur[1])
            assert kind == ("orphan" if orphan else "unclosed"), (tags, i)


def test_m_is_read_as_i():
    assert tagging.read_spans(["B", "M", "M", "E", "M", "E"]) == [("_", 0, 4), ("_", 4, 6)]
