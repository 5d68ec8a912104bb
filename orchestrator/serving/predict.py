"""Predict a table file with a registered (or logged) model: `python -m orchestrator predict`.

The model is the registered pyfunc (`orchestrator.registry.pyfunc`), so these predictions are
those deployment makes: its task decides the output columns (see
`orchestrator.training.saved_model`), and a row without a text gets empty prediction columns
(`missing_rows`).

`predict_file` checks everything a user can get wrong (input file and column, output folder and
format, the model URI and the store it names) before it loads the model, and never creates a
store: a missing one is an error, not an empty new database.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd

from orchestrator.data import DataError, read_table
from orchestrator.data.read import as_text, check_scalars, missing_cells
from orchestrator.registry.lookup import check_format, check_model, input_columns, load_pyfunc
from orchestrator.registry.pyfunc import TEXT_COLUMN

log = logging.getLogger(__name__)

OUTPUTS = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


def predict_file(model_uri: str, input_path: str, output_path: str, text_column: str = TEXT_COLUMN,
                 tracking_uri: str | None = None, fmt: str = "pytorch",
                 columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Predict every row of a table file with a registered (or logged) model; write a table.

    The model's input columns (its signature: `text`; `text` and `text_pair` for sentence pairs;
    `question` and `context`) are read from the file's columns of the same names, or those
    `columns` maps them to ({"text_pair": "hypothesis"}); `text_column` is the file's column for
    `text`. The output keeps the input's columns as they were written and adds the model's
    outputs, named `predicted_<name>` so they never collide with a column of true labels
    (`predicted_label`, `predicted_labels`, `predicted_spans`, `predicted_value`,
    `predicted_answer`...), and one `prob_<label>` column per class; a row missing any of its
    inputs gets empty prediction columns (the pyfunc decides, as for every caller). An input column
    that already has one of these names is refused, never overwritten. Lists (label sets, spans)
    are written as JSON.
    Input and output formats: csv, tsv, json/jsonl, parquet (by extension). `fmt`: what computes
    the predictions, the registered PyTorch model (default) or its ONNX / int8 export.
    """
    frame = read_table(input_path, "--input")
    # The names the predictions take are known only once the model is loaded (`prob_<label>`), so
    # both prefixes are reserved: refused now, rather than overwritten or doubled later.
    taken = [c for c in frame.columns if str(c).startswith(("predicted_", "prob_"))]
    if taken:
        raise DataError(f"--input {input_path}: columns {taken} have the names predictions are written under "
                        f"(predicted_*, prob_*) and would be overwritten; rename or drop them (e.g. the "
                        f"predictions of an earlier run) and predict again")
    # The columns named for the model's inputs are checked before the model is looked for (its
    # signature says which it takes, and whether they exist, once it is found).
    for column in dict.fromkeys([text_column, *(columns or {}).values()]):
        if column in frame.columns:
            check_scalars(frame[column], f"--input {input_path}", column)
    _check_output(input_path, output_path)
    check_model(model_uri, tracking_uri)
    check_format(model_uri, tracking_uri, fmt)
    wanted = input_columns(model_uri, tracking_uri)
    mapping = _mapping(wanted, text_column, columns or {})
    absent = {name: column for name, column in mapping.items() if column not in frame.columns}
    if absent:
        how = " and ".join("--text-column" if name == TEXT_COLUMN else f"--column {name}=COLUMN" for name in absent)
        shown = f"column {next(iter(absent.values()))!r}" if len(absent) == 1 else f"columns {list(absent.values())}"
        takes = "" if wanted == [TEXT_COLUMN] else f" (the model takes {wanted})"
        raise DataError(f"--input {input_path}: {shown} not found; columns found: {list(frame.columns)}{takes}. "
                        f"Pass {how}.")
    for column in mapping.values():
        check_scalars(frame[column], f"--input {input_path}", column)
    model = load_pyfunc(model_uri, tracking_uri, fmt)
    gone = [any(row) for row in zip(*(missing_cells(frame[c]) for c in mapping.values()))]
    if any(gone):
        log.warning("%s: %d of %d rows have an empty %s; they get no prediction", input_path, sum(gone),
                    len(frame), " or ".join(repr(c) for c in mapping.values()))
    # A missing text goes in as "" (the model's input schema is a string column); the pyfunc gives
    # the row empty prediction columns, the same rule `serve` applies.
    inputs = pd.DataFrame({name: [as_text(v) or "" for v in frame[column]] for name, column in mapping.items()})
    result = model.predict(inputs)
    result = result.rename(columns={c: f"predicted_{c}" for c in result.columns if not c.startswith("prob_")})
    out = pd.concat([frame.reset_index(drop=True), result.reset_index(drop=True)], axis=1)
    _write(out, Path(output_path))
    return out


def _mapping(wanted: list[str], text_column: str, columns: dict[str, str]) -> dict[str, str]:
    """Model input -> the file's column: `columns`, `text_column` for `text`, else the same name.
    A mapping for an input the model does not take is refused (a typo would be ignored)."""
    unknown = [name for name in columns if name not in wanted]
    if unknown:
        raise DataError(f"--column {unknown[0]}=...: the model has no input {unknown[0]!r}; it takes {wanted}")
    return {name: columns.get(name) or (text_column if name == TEXT_COLUMN else name) for name in wanted}


def _check_output(input_path: str, output_path: str) -> None:
    out = Path(output_path)
    if out.suffix.lower() not in OUTPUTS:
        raise DataError(f"--output {output_path}: unknown file type {out.suffix!r}; use {', '.join(OUTPUTS)}")
    if not out.parent.is_dir():
        raise DataError(f"--output {output_path}: folder {out.parent} does not exist; create it first")
    if out.is_dir():
        raise DataError(f"--output {output_path} is a folder; name a file")
    if out.exists() and os.path.samefile(out, input_path):  # also through a link, hard or symbolic
        raise DataError(f"--output {output_path} is the input file; write the predictions elsewhere")


def _write(frame: pd.DataFrame, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):  # a cell holds text: label sets and spans as JSON, not Python's repr
        frame = frame.apply(lambda column: column.map(
            lambda v: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v))
    if suffix in (".json", ".jsonl"):
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
