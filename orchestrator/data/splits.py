"""Train / validation / test splits from the configured files (or a hub dataset).

`load_splits` reads every split (`read.py`), checks it, keeps the user's text and label columns
as `text` / `label`, encodes labels with the training split's label set and carves any missing
validation/test split from train, stratified by label. The result carries the fingerprint of
what it came from (`fingerprint.py`); `save_splits` writes it once per study under a folder
named by that fingerprint, for trial processes to memory-map.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset, load_from_disk

from orchestrator.config.schema import DataConfig
from orchestrator.data import fingerprint
from orchestrator.data.read import DataError, as_text, is_missing, local_file, read_table

log = logging.getLogger(__name__)

# Above this share of empty texts in a split, the data is more likely broken than sloppy.
MAX_EMPTY_SHARE = 0.1
INTEGER = re.compile(r"-?[0-9]+")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses
SPLITS = ("train", "validation", "test")
TASK = "single_label"


@dataclass
class Splits:
    data: DatasetDict  # train / validation / test, columns `text` and `label` (ClassLabel)
    label_names: list[str]
    record: dict = field(default_factory=dict)  # where the data came from (fingerprint.describe)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def digest(self) -> str:
        return fingerprint.digest(self.record)

    def class_counts(self, split: str) -> dict[str, int]:
        counts = Counter(self.data[split]["label"])
        return {name: counts.get(i, 0) for i, name in enumerate(self.label_names)}


def load_splits(cfg: DataConfig) -> Splits:
    columns, sources = _read(cfg)
    data = {split: _clean(texts, labels, cfg, split) for split, (texts, labels) in columns.items()}
    label_names = _label_names(data["train"], cfg)
    index = {name: i for i, name in enumerate(label_names)}
    features = Features({"text": Value("string"), "label": ClassLabel(names=label_names)})
    for split, (texts, labels) in data.items():
        unseen = sorted(set(labels) - set(index))
        if unseen:
            raise DataError(
                f"{_where(cfg, split)}: labels {unseen[:10]} in column {cfg.label_column!r} do not occur "
                f"in the training split (which has {label_names}); fix the labels or add training rows")
        data[split] = Dataset.from_dict({"text": texts, "label": [index[x] for x in labels]}, features=features)
    data = _complete_splits(data, cfg, label_names)
    splits = Splits(DatasetDict(data), label_names, fingerprint.describe(cfg, TASK, sources))
    _warn_overlap(splits)
    return splits


def _where(cfg: DataConfig, split: str) -> str:
    if cfg.hub:
        return f"hub dataset {cfg.hub!r} split {split!r}"
    return f"{getattr(cfg, split)}"


def _read(cfg: DataConfig) -> tuple[dict[str, tuple[list, list]], dict[str, dict]]:
    """(split -> (texts, labels) as written, split -> source record)."""
    if cfg.hub:
        return _read_hub(cfg)
    columns, sources = {}, {}
    for split in SPLITS:
        location = getattr(cfg, split)
        if location is None:
            continue
        key = f"data.{split}"
        frame = read_table(location, key, cfg.delimiter)
        missing = [c for c in (cfg.text_column, cfg.label_column) if c not in frame.columns]
        if missing:
            hint = " (is the delimiter right? set data.delimiter)" if len(frame.columns) == 1 else ""
            raise DataError(f"{location}: column(s) {missing} not found; columns found: {list(frame.columns)}{hint}. "
                            f"Set data.text_column / data.label_column.")
        columns[split] = ([as_text(v) for v in frame[cfg.text_column]], [as_text(v) for v in frame[cfg.label_column]])
        sources[split] = {"location": location, "sha256": fingerprint.file_sha256(local_file(location, key))}
    if "train" not in columns:
        raise DataError("data.train: no training data configured")
    return columns, sources


def _read_hub(cfg: DataConfig) -> tuple[dict[str, tuple[list, list]], dict[str, dict]]:
    try:
        dsd = load_dataset(cfg.hub, cfg.hub_config)
    except Exception as e:  # the hub raises many types; the user needs the name and the cause
        raise DataError(f"data.hub: could not load {cfg.hub!r}: {e}") from e
    columns, sources = {}, {}
    for split in (s for s in SPLITS if s in dsd):
        ds = dsd[split]
        missing = [c for c in (cfg.text_column, cfg.label_column) if c not in ds.column_names]
        if missing:
            raise DataError(f"{_where(cfg, split)}: column(s) {missing} not found; columns found: "
                            f"{ds.column_names}. Set data.text_column / data.label_column.")
        label_feature = ds.features[cfg.label_column]
        labels = ds[cfg.label_column]
        if isinstance(label_feature, ClassLabel):  # the dataset's own names, not their numbers
            labels = [None if x is None or x < 0 else label_feature.int2str(x) for x in labels]
        columns[split] = ([as_text(v) for v in ds[cfg.text_column]], [as_text(v) for v in labels])
        sources[split] = {"hub": cfg.hub, "config": cfg.hub_config, "fingerprint": ds._fingerprint}
    if "train" not in columns:
        raise DataError(f"data.hub: {cfg.hub!r} has no 'train' split (it has {list(dsd)})")
    return columns, sources


def _clean(texts: list, labels: list, cfg: DataConfig, split: str) -> tuple[list[str], list[str]]:
    """Drop rows whose text or label is truly empty (a few: with a warning; many: an error)."""
    keep = [i for i, (t, x) in enumerate(zip(texts, labels)) if not is_missing(t) and not is_missing(x)]
    n, dropped = len(texts), len(texts) - len(keep)
    if dropped:
        share = dropped / n
        msg = f"{_where(cfg, split)}: {dropped} of {n} rows have an empty text or label"
        if share > MAX_EMPTY_SHARE:
            raise DataError(f"{msg} ({share:.0%}, above {MAX_EMPTY_SHARE:.0%}); check "
                            f"data.text_column={cfg.text_column!r} and the file's encoding/delimiter")
        log.warning("%s; dropped them", msg)
    return [texts[i] for i in keep], [labels[i] for i in keep]


def _label_names(train: tuple[list[str], list[str]], cfg: DataConfig) -> list[str]:
    values = set(train[1])
    if len(values) < 2:
        raise DataError(f"{_where(cfg, 'train')}: column {cfg.label_column!r} has a single class "
                        f"{sorted(values)}; a classifier needs at least two")
    # Integer labels sort numerically ("2" before "10"); strings alphabetically.
    return sorted(values, key=lambda v: (0, int(v), "") if INTEGER.fullmatch(v) else (1, 0, v))


def _complete_splits(data: dict[str, Dataset], cfg: DataConfig, label_names: list[str]) -> dict[str, Dataset]:
    train = data["train"]
    counts = Counter(train["label"])
    needed = 1 + ("validation" not in data) + ("test" not in data)
    too_few = {label_names[i]: c for i, c in counts.items() if c < needed + 1}
    if needed > 1 and too_few:
        raise DataError(
            f"{_where(cfg, 'train')}: too few rows per class for a stratified split: {too_few}; each class needs "
            f"at least {needed + 1}. Add rows, merge rare classes, or provide data.validation/data.test files.")
    if "test" not in data:
        parts = train.train_test_split(test_size=cfg.test_size, stratify_by_column="label", seed=cfg.seed)
        train, data["test"] = parts["train"], parts["test"]
    if "validation" not in data:
        parts = train.train_test_split(test_size=cfg.validation_size, stratify_by_column="label", seed=cfg.seed)
        train, data["validation"] = parts["train"], parts["test"]
    if cfg.max_train_rows and cfg.max_train_rows < len(label_names):
        raise DataError(f"data.max_train_rows ({cfg.max_train_rows}) is fewer than the {len(label_names)} classes; "
                        f"a stratified subsample needs a row of each")
    if cfg.max_train_rows and cfg.max_train_rows < len(train):
        train = train.train_test_split(train_size=cfg.max_train_rows, stratify_by_column="label",
                                       seed=cfg.seed)["train"]
    data["train"] = train
    return {s: data[s] for s in SPLITS}


def _warn_overlap(splits: Splits) -> None:
    train = set(splits.data["train"]["text"])
    for split in ("validation", "test"):
        n = len(train & set(splits.data[split]["text"]))
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
