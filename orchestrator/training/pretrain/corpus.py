"""The text a pre-training reads: corpus files, or the experiment's training split, never its
validation or test rows. A fixed share is held out to measure perplexity on."""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import ExperimentConfig
from orchestrator.data import DataError, read_table
from orchestrator.data.read import as_text, check_scalars, is_missing, local_file

MAX_HELD_OUT = 2000  # enough texts for a steady perplexity; the rest trains


@dataclass
class Corpus:
    train: list[str]
    held_out: list[str]
    record: dict  # where the text came from: files and their digests, or the training split's fingerprint

    @property
    def digest(self) -> str:
        """16 hex digits over every text, in order, and the held-out split."""
        h = hashlib.sha256()
        for part in (self.train, self.held_out):
            h.update(json.dumps(part, ensure_ascii=False).encode())
        return h.hexdigest()[:16]


def load_corpus(cfg: ExperimentConfig) -> Corpus:
    """The corpus of `cfg.pretrain`, split into training and held-out texts. Raises `DataError`
    naming the file or setting when there is no usable text."""
    p = cfg.pretrain
    if p.corpus:
        texts, record = [], {"files": []}
        for i, location in enumerate(p.corpus):
            key = f"pretrain.corpus[{i}]"
            found = _read_file(location, key, p.text_column or cfg.data.text_column, cfg.data.delimiter)
            if not found:
                raise DataError(f"{key}: {location} holds no text (every line or cell is empty)")
            texts += found
            record["files"].append({"file": location, "texts": len(found)})
    else:
        texts, record = _training_split(cfg)
    rng = random.Random(p.seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    n_held = min(MAX_HELD_OUT, max(1, round(len(texts) * p.eval_share)))
    if len(texts) - n_held < 1:
        raise DataError(f"pretrain: {len(texts)} text(s) leave nothing to train on after holding out "
                        f"{n_held} for perplexity; give a larger pretrain.corpus")
    held = sorted(order[:n_held])
    kept = sorted(order[n_held:])
    return Corpus([texts[i] for i in kept], [texts[i] for i in held], record)


def _read_file(location: str, key: str, column: str, delimiter: str | None) -> list[str]:
    path = local_file(location, key)
    if path.suffix.lower() == ".txt":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise DataError(f"{key}: {location} is not UTF-8 text ({e.reason} at byte {e.start}); save it as "
                            f"UTF-8") from None
        return [line.strip() for line in lines if line.strip()]
    frame = read_table(location, key, delimiter)
    if column not in frame.columns:
        raise DataError(f"{key}: {location} has no column {column!r} (columns: {', '.join(map(str, frame.columns))}); "
                        f"set pretrain.text_column")
    check_scalars(frame[column], f"{key}: {location}", column)
    texts = [as_text(v) for v in frame[column]]
    return [t.strip() for t in texts if not is_missing(t) and t.strip()]


def _training_split(cfg: ExperimentConfig) -> tuple[list[str], dict]:
    """The texts of the training split exactly as the search carves it (same files, same seed)."""
    from orchestrator.tasks import get_task

    task = get_task(cfg.task, cfg)
    splits = task.load_splits(cfg.data)
    train = splits.data["train"]
    if "text" in train.column_names:
        texts = [t for t in train["text"] if t and t.strip()]
        if "text_pair" in train.column_names:  # sentence pairs: both sides are text (a premise once, not per pair)
            texts = list(dict.fromkeys(texts + [t for t in train["text_pair"] if t and t.strip()]))
    elif "context" in train.column_names:  # question_answering: each context once, by sentence, and the questions
        texts = [s for c in dict.fromkeys(train["context"]) for s in _sentences(c)]
        texts += [q.strip() for q in train["question"] if q and q.strip()]
    else:  # token_classification: the tokens of each row, joined as they were written
        texts = [_join(tokens) for tokens in train["tokens"]]
    return texts, {"training_split": splits.digest, "data": str(Path(cfg.data.train or cfg.data.hub or ""))}


def _sentences(text: str) -> list[str]:
    # A context is hundreds of tokens, more than pretrain.max_length keeps: cut after each sentence's end.
    return [s.strip() for s in re.split(r"(?<=[。！？])|(?<=[.!?])\s+", text) if s.strip()]


def _join(tokens: list[str]) -> str:
    # Chinese characters are written without spaces; words of other scripts with them.
    return "".join(tokens) if all(len(t) == 1 and not t.isascii() for t in tokens) else " ".join(tokens)
