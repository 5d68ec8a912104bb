"""Masking: token by token, or whole words whose Chinese boundaries come from jieba."""

from __future__ import annotations

import torch

from orchestrator.training.pretrain.masking import MaskingCollator, encode, word_offsets
from orchestrator.training.pretrain.scratch import train_tokenizer

TEXTS = ["这家酒店的服务很好，房间也干净。", "服务很好 good value", "房间太小了，不推荐。"] * 40


def test_chinese_characters_get_a_gap_at_each_word_boundary():
    text = "服务很好"  # jieba: 服务 / 很 / 好
    moved = word_offsets(text, [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (0, 0)])
    starts_word = [i for i in range(2, 5) if moved[i][0] != moved[i - 1][1]]
    assert moved[1][1] == moved[2][0]  # 服 and 务: one word
    assert starts_word == [3, 4]  # 很 and 好 each start a word


def test_whole_word_masking_masks_every_character_of_a_word_together(tmp_path):
    tok = train_tokenizer(TEXTS, 200, tmp_path / "tok")
    assert tok.tokenize("服务很好")[:2] == ["服", "务"]  # character-level for Chinese
    rows = encode(TEXTS[:3] * 20, tok, 32, whole_words=True)
    batch = MaskingCollator(tok, 0.3, whole_words=True, seed=3)(rows)
    ids = tok.convert_tokens_to_ids(["服", "务"])
    pairs = 0
    for row, labels in zip(rows, batch["labels"]):
        tokens = row["input_ids"]
        for i in range(len(tokens) - 1):
            if tokens[i:i + 2] == ids:  # 服务, one jieba word: both masked or neither
                pairs += 1
                assert (labels[i] != -100) == (labels[i + 1] != -100)
    assert pairs > 20
    masked = (batch["labels"] != -100).float().mean().item()
    assert 0.05 < masked < 0.6


def test_token_masking_masks_about_the_share_asked_and_never_special_tokens(tmp_path):
    tok = train_tokenizer(TEXTS, 200, tmp_path / "tok")
    rows = encode(TEXTS, tok, 32, whole_words=False)
    batch = MaskingCollator(tok, 0.15, whole_words=False)(rows)
    labels, real = batch["labels"], batch["attention_mask"].bool()
    special = torch.isin(torch.tensor([r["input_ids"] + [0] * (labels.shape[1] - len(r["input_ids"]))
                                       for r in rows]), torch.tensor(tok.all_special_ids))
    assert not ((labels != -100) & special).any()
    share = ((labels != -100) & real).sum().item() / real.sum().item()
    assert 0.08 < share < 0.25


def test_a_seeded_collator_repeats_its_masks(tmp_path):
    tok = train_tokenizer(TEXTS, 200, tmp_path / "tok")
    rows = encode(TEXTS[:8], tok, 32, whole_words=True)
    first = MaskingCollator(tok, 0.3, True, seed=7)(rows)
    again = MaskingCollator(tok, 0.3, True, seed=7)(rows)
    other = MaskingCollator(tok, 0.3, True, seed=8)(rows)
    assert torch.equal(first["input_ids"], again["input_ids"])
    assert not torch.equal(first["input_ids"], other["input_ids"])
