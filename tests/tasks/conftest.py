"""Fixtures for the task tests: a tiny character-level Chinese BERT and synthetic tagged sentences.

Nothing is downloaded: the vocabulary is written here (every CJK character the sentences use,
plus a few Latin letters with their `##` continuations, so an English word can take several
subwords), and the model is saved with `save_pretrained` like a real local model.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

PEOPLE = ["张三", "李四", "王小明", "赵六"]
PLACES = ["北京", "上海", "广州", "深圳市"]
FILLER = list("我们今天去了吃饭很好的是在和说他她也都要会看")
SEGMENTED = ["共同", "创造", "美好", "的", "新", "世纪", "我们", "今天", "北京", "上海", "很", "好"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"
CHARACTERS = sorted(set("".join(PEOPLE + PLACES + FILLER + SEGMENTED)) | set("创造美好世纪共同新我们"))


def tagged_sentence(rng: random.Random) -> dict:
    """A character-level BIO sentence with a PER and a LOC entity among filler characters."""
    tokens, tags = [], []
    parts = [("PER", rng.choice(PEOPLE)), ("LOC", rng.choice(PLACES))]
    rng.shuffle(parts)
    for kind, name in parts:
        filler = rng.choices(FILLER, k=rng.randint(1, 4))
        tokens += filler + list(name)
        tags += ["O"] * len(filler) + [f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1)
    return {"tokens": tokens, "tags": tags}


def segmented_sentence(rng: random.Random) -> dict:
    """A character-level BMES sentence of words from `SEGMENTED`."""
    tokens, tags = [], []
    for word in rng.choices(SEGMENTED, k=rng.randint(3, 7)):
        tokens += list(word)
        tags += ["S"] if len(word) == 1 else ["B"] + ["M"] * (len(word) - 2) + ["E"]
    return {"tokens": tokens, "tags": tags}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def ner_dir(tmp_path) -> Path:
    """train / validation / test JSONL of synthetic character-level BIO sentences."""
    rng = random.Random(0)
    d = tmp_path / "ner"
    for split, n in (("train", 40), ("validation", 12), ("test", 12)):
        write_jsonl(d / f"{split}.jsonl", [tagged_sentence(rng) for _ in range(n)])
    return d


@pytest.fixture(scope="session")
def tiny_zh_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT over a character vocabulary (CJK characters split one by one by
    BertPreTokenizer), with a fast tokenizer, saved as safetensors."""
    from conftest import save_tiny_bert
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    out = tmp_path_factory.mktemp("tiny-zh-bert")
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = special + CHARACTERS + list(LETTERS) + [f"##{c}" for c in LETTERS]
    tok = Tokenizer(models.WordPiece({p: i for i, p in enumerate(pieces)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    save_tiny_bert(tok, out)
    return out


@pytest.fixture(scope="session")
def zh_tokenizer(tiny_zh_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_zh_model))
