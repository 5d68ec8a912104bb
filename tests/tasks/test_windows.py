"""Subword alignment, windows over long sentences, and merging windows back into words."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.tasks.token_classification import windows
from orchestrator.tasks.token_classification.windows import IGNORE


def test_plan_covers_everything_with_the_overlap():
    bounds = windows.plan(300, 30, 8)
    assert bounds[0] == (0, 30) and bounds[-1] == (270, 300)
    assert all(e - s == 30 for s, e in bounds)
    for (s1, e1), (s2, _) in zip(bounds, bounds[1:]):
        assert s2 > s1 and e1 - s2 >= 8  # neighbours share at least the overlap
    assert set().union(*(range(s, e) for s, e in bounds)) == set(range(300))
    assert windows.plan(30, 30, 8) == [(0, 30)]
    assert windows.plan(0, 30, 8) == [(0, 0)]


def test_an_overlap_as_long_as_the_window_is_refused():
    with pytest.raises(windows.WindowError, match="window_overlap"):
        windows.plan(100, 10, 10)


def test_only_the_first_subword_of_a_word_carries_its_tag(zh_tokenizer):
    # "abc" is a + ##b + ##c in the test vocabulary; 我 and x are one subword each.
    out = windows.encode_words([["abc", "我", "x"]], zh_tokenizer, 32, 4, tags=[[1, 2, 3]])
    tokens = zh_tokenizer.convert_ids_to_tokens(out["input_ids"][0])
    assert tokens == ["[CLS]", "a", "##b", "##c", "我", "x", "[SEP]"]
    assert out["labels"] == [[IGNORE, 1, IGNORE, IGNORE, 2, 3, IGNORE]]
    assert out["word_index"] == [[-1, 0, -1, -1, 1, 2, -1]]
    assert out["example"] == [0]
    assert out["attention_mask"] == [[1] * 7]


def test_a_word_without_subwords_gets_no_position(zh_tokenizer):
    out = windows.encode_words([["我", " ", "们"]], zh_tokenizer, 32, 4, tags=[[1, 2, 3]])
    assert out["word_index"] == [[-1, 0, 2, -1]]
    assert out["labels"] == [[IGNORE, 1, 3, IGNORE]]


def test_a_long_sentence_is_cut_into_overlapping_windows_and_every_word_lands(zh_tokenizer):
    rng = np.random.default_rng(0)
    vocab = list("我们今天去北京上海广州")
    words = [vocab[i] for i in rng.integers(0, len(vocab), 300)]
    tags = [int(t) for t in rng.integers(0, 5, 300)]
    out = windows.encode_words([words, ["我"]], zh_tokenizer, 32, 8, tags=[tags, [4]])
    rows = [i for i, ex in enumerate(out["example"]) if ex == 0]
    assert len(rows) > 10 and out["example"][-1] == 1
    seen = set()
    for r in rows:
        ids, index, labels = out["input_ids"][r], out["word_index"][r], out["labels"][r]
        assert len(ids) <= 32
        assert zh_tokenizer.convert_ids_to_tokens([ids[0], ids[-1]]) == ["[CLS]", "[SEP]"]
        for w, label in zip(index, labels):
            if w >= 0:
                assert label == tags[w]
                seen.add(w)
    assert seen == set(range(300))
    for a, b in zip(rows, rows[1:]):  # neighbours share at least 8 words (one subword each here)
        shared = {w for w in out["word_index"][a] if w >= 0} & {w for w in out["word_index"][b] if w >= 0}
        assert len(shared) >= 8


def test_merge_reads_each_word_from_the_window_where_it_is_most_central():
    # Two rows of 7 positions ([CLS] w w w w w [SEP]) over words 0-7, sharing words 3 and 4.
    index_a = [-1, 0, 1, 2, 3, 4, -1]
    index_b = [-1, 3, 4, 5, 6, 7, -1]
    a = np.tile([5.0, 0.0, 0.0], (7, 1))  # window a says label 0 everywhere
    b = np.tile([0.0, 5.0, 0.0], (7, 1))  # window b says label 1
    (probs,) = windows.merge([a, b], [0, 0], [index_a, index_b], 3, fill=2)
    assert probs.shape == (8, 3)
    # word 3: a's position 4 (2 from an edge) beats b's position 1 (1 from an edge); word 4 the other way.
    assert probs.argmax(-1).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert np.allclose(probs.sum(-1), 1.0)
    assert probs[0, 0] == pytest.approx(np.exp(5) / (np.exp(5) + 2))


def test_merge_gives_words_without_a_position_the_fill_tag():
    (probs,) = windows.merge([np.zeros((4, 3))], [0], [[-1, 0, 2, -1]], 3, fill=0)
    assert probs.shape == (3, 3)
    assert probs[1].tolist() == [1.0, 0.0, 0.0]
    assert np.allclose(probs[0], 1 / 3)
    padded = windows.pad(probs, 5, 0)
    assert padded.shape == (5, 3) and padded[4].tolist() == [1.0, 0.0, 0.0]


def test_merge_refuses_rows_not_trimmed_to_their_tokens():
    with pytest.raises(ValueError, match="attention mask"):
        windows.merge([np.zeros((6, 3))], [0], [[-1, 0, 1, -1]], 3, fill=0)


def test_a_slow_tokenizer_is_refused_with_a_reason():
    class Slow:
        is_fast = False

    with pytest.raises(windows.WindowError, match="fast"):
        windows.encode_words([["我"]], Slow(), 32, 4)
