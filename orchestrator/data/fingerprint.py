"""What a study's data came from, as a fingerprint: the files' contents and every setting that
shapes the splits (columns, split sizes, seed, row cap, task).

Everything a study caches (saved splits, tokenized sets) lives under a folder named by this
fingerprint, so changed input is never served stale; and a study records it, so re-running a
study on different data stops with a message that says what changed (`differences`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from orchestrator.config.schema import DataConfig

CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def describe(cfg: DataConfig, task: str, sources: dict[str, dict], extra: dict | None = None) -> dict:
    """The record of where a study's data came from. `sources`: split -> {location, sha256} for
    files, or {hub, config, fingerprint} for a hub dataset; `extra`: the task's own settings that
    shape the examples (e.g. the label separator)."""
    settings = {"text_column": cfg.text_column, "label_column": cfg.label_column, "delimiter": cfg.delimiter,
                "max_train_rows": cfg.max_train_rows, "seed": cfg.seed, "task": task, **(extra or {})}
    # Split sizes matter only for the splits carved from train.
    if "validation" not in sources:
        settings["validation_size"] = cfg.validation_size
    if "test" not in sources:
        settings["test_size"] = cfg.test_size
    return {"sources": sources, "settings": settings}


def digest(record: dict) -> str:
    """16 hex digits over contents and settings; a file's location does not count, its bytes do."""
    contents = {split: {k: v for k, v in s.items() if k != "location"} for split, s in record["sources"].items()}
    text = json.dumps({"sources": contents, "settings": record["settings"]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(old: dict, new: dict) -> list[str]:
    """What changed between two records, one phrase each, in the user's terms."""
    out = []
    splits = sorted(set(old["sources"]) | set(new["sources"]))
    for split in splits:
        a, b = old["sources"].get(split), new["sources"].get(split)
        if a is None:
            out.append(f"data.{split} is new ({_where(b)})")
        elif b is None:
            out.append(f"data.{split} ({_where(a)}) is no longer given")
        elif {k: v for k, v in a.items() if k != "location"} != {k: v for k, v in b.items() if k != "location"}:
            moved = "" if a.get("location") == b.get("location") else f", now {_where(b)}"
            out.append(f"the content of data.{split} ({_where(a)}{moved}) changed")
    keys = sorted(set(old["settings"]) | set(new["settings"]))
    for key in keys:
        a, b = old["settings"].get(key), new["settings"].get(key)
        if a != b:
            out.append(f"{'task' if key == 'task' else 'data.' + key}: {a!r} -> {b!r}")
    return out


def _where(source: dict) -> str:
    return source.get("location") or f"hub {source.get('hub')}"
