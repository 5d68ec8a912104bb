"""Masking for the masked-language-model objective: `transformers`' `DataCollatorForLanguageModeling`,
token by token, or whole words.

Whole-word masking in `transformers` takes word boundaries from the tokens' character offsets: a
token that starts where the previous one ended continues its word. Chinese is written without
spaces, so every sentence would be one word. `word_offsets` therefore shifts each token's offsets
by the number of words before it, as found by jieba, which opens a gap at every word boundary.

Why jieba and not spacy-pkuseg: jieba is pure Python with its dictionary inside the wheel, so it
installs on any platform and segments with no network; pkuseg's models are better on news text
but are a compiled extension whose pretrained models are fetched separately. Masking only needs
plausible boundaries, not a segmentation benchmark's best.
"""

from __future__ import annotations

import logging

import numpy as np

_jieba = None


def _segmenter():
    global _jieba
    if _jieba is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)  # it prints its dictionary loading to stderr
        _jieba = jieba
    return _jieba


def word_offsets(text: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """`offsets` (per token, into `text`) moved apart at jieba's word boundaries."""
    word_of_char = np.zeros(len(text) + 1, dtype=np.int64)
    start = 0
    for i, word in enumerate(_segmenter().cut(text)):
        word_of_char[start:start + len(word)] = i
        start += len(word)
    word_of_char[start:] = word_of_char[start - 1] if start else 0
    moved = []
    for s, e in offsets:
        if s == e:  # a special token: no text of its own
            moved.append((s, e))
            continue
        moved.append((int(s + word_of_char[s]), int(e + word_of_char[e - 1])))
    return moved


def encode(texts: list[str], tokenizer, max_length: int, whole_words: bool) -> list[dict]:
    """Token ids (and, for whole-word masking, word-aware offsets) for each text."""
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_special_tokens_mask=True,
                    return_offsets_mapping=whole_words, return_token_type_ids=False)
    rows = []
    for i, text in enumerate(texts):
        row = {"input_ids": enc["input_ids"][i], "special_tokens_mask": enc["special_tokens_mask"][i]}
        if whole_words:
            row["offset_mapping"] = word_offsets(text, enc["offset_mapping"][i])
        rows.append(row)
    return rows


class MaskingCollator:
    """Pads a batch of `encode` rows and masks it; `seed` fixes the masks (held-out perplexity)."""

    def __init__(self, tokenizer, mlm_probability: float, whole_words: bool, seed: int | None = None):
        from transformers import DataCollatorForLanguageModeling

        # Whole words are always replaced by [MASK] (transformers does not mix in random tokens there).
        replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if whole_words else {}
        self.inner = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability,
                                                     whole_word_mask=whole_words, seed=seed, **replace)
        self.pad_id = tokenizer.pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        batch = {"input_ids": torch.full((len(rows), width), self.pad_id, dtype=torch.long),
                 "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
                 "special_tokens_mask": torch.ones((len(rows), width), dtype=torch.long)}
        whole = "offset_mapping" in rows[0]
        if whole:
            batch["offset_mapping"] = torch.zeros((len(rows), width, 2), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            batch["input_ids"][i, :n] = torch.tensor(r["input_ids"])
            batch["attention_mask"][i, :n] = 1
            batch["special_tokens_mask"][i, :n] = torch.tensor(r["special_tokens_mask"])
            if whole:
                batch["offset_mapping"][i, :n] = torch.tensor(r["offset_mapping"])
        if self.inner.seed is not None and self.inner.generator is None:
            self.inner.create_rng("pt")  # what `torch_call` would do; masks then repeat from the seed
        ids, labels = self.inner.torch_mask_tokens(batch["input_ids"], special_tokens_mask=batch["special_tokens_mask"],
                                                   offset_mapping=batch.get("offset_mapping"))
        return {"input_ids": ids, "attention_mask": batch["attention_mask"], "labels": labels}
