"""Rows without a text get no prediction: one rule for every place that predicts.

`predict`, the registered pyfunc (and so MLflow's scoring server, `serve`) and any later export
(ONNX...) all go through `predict_rows`: it decides which rows are missing (`missing_cells`: None,
NaN, pandas' NA, an empty or whitespace-only string; the strings "NA", "None", "null", "nan" are
texts), gives only the other rows to the model, and returns one row per input row in which the
missing rows' prediction columns are empty.

Empty means "not predicted", which is not the same as "predicted nothing": a multi-label row
whose labels all stayed under their thresholds is `[]`, a sentence without entities has
`spans == []`; a missing row has None there, and NaN in its `prob_` columns (a float column stays
a float column, and a NaN probability cannot be mistaken for a confident 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from orchestrator.data.read import as_text, check_scalars, missing_cells

PROBABILITY = "prob_"  # the prefix of a probability column: blanked with NaN, every other column with None


def predict_rows(values: Sequence | Mapping[str, Sequence], predict: Callable[[list], pd.DataFrame]) -> pd.DataFrame:
    """`predict`'s frame for the inputs of `values` that are present, spread over every row of
    `values` (index 0..n-1); the model never sees a missing row.

    `values`: one column of texts, or {column: cells} for a model of several inputs (a sentence
    pair's `text` and `text_pair`, a question and its context), whose rows reach `predict` as
    tuples in the mapping's order; a row missing any of its inputs is missing."""
    columns = dict(values) if isinstance(values, Mapping) else {"text": values}
    for name, cells in columns.items():
        check_scalars(cells, "the input", name)  # a list is no text: refused, not predicted as its repr
    flags = [missing_cells(cells) for cells in columns.values()]
    if len({len(f) for f in flags}) > 1:
        raise ValueError(f"input columns of different lengths: { {k: len(v) for k, v in columns.items()} }")
    missing = [any(row) for row in zip(*flags)]
    texts = [[as_text(v) for v in cells] for cells in columns.values()]
    rows = [row[0] if len(row) == 1 else row for row in zip(*texts)]
    return blank_missing(predict([r for r, gone in zip(rows, missing) if not gone]), missing)


def blank_missing(frame: pd.DataFrame, missing: Sequence[bool]) -> pd.DataFrame:
    """The predictions of the present rows (`frame`, in order) at their places among all rows;
    a missing row's prediction columns are None (NaN for probabilities)."""
    missing = np.asarray(missing, dtype=bool)
    present = np.flatnonzero(~missing)
    if len(frame) != len(present):
        raise ValueError(f"{len(frame)} predictions for {len(present)} present rows")
    out = {}
    for name in frame.columns:
        if str(name).startswith(PROBABILITY):
            column = np.full(len(missing), np.nan, dtype=np.float64)
            column[present] = frame[name].to_numpy(dtype=np.float64)
            out[name] = pd.Series(column)
        else:
            column = np.full(len(missing), None, dtype=object)
            column[present] = frame[name].to_numpy(dtype=object)
            # dtype object: pandas would infer a string column and turn None into NaN, which MLflow's
            # scoring server writes as the non-JSON `NaN` instead of null.
            out[name] = pd.Series(column, dtype=object)
    return pd.DataFrame(out, columns=frame.columns, index=pd.RangeIndex(len(missing)))
