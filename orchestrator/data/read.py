"""Table files in, cells exactly as written out: csv, tsv, json/jsonl, parquet.

Read by hand rather than with `datasets`' builders or pandas' defaults, because both turn the
strings `NA`, `N/A`, `None`, `null`, `nan`... into missing values (a label `NA`, the region North
America, silently vanished) and numbers with a gap into floats (`0` became `0.0`). Here a cell is
missing only when it is truly empty; everything else is data, as written. Shared by the search's
data loading and by `predict`, so both read a file the same way.
"""

from __future__ import annotations

import json
import math
import unicodedata
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.config import paths

SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".jsonl", ".parquet", ".conll")


class DataError(ValueError):
    """Unusable input data; the message names the file/column and the fix."""


def local_file(location: str, key: str) -> Path:
    """The local file behind `location` (a path, `pkg://`, `archive.zip!member`), checked to exist."""
    try:
        resolved = Path(paths.resolve(location)).expanduser()
    except paths.PathError as e:
        raise DataError(f"{key}: {e}") from None
    if not resolved.exists():
        raise DataError(f"{key}: file not found: {location} (check the path; relative paths are taken from "
                        f"the current directory {Path.cwd()})")
    if not resolved.is_file():
        raise DataError(f"{key}: {location} is not a file; name a {', '.join(SUFFIXES)} file")
    if resolved.suffix.lower() not in SUFFIXES:
        raise DataError(f"{key}: {location}: unknown file type {resolved.suffix!r}; use "
                        f"{', '.join(SUFFIXES)}")
    if resolved.stat().st_size == 0:
        raise DataError(f"{key}: {location} is empty (0 bytes)")
    return resolved


def read_table(location: str, key: str, delimiter: str | None = None) -> pd.DataFrame:
    """Every row and column of a table file. csv/tsv cells are strings (empty: ""), json and
    parquet cells the values as stored (missing: None). Use `as_text` for a column's values."""
    path = local_file(location, key)
    suffix = path.suffix.lower()
    if suffix == ".conll":
        raise DataError(f"{key}: {location} is a CoNLL file (a tag per token), which only a token-tagging task "
                        f"reads as training data; give a {', '.join(s for s in SUFFIXES if s != '.conll')} file")
    try:
        if suffix in (".json", ".jsonl"):
            frame = _read_json(path, key, location)
        elif suffix == ".parquet":
            frame = _read_parquet(path)
        else:
            sep = delimiter or ("\t" if suffix == ".tsv" else ",")
            # utf-8-sig: spreadsheet programs start their CSV exports with a byte-order mark.
            # skip_blank_lines=False: a blank line is a row with an empty text, not no row at all
            # (predictions must line up with the input's rows).
            frame = _read_delimited(path, sep, key, location)
    except DataError:
        raise
    except UnicodeDecodeError as e:
        raise DataError(f"{key}: {location} is not UTF-8 ({e}); re-save it as UTF-8 "
                        f"(e.g. iconv -f latin1 -t utf-8)") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{key}: {location} has no rows") from None
    except (pd.errors.ParserError, ValueError, OSError) as e:
        raise DataError(f"{key}: could not read {location}: {str(e)[:500]}") from None
    if len(frame) == 0:
        raise DataError(f"{key}: {location} has no rows")
    return frame


def _read_delimited(path: Path, sep: str, key: str, location: str) -> pd.DataFrame:
    # index_col=False: when a first row has one field more than the header, pandas would otherwise
    # quietly make the first column the index, so an unquoted "Thank you, great" became " great".
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                            encoding="utf-8-sig", skip_blank_lines=False, index_col=False)
    if any("does not match length of data" in str(w.message) for w in caught):
        raise DataError(f"{key}: {location}: some rows have more fields than the header; a text that holds "
                        f"the delimiter {sep!r} must be quoted (\"...\"), or set data.delimiter")
    return frame


def _read_json(path: Path, key: str, location: str) -> pd.DataFrame:
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{key}: {location} is not valid JSON: {e}") from None
        where = "element"
    else:  # JSON lines: one object per line
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{key}: {location} line {number} is not valid JSON: {e}") from None
        where = "line"
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataError(f"{key}: {location} {where} {i} is {type(row).__name__}, expected an object "
                            f"like {{\"text\": ..., \"label\": ...}}")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    # object columns: pandas must not turn [0, 1, None] into floats.
    return pd.DataFrame({c: pd.Series([row.get(c) for row in rows], dtype=object) for c in columns})


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return pd.DataFrame({name: pd.Series(table.column(name).to_pylist(), dtype=object)
                         for name in table.column_names})


def as_text(value) -> str | None:
    """A cell as the text it was written as; None when it is missing (None, NaN, pandas' NA)."""
    # numpy's float32 NaN is no `float`, and pandas' NA/NaT are no floats at all: a DataFrame sent
    # to the registered model may hold any of them, and each must be missing, not the text "nan".
    if value is None or value is pd.NA or value is pd.NaT or (
            isinstance(value, (float, np.floating)) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)  # 0 stays "0", true stays "true", 1.5 stays "1.5"
    return str(value)


def check_scalars(values: Iterable, where: str, column: str) -> None:
    """Refuse a list or object where a text (or a single label) is expected, naming its row.

    `as_text` would make `["great", "awful"]` the text "['great', 'awful']" (Python's spelling of
    the list): a guess at what the cell meant, trained on or predicted as if it were written so.
    Numbers and booleans are fine: they are written as in the file (12, true)."""
    for row, value in enumerate(values, 1):
        if isinstance(value, (list, tuple, dict, np.ndarray)):
            raise DataError(f"{where} row {row}: column {column!r} holds the {type(value).__name__} "
                            f"{str(value)[:60]}, not a text; write one string per cell (a list of labels "
                            f"belongs in the label column of a task with several labels per text)")


def is_missing(text: str | None) -> bool:
    """The one rule for a missing text or label: no value, or only whitespace and invisible format
    characters (a zero-width space, a stray byte-order mark: nothing a model could read, yet not
    whitespace to `str.strip`). "NA", "None", "null", "nan" are texts."""
    if text is None:
        return True
    rest = text.strip()
    return all(c.isspace() or unicodedata.category(c) == "Cf" for c in rest)  # stops at the first visible one


def missing_cells(values: Iterable) -> list[bool]:
    """Which cells are missing (`as_text`, then `is_missing`): what every prediction path uses to
    decide which rows get no prediction."""
    return [is_missing(as_text(v)) for v in values]
