"""Tokenized splits, computed once per (data fingerprint, tokenizer fingerprint, max length, task encoding).

An in-process cache hands the same object to every use in a process; with `cache_dir`, the result
is saved under a folder named by that key, so every trial process memory-maps the same arrays
and a changed tokenizer or changed data is never served an old tokenization. Padding is dynamic
(per batch, in the collator).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from datasets import DatasetDict, load_from_disk

from orchestrator.data.splits import Splits

# In this process, by (key, cache folder): a folder that lacks an entry gets it written, even where
# the same content was tokenized for another folder before (trial processes read the folder).
_TOKENIZED: dict[tuple[str, str | None], DatasetDict] = {}


def tokenizer_fingerprint(tokenizer) -> str:
    """Content, not name: a fast tokenizer's whole definition (vocabulary, normalizer, special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        text = repr(sorted(tokenizer.get_vocab().items()))
    else:
        definition = json.loads(backend.to_str())
        # Truncation and padding are per-call settings the tokenizer remembers, not its content.
        definition.pop("truncation", None)
        definition.pop("padding", None)
        text = json.dumps(definition, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tokenize(splits: Splits, tokenizer, max_length: int, cache_dir: str | Path | None, task) -> DatasetDict:
    """Encoded splits (`input_ids`, `attention_mask`, `labels` and the task's metadata), computed once
    per key. `task`: the `orchestrator.tasks.Task` the splits were made for (`tasks.task_of(splits)`)."""
    text = f"{splits.digest}|{tokenizer_fingerprint(tokenizer)}|{max_length}|{task.encoding_key()}"
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = Path(cache_dir) / f"tokenized-{max_length}-{key}" if cache_dir else None
    memo = (key, str(folder) if folder else None)
    if memo in _TOKENIZED:
        return _TOKENIZED[memo]
    if folder is not None and (folder / "dataset_dict.json").exists():
        _TOKENIZED[memo] = load_from_disk(str(folder))
        return _TOKENIZED[memo]

    tokenized = DatasetDict({split: task.encode(examples, tokenizer, max_length)
                             for split, examples in splits.data.items()})
    if folder is not None:
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        try:
            tokenized.save_to_disk(str(tmp))
            os.replace(tmp, folder)  # atomic: a reader never sees half a dataset
        except OSError:  # another trial process saved the same tokenization first
            pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # also after an interrupt mid-save
        tokenized = load_from_disk(str(folder))
    _TOKENIZED[memo] = tokenized
    return tokenized
