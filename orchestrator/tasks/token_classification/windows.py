"""Words to subword rows and back: label alignment, overlapping windows, merging.

A sentence is tokenized word by word (a fast tokenizer's `word_ids`); the first subword of each
word carries the word's tag, every other position (later subwords, special tokens) -100, the
label cross-entropy ignores. A sentence longer than `max_length` is cut into windows that share
`overlap` subwords with their neighbours instead of being truncated, so every word is predicted.
Each word is then read from the window where it sits farthest from an edge: there the encoder
saw the most context on both sides.

Per encoded row, `example` is the sentence's index and `word_index` per position the index of
the word whose first subword is there, or -1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IGNORE = -100  # the label cross-entropy skips


class WindowError(ValueError):
    """Windows that cannot be cut with these settings; the message names the setting."""


def plan(n: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) bounds of windows of at most `size` positions over `n`, neighbours sharing at
    least `overlap`; the last window ends at `n` (it is moved back rather than left short)."""
    if n <= size:
        return [(0, n)]
    if overlap >= size:
        raise WindowError(f"training.window_overlap ({overlap}) must be smaller than the {size} subword "
                          f"tokens a window holds (training.max_length less the special tokens)")
    stride = size - overlap
    starts = list(range(0, n - size, stride)) + [n - size]
    return [(s, s + size) for s in starts]


def encode_words(sentences: Sequence[Sequence[str]], tokenizer, max_length: int, overlap: int,
                 tags: Sequence[Sequence[int]] | None = None) -> dict[str, list]:
    """Columns of the encoded rows (several per sentence when it needs windows)."""
    if not getattr(tokenizer, "is_fast", False):
        raise WindowError(f"token_classification needs a fast (Rust) tokenizer for its word alignment; "
                          f"{type(tokenizer).__name__} is not one. Use a model that ships tokenizer.json")
    # verbose=False: long sentences are expected here (they are cut into windows below).
    enc = tokenizer([list(s) for s in sentences], is_split_into_words=True, add_special_tokens=True,
                    verbose=False)
    has_types = "token_type_ids" in enc
    out = {"input_ids": [], "attention_mask": [], "example": [], "word_index": []}
    if has_types:
        out["token_type_ids"] = []
    if tags is not None:
        out["labels"] = []
    for i in range(len(sentences)):
        ids, word_ids = enc["input_ids"][i], enc.word_ids(i)
        types = enc["token_type_ids"][i] if has_types else None
        inside = [p for p, w in enumerate(word_ids) if w is not None]
        # Special tokens before the first word and after the last are repeated in every window.
        lo, hi = (inside[0], inside[-1] + 1) if inside else (len(ids), len(ids))
        first = [-1] * len(ids)
        for p in inside:
            if p == lo or word_ids[p - 1] != word_ids[p]:
                first[p] = word_ids[p]
        size = max_length - (len(ids) - (hi - lo))
        if size < 1:
            raise WindowError(f"training.max_length ({max_length}) leaves no room beside the tokenizer's "
                              f"{len(ids) - (hi - lo)} special tokens")
        for s, e in plan(hi - lo, size, overlap):
            keep = list(range(lo)) + list(range(lo + s, lo + e)) + list(range(hi, len(ids)))
            out["input_ids"].append([ids[p] for p in keep])
            out["attention_mask"].append([1] * len(keep))
            if has_types:
                out["token_type_ids"].append([types[p] for p in keep])
            out["example"].append(i)
            out["word_index"].append([first[p] for p in keep])
            if tags is not None:
                out["labels"].append([IGNORE if first[p] < 0 else int(tags[i][first[p]]) for p in keep])
    return out


def merge(rows: Sequence[np.ndarray], example: Sequence[int], word_index: Sequence[Sequence[int]],
          num_labels: int, fill: int) -> list[np.ndarray]:
    """Per sentence, (words, labels) probabilities from per-row logits: each word from the row where
    its first subword is farthest from the row's ends; a word without a subword (a space, a
    character the tokenizer drops) gets probability 1 on `fill`. A sentence's array ends at its
    last word that has a subword (`pad` adds the rest)."""
    if len(rows) != len(example):
        raise ValueError(f"{len(rows)} rows of logits for {len(example)} encoded rows")
    best: list[dict[int, tuple[int, np.ndarray]]] = [{} for _ in range(max(example, default=-1) + 1)]
    for row, ex, index in zip(rows, example, word_index):
        row = np.asarray(row)
        if len(row) != len(index):
            raise ValueError(f"a row of {len(row)} logits for an encoded row of {len(index)} tokens "
                             f"(trim each row to its attention mask)")
        found = best[ex]
        for p, w in enumerate(index):
            if w < 0:
                continue
            distance = min(p, len(index) - 1 - p)
            if w not in found or distance > found[w][0]:
                found[w] = (distance, row[p])
    out = []
    for found in best:
        probs = np.zeros((max(found, default=-1) + 1, num_labels), dtype=np.float32)
        probs[:, fill] = 1.0
        for w, (_, logits) in found.items():
            z = np.asarray(logits, dtype=np.float64)
            z = np.exp(z - z.max())
            probs[w] = z / z.sum()
        out.append(probs)
    return out


def pad(probs: np.ndarray, n_words: int, fill: int) -> np.ndarray:
    """`probs` for exactly `n_words` words: trailing words without a subword get `fill`."""
    if len(probs) >= n_words:
        return probs[:n_words]
    extra = np.zeros((n_words - len(probs), probs.shape[1]), dtype=probs.dtype)
    extra[:, fill] = 1.0
    return np.concatenate([probs, extra])
