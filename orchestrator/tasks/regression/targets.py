"""regression targets: read as numbers (or refused, naming the row), and splits stratified by their quantiles."""

from __future__ import annotations

import math

import numpy as np
from datasets import Dataset
from sklearn.model_selection import train_test_split

from orchestrator.config.schema import DataConfig
from orchestrator.data.read import DataError, as_text, check_scalars, is_missing
from orchestrator.data.splits import where

MIN_TRAIN_ROWS = 10  # fewer: neither a standardisation nor a correlation means anything
MAX_BINS = 10  # quantile bins a carved split is stratified by (deciles), fewer where rows are few


def read_targets(cells: list, cfg: DataConfig, split: str) -> list[float]:
    """The label column's cells as finite floats. A missing, non-numeric or infinite cell is an
    error naming its row, not a dropped row: a similarity score left blank is a hole in the data
    that the user should fill or remove, and a guess (0? the mean?) would be trained on as truth."""
    check_scalars(cells, where(cfg, split), cfg.label_column)
    values, bad = [], []
    for row, cell in enumerate(cells, 1):
        text = as_text(cell)
        value = _number(text)
        if value is None:
            bad.append((row, text))
        values.append(value)
    if bad:
        row, text = bad[0]
        found = "nothing (an empty cell)" if is_missing(text) else repr(text)
        more = f" ({len(bad)} such rows, the first rows {[r for r, _ in bad[:10]]})" if len(bad) > 1 else ""
        raise DataError(f"{where(cfg, split)} row {row}: column {cfg.label_column!r} holds {found}, not a finite "
                        f"number{more}; task regression predicts a number for every row: write one (e.g. 3.8), "
                        f"remove the row, or point data.label_column at the numeric column")
    return values


def _number(text: str | None) -> float | None:
    if text is None or is_missing(text):
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def check_train(values: np.ndarray, cfg: DataConfig) -> None:
    if len(values) < MIN_TRAIN_ROWS:
        raise DataError(f"{where(cfg, 'train')}: {len(values)} rows with a text and a target; task regression "
                        f"needs at least {MIN_TRAIN_ROWS} training rows (more to be of use): add rows")
    if np.ptp(values) == 0:
        raise DataError(f"{where(cfg, 'train')}: column {cfg.label_column!r} is {values[0]:g} in every row; a "
                        f"constant has nothing to learn (and no spread to standardise by): check data.label_column")


def quantile_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Each row's quantile bin (0..bins-1) by rank: bins of equal size whatever the ties (STS
    scores pile up on whole numbers, where value quantiles would collapse), ties ordered by row."""
    order = np.argsort(np.asarray(values), kind="stable")
    out = np.empty(len(order), dtype=np.int64)
    out[order] = np.arange(len(order)) * bins // max(len(order), 1)
    return out


def split_off(dataset: Dataset, size: float | int, seed: int) -> tuple[Dataset, Dataset]:
    """(rest, part) of `dataset`, stratified by quantile bins of its `label` column: `size` the
    share of rows `part` gets, or its row count (the row cap, `data.max_train_rows`, keeps `part`)."""
    n = len(dataset)
    taken = size if isinstance(size, int) else max(1, round(n * size))
    # Stratification needs at least one row of each bin on each side, and two rows in each bin.
    bins = min(MAX_BINS, taken, n - taken, n // 2)
    stratify = quantile_bins(np.asarray(dataset["label"]), bins) if bins >= 2 else None
    rest, part = train_test_split(np.arange(n), test_size=taken, random_state=seed, stratify=stratify)
    return dataset.select(np.sort(rest)), dataset.select(np.sort(part))
