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
from orchestrator.registry.lookup import check_format, check_model, load_pyfunc
from orchestrator.registry.pyfunc import TEXT_COLUMN

log = logging.getLogger(__name__)

OUTPUTS = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


def predict_file(model_uri: str, input_path: str, output_path: str, text_column: str = TEXT_COLUMN,
                 tracking_uri: str | None = None, fmt: str = "pytorch") -> pd.DataFrame:
    """Predict every row of a table file with a registered (or logged) model; write a table.

    The output keeps the input's columns as they were written and adds the model's outputs, named
    `predicted_<name>` so they never collide with a column of true labels (`predicted_label`,
    `predicted_labels`, `predicted_spans`...), and one `prob_<label>` column per class; a row whose
    text is missing gets empty prediction columns (the pyfunc decides, as for every caller). An
    input column that already has one of these names is refused, never overwritten. Lists (label
    sets, spans) are written as JSON.
    Input and output formats: csv, tsv, json/jsonl, parquet (by extension). `fmt`: what computes
    the predictions, the registered PyTorch model (default) or its ONNX / int8 export.
    """
    frame = read_table(input_path, "--input")
    if text_column not in frame.columns:
        raise DataError(f"--input {input_path}: column {text_column!r} not found; columns found: "
                        f"{list(frame.columns)}. Pass --text-column.")
    # The names the predictions take are known only once the model is loaded (`prob_<label>`), so
    # both prefixes are reserved: refused now, rather than overwritten or doubled later.
    taken = [c for c in frame.columns if str(c).startswith(("predicted_", "prob_"))]
    if taken:
        raise DataError(f"--input {input_path}: columns {taken} have the names predictions are written under "
                        f"(predicted_*, prob_*) and would be overwritten; rename or drop them (e.g. the "
                        f"predictions of an earlier run) and predict again")
    check_scalars(frame[text_column], f"--input {input_path}", text_column)
    _check_output(input_path, output_path)
    check_model(model_uri, tracking_uri)
    check_format(model_uri, tracking_uri, fmt)
    model = load_pyfunc(model_uri, tracking_uri, fmt)
    missing = sum(missing_cells(frame[text_column]))
    if missing:
        log.warning("%s: %d of %d rows have an empty %r; they get no prediction", input_path, missing,
                    len(frame), text_column)
    # A missing text goes in as "" (the model's input schema is a string column); the pyfunc gives
    # it empty prediction columns, the same rule `serve` applies.
    texts = [as_text(v) or "" for v in frame[text_column]]
    result = model.predict(pd.DataFrame({TEXT_COLUMN: texts}))
    result = result.rename(columns={c: f"predicted_{c}" for c in result.columns if not c.startswith("prob_")})
    out = pd.concat([frame.reset_index(drop=True), result.reset_index(drop=True)], axis=1)
    _write(out, Path(output_path))
    return out


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
