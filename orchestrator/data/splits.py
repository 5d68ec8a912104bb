"""Train / validation / test splits from the configured files (or a hub dataset).

The task (`orchestrator.tasks`) decides what a label is and how to split; the pieces every task
uses live here: reading the configured columns of every split (`read_columns`), dropping empty
rows, ordering label names, carving missing splits (`carve`), and saving the result once per
study under a folder named by the fingerprint of what it came from (`fingerprint.py`), for trial
processes to memory-map.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from datasets import ClassLabel, Dataset, DatasetDict, Sequence, load_dataset, load_from_disk

from orchestrator.config.schema import DataConfig
from orchestrator.data import fingerprint
from orchestrator.data.read import DataError, local_file, read_table

log = logging.getLogger(__name__)

# Above this share of empty texts in a split, the data is more likely broken than sloppy.
MAX_EMPTY_SHARE = 0.1
INTEGER = re.compile(r"-?[0-9]+")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses
SPLITS = ("train", "validation", "test")


@dataclass
class Splits:
    data: DatasetDict  # train / validation / test, with the task's columns (e.g. `text`, `label`)
    label_names: list[str]
    record: dict = field(default_factory=dict)  # where the data came from (fingerprint.describe)
    _digests: dict = field(default_factory=dict, repr=False, compare=False)  # split_digest's, once made

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def digest(self) -> str:
        return fingerprint.digest(self.record)

    def split_digest(self, split: str) -> str:
        """16 hex digits over one split's examples and the label names: what a score was measured on.
        Kept once made: the lineage, the kept predictions and the registry all ask for the test
        split's, and each would otherwise serialise all its rows again."""
        import hashlib

        key = (split, len(self.data[split]), tuple(self.label_names))
        if key not in self._digests:
            text = json.dumps({"labels": self.label_names, "rows": self.data[split].to_dict()}, sort_keys=True,
                              ensure_ascii=False)
            self._digests[key] = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self._digests[key]

    def datasets(self) -> list[dict]:
        """Each split as a dataset record for tracking (`tracking.lineage`): its fingerprint, where
        it was read from (a split carved from train names train's source) and its row count."""
        sources = self.record.get("sources", {})
        out = []
        for split in self.data:
            origin = sources.get(split) or sources.get("train") or {}
            source = origin.get("location") or (f"hub:{origin['hub']}" if origin.get("hub") else "unknown")
            if split not in sources:
                source += f" (carved, seed {self.record.get('settings', {}).get('seed')})"
            out.append({"split": split, "digest": self.split_digest(split), "source": source,
                        "rows": len(self.data[split])})
        return out

    def class_counts(self, split: str) -> dict[str, int]:
        counts = Counter(self.data[split]["label"])
        return {name: counts.get(i, 0) for i, name in enumerate(self.label_names)}


def load_splits(cfg: DataConfig, task) -> Splits:
    """The splits `task` (an `orchestrator.tasks.Task`) reads from `cfg`: each task reads and splits
    its own labels. The task is passed, not named: data sits below the tasks and knows none."""
    return task.load_splits(cfg)


def where(cfg: DataConfig, split: str) -> str:
    """How a message names a split's source."""
    if cfg.hub:
        return f"hub dataset {cfg.hub!r} split {split!r}"
    return f"{getattr(cfg, split)}"


def read_columns(cfg: DataConfig, columns: list[str]) -> tuple[dict[str, dict[str, list]], dict[str, dict]]:
    """(split -> column -> cells as stored, split -> source record) for every configured split.

    csv/tsv cells are strings exactly as written; json and parquet cells keep their type (a list
    stays a list); a hub dataset's class labels come as their names. Raises `DataError` naming the
    file and the columns found when one is missing.
    """
    if cfg.hub:
        return _read_hub(cfg, columns)
    out, sources = {}, {}
    for split in SPLITS:
        location = getattr(cfg, split)
        if location is None:
            continue
        key = f"data.{split}"
        frame = read_table(location, key, cfg.delimiter)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            hint = " (is the delimiter right? set data.delimiter)" if len(frame.columns) == 1 else ""
            raise DataError(f"{location}: column(s) {missing} not found; columns found: {list(frame.columns)}{hint}. "
                            f"Set {_column_keys(cfg, missing)}.")
        out[split] = {c: list(frame[c]) for c in columns}
        sources[split] = {"location": location, "sha256": fingerprint.file_sha256(local_file(location, key))}
    if "train" not in out:
        raise DataError("data.train: no training data configured")
    return out, sources


def _column_keys(cfg: DataConfig, missing: list[str]) -> str:
    keys = [k for k in ("text_column", "label_column", "tokens_column", "tags_column") if getattr(cfg, k) in missing]
    return " / ".join(f"data.{k}" for k in keys) or "the data columns"


def _read_hub(cfg: DataConfig, columns: list[str]) -> tuple[dict[str, dict[str, list]], dict[str, dict]]:
    try:
        dsd = load_dataset(cfg.hub, cfg.hub_config)
    except Exception as e:  # the hub raises many types; the user needs the name and the cause
        raise DataError(f"data.hub: could not load {cfg.hub!r}: {e}") from e
    out, sources = {}, {}
    for split in (s for s in SPLITS if s in dsd):
        ds = dsd[split]
        missing = [c for c in columns if c not in ds.column_names]
        if missing:
            raise DataError(f"{where(cfg, split)}: column(s) {missing} not found; columns found: "
                            f"{ds.column_names}. Set {_column_keys(cfg, missing)}.")
        out[split] = {c: _names(ds.features[c], ds[c]) for c in columns}
        # The rows read, hashed: a new revision of the dataset changes it, another machine's cache does not.
        rows = {c: list(values) for c, values in out[split].items()}  # datasets' lazy Column prints a preview
        digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
        sources[split] = {"hub": cfg.hub, "config": cfg.hub_config, "fingerprint": digest}
    if "train" not in out:
        raise DataError(f"data.hub: {cfg.hub!r} has no 'train' split (it has {list(dsd)})")
    return out, sources


def _names(feature, values: list) -> list:
    """Class labels as the dataset's names, not their numbers (also inside lists)."""
    if isinstance(feature, ClassLabel):
        return [None if x is None or x < 0 else feature.int2str(x) for x in values]
    inner = getattr(feature, "feature", None)
    if isinstance(feature, (list, Sequence)) or inner is not None:
        inner = feature[0] if isinstance(feature, list) else inner
        if isinstance(inner, ClassLabel):
            return [None if v is None else [inner.int2str(x) for x in v] for v in values]
    return values


def drop_empty(split: str, cfg: DataConfig, n: int, keep: list[int], what: str, keys: str | None = None) -> None:
    """Rows without `what` are dropped: a few with a warning, many (likely a broken file) an error
    naming the settings to check (`keys`; default: the text, label, tokens and tags columns)."""
    dropped = n - len(keep)
    if not dropped:
        return
    share = dropped / n
    msg = f"{where(cfg, split)}: {dropped} of {n} rows have {what}"
    if share > MAX_EMPTY_SHARE:
        keys = keys or "data.text_column / data.label_column / data.tokens_column / data.tags_column"
        raise DataError(f"{msg} ({share:.0%}, above {MAX_EMPTY_SHARE:.0%}); check the data columns ({keys}) and "
                        f"the file's encoding/delimiter")
    log.warning("%s; dropped them", msg)


def sort_labels(values) -> list[str]:
    """Integer labels sort numerically ("2" before "10"); strings alphabetically."""
    return sorted(set(values), key=lambda v: (0, int(v), "") if INTEGER.fullmatch(v) else (1, 0, v))


def carve(data: dict[str, Dataset], cfg: DataConfig, split_off: Callable[[Dataset, float | int], tuple]) -> dict:
    """Missing test and validation splits carved from train, then train capped at
    `max_train_rows`. `split_off(dataset, size)` -> (rest, part) is the task's way to split
    (stratified, iteratively stratified, random); `size` is a share, or a row count for the cap."""
    train = data["train"]
    if "test" not in data:
        train, data["test"] = split_off(train, cfg.test_size)
    if "validation" not in data:
        train, data["validation"] = split_off(train, cfg.validation_size)
    if cfg.max_train_rows and cfg.max_train_rows < len(train):
        _, train = split_off(train, cfg.max_train_rows)
    data["train"] = train
    return {s: data[s] for s in SPLITS}


def warn_overlap(splits: Splits, column: str = "text") -> None:
    def key(value):
        return tuple(value) if isinstance(value, list) else value

    train = {key(v) for v in splits.data["train"][column]}
    for split in ("validation", "test"):
        n = len(train & {key(v) for v in splits.data[split][column]})
        if n:
            log.warning("%d distinct text(s) appear in both train and %s; scores on %s may be optimistic",
                        n, split, split)


RECORD = "fingerprint.json"


def save_splits(splits: Splits, root: str | Path) -> Path:
    """Write the splits once under `root/<fingerprint>/` (atomically) and return that folder."""
    folder = Path(root) / splits.digest
    if not (folder / RECORD).exists():
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        splits.data.save_to_disk(str(tmp / "splits"))
        (tmp / "label_names.json").write_text(json.dumps(splits.label_names))
        (tmp / RECORD).write_text(json.dumps(splits.record, indent=1))
        shutil.rmtree(folder, ignore_errors=True)  # a folder without its record is an interrupted write
        os.replace(tmp, folder)
    return folder


def load_saved_splits(folder: str | Path) -> Splits:
    folder = Path(folder)
    return Splits(load_from_disk(str(folder / "splits")), json.loads((folder / "label_names.json").read_text()),
                  json.loads((folder / RECORD).read_text()))
