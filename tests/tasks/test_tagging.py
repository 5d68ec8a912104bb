"""Tag schemes, how tags are read (as seqeval reads them), repairs, and the scores."""

from __future__ import annotations

import random

import pytest

from orchestrator.tasks.token_classification import tagging


@pytest.mark.parametrize("tags, scheme", [
    (["O", "B-PER", "I-PER"], "BIO"),
    (["O"], "BIO"),
    (["O", "B-PER", "E-PER", "S-LOC"], "BIOES"),
    (["O", "S-LOC"], "BIOES"),
    (["B", "M", "E", "S"], "BMES"),
    (["S"], "BMES"),
    (["B", "I", "O"], "BIO"),  # untyped BIO is not segmentation
])
def test_scheme_detection(tags, scheme):
    assert tagging.detect_scheme(tags) == scheme


@pytest.mark.parametrize("tag, scheme, ok", [
    ("B-PER", "BIO", True), ("I-PER.NAM", "BIO", True), ("O", "BIO", True),
    ("E-PER", "BIO", False), ("PER", "BIO", False), ("B-", "BIO", False), ("B", "BIO", False),
    ("S-LOC", "BIOES", True), ("M-LOC", "BIOES", False),
    ("M", "BMES", True), ("O", "BMES", False), ("B-PER", "BMES", False), ("X", "BMES", False),
])
def test_tags_are_checked_against_the_scheme(tag, scheme, ok):
    assert tagging.fits(tag, scheme) is ok


def test_spans_are_read_exactly_as_seqeval_reads_them():
    from seqeval.metrics.sequence_labeling import get_entities

    rng = random.Random(0)
    pool = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
    for _ in range(500):
        tags = rng.choices(pool, k=rng.randint(0, 12))
        assert tagging.read_spans(tags) == [(t, s, e + 1) for t, s, e in get_entities(tags)], tags


def test_orphan_i_is_repaired_to_the_entity_start_seqeval_reads():
    tags = ["O", "I-PER", "I-PER", "O", "B-LOC", "I-ORG"]
    fixed, changed = tagging.repair(tags, "BIO")
    assert fixed == ["O", "B-PER", "I-PER", "O", "B-LOC", "B-ORG"]
    assert changed == [(1, "orphan"), (5, "orphan")]
    assert tagging.read_spans(fixed) == tagging.read_spans(tags)  # the reading does not change
    assert tagging.repair(fixed, "BIO") == (fixed, [])


def test_bioes_repairs_orphans_and_unclosed_entities():
    fixed, changed = tagging.repair(["B-PER", "O", "E-LOC", "B-ORG", "I-ORG", "E-ORG"], "BIOES")
    assert fixed == ["S-PER", "O", "S-LOC", "B-ORG", "I-ORG", "E-ORG"]
    assert changed == [(0, "unclosed"), (2, "orphan")]


def test_bmes_repairs():
    fixed, changed = tagging.repair(["M", "E", "B", "S", "B"], "BMES")
    assert fixed == ["B", "E", "S", "S", "S"]
    assert changed == [(0, "orphan"), (2, "unclosed"), (4, "unclosed")]


def test_words_from_bmes():
    # 共同 / 创造 / 美好 / 的
    assert tagging.words(["B", "E", "B", "E", "B", "E", "S"]) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert tagging.words(["B", "M", "M", "E"]) == [(0, 4)]


def test_sighan_word_scores_on_a_hand_case():
    gold = [["B", "E", "B", "E", "B", "E"]]  # 共同 / 创造 / 美好
    pred = [["B", "E", "S", "S", "B", "E"]]  # 共同 / 创 / 造 / 美好
    s = tagging.segmentation_scores(gold, pred)
    assert s["precision"] == pytest.approx(2 / 4)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    assert s["support"] == 3


def test_sighan_scores_add_up_over_sentences():
    gold = [["S", "S"], ["B", "E"]]
    pred = [["S", "S"], ["S", "S"]]  # 2 of 2 right, then 0 of 2 predicted right
    s = tagging.segmentation_scores(gold, pred)
    assert (s["precision"], s["recall"]) == (pytest.approx(2 / 4), pytest.approx(2 / 3))


def test_entity_scores_with_seqeval_on_a_hand_case():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-PER", "I-PER"]]
    report = tagging.entity_report(gold, pred, "BIO", ["LOC", "ORG", "PER", "GPE"])
    # Gold: PER, LOC, PER; predicted: PER, ORG, PER (one token too long). Right: the first PER only.
    assert report["micro"]["precision"] == pytest.approx(1 / 3)
    assert report["micro"]["recall"] == pytest.approx(1 / 3)
    assert report["PER"]["support"] == 2
    assert report["PER"]["f1"] == pytest.approx(2 * 0.5 * 0.5 / 1.0)
    assert report["LOC"]["f1"] == 0.0 and report["LOC"]["support"] == 1
    assert report["GPE"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}  # asked for, never seen


def test_orphan_prediction_counts_as_an_entity_in_bio():
    # seqeval's default mode: I-PER after O starts an entity.
    report = tagging.entity_report([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]], "BIO")
    assert report["micro"]["f1"] == 1.0


def test_bioes_is_scored_strictly():
    gold = [["B-PER", "E-PER", "O"]]
    assert tagging.entity_report(gold, [["B-PER", "E-PER", "O"]], "BIOES")["micro"]["f1"] == 1.0
    # Read leniently this would be the same entity; strict BIOES counts ill-formed predictions as none.
    assert tagging.entity_report(gold, [["B-PER", "I-PER", "O"]], "BIOES")["micro"]["f1"] == 0.0


def test_no_entities_anywhere_scores_zero_instead_of_failing():
    report = tagging.entity_report([["O", "O"]], [["O", "O"]], "BIO", ["PER"])
    assert report["micro"]["f1"] == 0.0 and report["PER"]["support"] == 0


def test_tag_sets_are_completed_with_the_outside_tag_first():
    assert tagging.tag_names(["O", "B-PER", "I-LOC"], "BIO") == ["O", "B-LOC", "B-PER", "I-LOC", "I-PER"]
    assert tagging.tag_names(["B-PER", "S-PER"], "BIOES") == ["O", "B-PER", "E-PER", "I-PER", "S-PER"]
    names = tagging.tag_names(["S"], "BMES")
    assert names[tagging.OUTSIDE] == "S" and sorted(names) == ["B", "E", "M", "S"]
    assert tagging.outside(names) == tagging.OUTSIDE == tagging.outside(["O", "B-X", "I-X"])
    assert tagging.scheme_of(names) == "BMES"
    assert tagging.entity_types(["O", "B-PER.NAM", "I-PER.NAM", "B-LOC", "I-LOC"]) == ["LOC", "PER.NAM"]


def test_tags_from_spans_round_trip():
    spans = [("PER", 0, 3), ("LOC", 4, 5)]
    for scheme in ("BIO", "BIOES"):
        assert tagging.read_spans(tagging.tags_from_spans(spans, 6, scheme)) == spans
    assert tagging.tags_from_spans(spans, 6, "BIOES") == ["B-PER", "I-PER", "E-PER", "O", "S-LOC", "O"]
