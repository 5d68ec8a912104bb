"""Datasets in, tokenized splits out.

`load_splits` reads the configured files (or a hub dataset) with `datasets`, checks them, renames
the user's columns to `text` / `label`, encodes labels with the training split's label set and
carves any missing validation/test split from train, stratified by label.

`tokenize` runs once per study and (dataset fingerprint, tokenizer, max length): `datasets`
caches the result on disk by fingerprint, and an in-process cache hands the same object to every
trial, so no trial re-tokenizes. Padding is dynamic (per batch, in the collator).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset, load_from_disk

from orchestrator import paths
from orchestrator.config import DataConfig

log = logging.getLogger(__name__)

# Above this share of empty texts in a split, the data is more likely broken than sloppy.
MAX_EMPTY_SHARE = 0.1
SPLITS = ("train", "validation", "test")


class DataError(ValueError):
    """Unusable input data; the message names the file/column and the fix."""


@dataclass
class Splits:
    data: DatasetDict  # train / validation / test, columns `text` and `label` (ClassLabel)
    label_names: list[str]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def class_counts(self, split: str) -> dict[str, int]:
        counts = Counter(self.data[split]["label"])
        return {name: counts.get(i, 0) for i, name in enumerate(self.label_names)}


def load_splits(cfg: DataConfig) -> Splits:
    raw = _read(cfg)
    data = {}
    for split, ds in raw.items():
        data[split] = _select_columns(ds, cfg, split)
    label_names = _label_names(data["train"], cfg)
    index = {name: i for i, name in enumerate(label_names)}
    for split in list(data):
        unseen = sorted({str(x) for x in data[split]["label"]} - set(index))
        if unseen:
            raise DataError(
                f"{_where(cfg, split)}: labels {unseen[:10]} in column {cfg.label_column!r} do not occur "
                f"in the training split (which has {label_names}); fix the labels or add training rows"
            )
        features = Features({"text": Value("string"), "label": ClassLabel(names=label_names)})
        data[split] = data[split].map(
            lambda b: {"label": [index[str(x)] for x in b["label"]]}, batched=True, features=features,
            desc=f"encoding {split} labels",
        )
    data = _complete_splits(data, cfg, label_names)
    splits = Splits(DatasetDict(data), label_names)
    _warn_overlap(splits)
    return splits


def _where(cfg: DataConfig, split: str) -> str:
    if cfg.hub:
        return f"hub dataset {cfg.hub!r} split {split!r}"
    return f"{getattr(cfg, split)}"


def _builder(location: str, cfg: DataConfig) -> tuple[str, dict]:
    suffix = Path(location).suffix.lower()
    if suffix in (".json", ".jsonl"):
        return "json", {}
    if suffix == ".parquet":
        return "parquet", {}
    if suffix in (".csv", ".tsv", ".txt"):
        delimiter = cfg.delimiter or ("\t" if suffix == ".tsv" else ",")
        return "csv", {"delimiter": delimiter}
    raise DataError(f"{location}: unknown file type {suffix!r}; use .csv, .tsv, .json, .jsonl or .parquet")


def _read(cfg: DataConfig) -> dict[str, Dataset]:
    if cfg.hub:
        try:
            dsd = load_dataset(cfg.hub, cfg.hub_config)
        except Exception as e:  # the hub raises many types; the user needs the name and the cause
            raise DataError(f"data.hub: could not load {cfg.hub!r}: {e}") from e
        return {s: dsd[s] for s in SPLITS if s in dsd}
    out = {}
    for split in SPLITS:
        location = getattr(cfg, split)
        if location is None:
            continue
        try:
            resolved = paths.resolve(location)
        except paths.PathError as e:
            raise DataError(f"data.{split}: {e}") from None
        if not Path(resolved).exists():
            raise DataError(f"data.{split}: file not found: {location} (check the path; relative paths "
                            f"are taken from the current directory {Path.cwd()})")
        if not Path(resolved).is_file():
            raise DataError(f"data.{split}: {location} is not a file; name a .csv, .tsv, .jsonl or .parquet file")
        if Path(resolved).stat().st_size == 0:
            raise DataError(f"data.{split}: {location} is empty (0 bytes)")
        builder, kwargs = _builder(resolved, cfg)
        try:
            ds = load_dataset(builder, data_files={split: resolved}, split=split, **kwargs)
        except Exception as e:  # pyarrow / pandas parse errors come in many types
            causes = _causes(e)
            if any(isinstance(c, UnicodeDecodeError) for c in causes):
                raise DataError(f"data.{split}: {location} is not UTF-8 ({causes[-1]}); re-save it as UTF-8 "
                                f"(e.g. iconv -f latin1 -t utf-8)") from e
            if "corresponds to no data" in str(e):
                raise DataError(f"data.{split}: {location} has no rows") from e
            raise DataError(f"data.{split}: could not read {location} as {builder}: "
                            f"{'; '.join(str(c) for c in causes)[:500]}") from e
        if len(ds) == 0:
            raise DataError(f"data.{split}: {location} has no rows")
        out[split] = ds
    if "train" not in out:
        raise DataError("data.train: no training data configured")
    return out


def _causes(error: BaseException) -> list[BaseException]:
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _select_columns(ds: Dataset, cfg: DataConfig, split: str) -> Dataset:
    missing = [c for c in (cfg.text_column, cfg.label_column) if c not in ds.column_names]
    if missing:
        hint = " (is the delimiter right? set data.delimiter)" if len(ds.column_names) == 1 else ""
        raise DataError(
            f"{_where(cfg, split)}: column(s) {missing} not found; columns found: {ds.column_names}{hint}. "
            f"Set data.text_column / data.label_column."
        )
    ds = ds.select_columns([cfg.text_column, cfg.label_column])
    ds = ds.rename_columns({cfg.text_column: "text", cfg.label_column: "label"})
    ds = ds.map(lambda b: {"text": [t if t is None else str(t) for t in b["text"]],
                           "label": [None if x is None else str(x) for x in b["label"]]},
                batched=True, features=Features({"text": Value("string"), "label": Value("string")}),
                desc=f"reading {split}")
    n = len(ds)
    ds = ds.filter(lambda b: [t is not None and t.strip() != "" and x is not None
                              for t, x in zip(b["text"], b["label"])], batched=True)
    dropped = n - len(ds)
    if dropped:
        share = dropped / n
        msg = f"{_where(cfg, split)}: {dropped} of {n} rows have an empty text or label"
        if share > MAX_EMPTY_SHARE:
            raise DataError(f"{msg} ({share:.0%}, above {MAX_EMPTY_SHARE:.0%}); check "
                            f"data.text_column={cfg.text_column!r} and the file's encoding/delimiter")
        log.warning("%s; dropped them", msg)
    return ds


def _label_names(train: Dataset, cfg: DataConfig) -> list[str]:
    values = set(train["label"])
    if len(values) < 2:
        raise DataError(f"{_where(cfg, 'train')}: column {cfg.label_column!r} has a single class "
                        f"{sorted(values)}; a classifier needs at least two")
    # Integer labels sort numerically ("2" before "10"); strings alphabetically.
    return sorted(values, key=lambda v: (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v))


def _complete_splits(data: dict[str, Dataset], cfg: DataConfig, label_names: list[str]) -> dict[str, Dataset]:
    train = data["train"]
    counts = Counter(train["label"])
    needed = 1 + ("validation" not in data) + ("test" not in data)
    too_few = {label_names[i]: c for i, c in counts.items() if c < needed + 1}
    if needed > 1 and too_few:
        raise DataError(
            f"{_where(cfg, 'train')}: too few rows per class for a stratified split: {too_few}; each class needs "
            f"at least {needed + 1}. Add rows, merge rare classes, or provide data.validation/data.test files."
        )
    if "test" not in data:
        parts = train.train_test_split(test_size=cfg.test_size, stratify_by_column="label", seed=cfg.seed)
        train, data["test"] = parts["train"], parts["test"]
    if "validation" not in data:
        parts = train.train_test_split(test_size=cfg.validation_size, stratify_by_column="label", seed=cfg.seed)
        train, data["validation"] = parts["train"], parts["test"]
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


def save_splits(splits: Splits, directory: str | Path) -> Path:
    """Write the study's splits once, for trial processes to memory-map (`load_saved_splits`)."""
    directory = Path(directory)
    if not (directory / "label_names.json").exists():
        splits.data.save_to_disk(str(directory / "splits"))
        (directory / "label_names.json").write_text(json.dumps(splits.label_names))
    return directory


def load_saved_splits(directory: str | Path) -> Splits:
    directory = Path(directory)
    return Splits(load_from_disk(str(directory / "splits")),
                  json.loads((directory / "label_names.json").read_text()))


# ---------------------------------------------------------------------------------------------
# Tokenization

_TOKENIZED: dict[str, DatasetDict] = {}


def tokenize(splits: Splits, tokenizer, max_length: int, cache_dir: str | Path | None = None) -> DatasetDict:
    """Tokenized splits (`input_ids`, `attention_mask`, `labels`), computed once per study.

    Keyed by (split fingerprints, tokenizer, max length): reused in-process, and, with
    `cache_dir`, saved to disk so every trial process memory-maps the same arrays.
    """
    raw = "|".join([*(splits.data[s]._fingerprint for s in SPLITS), str(tokenizer.name_or_path),
                    str(len(tokenizer)), str(max_length)])
    key = hashlib.sha1(raw.encode()).hexdigest()[:16]
    if key in _TOKENIZED:
        return _TOKENIZED[key]
    folder = Path(cache_dir) / f"tokenized-{max_length}-{key}" if cache_dir else None
    if folder is not None and (folder / "dataset_dict.json").exists():
        _TOKENIZED[key] = load_from_disk(str(folder))
        return _TOKENIZED[key]

    def encode(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
        enc["labels"] = batch["label"]
        return enc

    tokenized = splits.data.map(encode, batched=True, remove_columns=["text", "label"],
                                desc=f"tokenizing (max_length={max_length})")
    if folder is not None:
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        tokenized.save_to_disk(str(tmp))
        try:
            os.replace(tmp, folder)  # atomic: a reader never sees half a dataset
        except OSError:  # another trial process saved the same tokenization first
            shutil.rmtree(tmp, ignore_errors=True)
        tokenized = load_from_disk(str(folder))
    _TOKENIZED[key] = tokenized
    return tokenized
