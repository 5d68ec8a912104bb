"""Load a trained classifier and predict: from a checkpoint folder, or `models:/NAME@ALIAS`.

`Classifier` is what every prediction goes through: the champion's test evaluation, the MLflow
pyfunc that deployment loads (`ClassifierPyfunc`), and `python -m orchestrator predict`. The
saved model's task decides the output: single_label a `label` column, multi_label a `labels`
list, both with one `prob_<label>` column per class; token_classification `spans` (and `words`
for segmentation). A row without a text is not given to the model and its prediction columns
are empty (`missing_rows`), in every one of these paths.

`predict_file` checks everything a user can get wrong (input file and column, output folder and
format, the model URI and the store it names) before it loads the model, and never creates a
store: a missing one is an error, not an empty new database.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from orchestrator.data import DataError, read_table
from orchestrator.data.read import as_text, check_scalars, missing_cells
from orchestrator.data.missing_rows import predict_rows
from orchestrator.config.paths import absolute_sqlite, sqlite_path
from orchestrator.tasks import Evaluation, get_task
from orchestrator.training.loop import collect_logits, model_inputs

log = logging.getLogger(__name__)

TEXT_COLUMN = "text"
OUTPUTS = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


class Classifier:
    """A saved model of any task (`orchestrator.tasks`), with the post-processing validation chose."""

    def __init__(self, directory: str | Path, device: str | None = None):
        info = json.loads((Path(directory) / "classifier.json").read_text())
        self.task = get_task(info.get("task", "single_label"))
        self.model, self.tokenizer, self.info = self.task.load_model(directory)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.label_names: list[str] = self.info["label_names"]
        self.max_length: int = self.info["max_length"]
        self.post: dict = self.info.get("post", {})
        self.saved: dict = self.info.get("saved", {})
        self.task.restore(self.saved)
        self._collate = self.task.collator(self.tokenizer)

    def outputs(self, examples, batch_size: int = 64):
        """The task's per-example outputs (probabilities) for a Dataset of its examples."""
        encoded = self.task.encode(examples, self.tokenizer, self.max_length, with_labels=False)
        loader = DataLoader(model_inputs(encoded), batch_size=batch_size, collate_fn=self._collate)
        batches = ({k: v.to(self.device) for k, v in batch.items()} for batch in loader)
        rows = collect_logits(self.model, batches)
        if isinstance(rows, np.ndarray) and rows.size == 0:  # no input: no batch told the label count
            rows = rows.reshape(0, len(self.label_names))
        return self.task.gather(rows, encoded)

    def evaluate(self, examples, prefix: str) -> tuple[Evaluation, object]:
        """Metrics against the examples' true labels, with the saved post-processing; and the outputs."""
        outputs = self.outputs(examples)
        return self.task.evaluate(outputs, examples, self.label_names, prefix, self.post), outputs

    def predict_proba(self, texts: list[str], batch_size: int = 64):
        return self.outputs(self.task.examples_from_texts(texts, self.saved), batch_size)

    def predict_frame(self, values: Sequence) -> pd.DataFrame:
        """The registered model's output: one row per value (labels, label sets or spans, and
        probabilities); a missing text (None, NaN, blank) gets empty prediction columns, not a guess."""
        return predict_rows(values, self._predict_texts)

    def _predict_texts(self, texts: list[str]) -> pd.DataFrame:
        return self.task.output_frame(self.predict_proba(texts), texts, self.label_names, self.post, self.saved)


class ClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: a DataFrame with a `text` column in, the task's predictions out."""

    def load_context(self, context):
        self.classifier = Classifier(context.artifacts["classifier"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            # No stand-in column: the first column of a frame without `text` is as likely an id as a
            # text, and predicting ids is a guess. (MLflow's schema check refuses such a frame first
            # wherever the signature is enforced; this holds where it is not.)
            if TEXT_COLUMN not in model_input.columns:
                raise ValueError(f"the input has no column {TEXT_COLUMN!r} (columns: {list(model_input.columns)[:20]}); "
                                 f"send the texts in a column named {TEXT_COLUMN!r}")
            values = model_input[TEXT_COLUMN].tolist()
        else:
            values = list(model_input)
        return self.classifier.predict_frame(values)  # missing values stay missing: no guess for them


def predict_file(model_uri: str, input_path: str, output_path: str, text_column: str = TEXT_COLUMN,
                 tracking_uri: str | None = None) -> pd.DataFrame:
    """Predict every row of a table file with a registered (or logged) model; write a table.

    The output keeps the input's columns as they were written and adds the model's outputs, named
    `predicted_<name>` so they never collide with a column of true labels (`predicted_label`,
    `predicted_labels`, `predicted_spans`...), and one `prob_<label>` column per class; a row whose
    text is missing gets empty prediction columns (the pyfunc decides, as for every caller). An
    input column that already has one of these names is refused, never overwritten. Lists (label
    sets, spans) are written as JSON.
    Input and output formats: csv, tsv, json/jsonl, parquet (by extension).
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
    _check_model(model_uri, tracking_uri)
    if tracking_uri:
        tracking_uri = absolute_sqlite(tracking_uri, create=False)
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri)
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


def _check_model(model_uri: str, tracking_uri: str | None) -> None:
    """The model exists, found with metadata calls only (no download, no store created)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from orchestrator.config.secrets import redact
    from orchestrator.tracking.client import TrackingError, existing_store, fail_fast, is_missing, is_outage

    if not model_uri.startswith(("models:/", "runs:/")):
        if "://" not in model_uri and not (Path(model_uri) / "MLmodel").is_file():
            raise DataError(f"--model {model_uri}: not an MLflow model folder (no MLmodel file in it); use "
                            f"models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model or a logged model's folder")
        return
    fail_fast(tracking_uri or "")
    db = sqlite_path(tracking_uri or "")
    if db is not None and not db.is_file():
        raise DataError(f"--tracking-uri {tracking_uri}: no MLflow store at {db}; run a search first, or point "
                        f"--tracking-uri (or MLFLOW_TRACKING_URI) at the store that holds the model")
    if tracking_uri:
        existing_store(tracking_uri)  # an empty or foreign database would get MLflow's tables
    uri = absolute_sqlite(tracking_uri, create=False) if tracking_uri else None
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    shown = redact(tracking_uri or "the default store")
    try:
        if model_uri.startswith("runs:/"):
            client.get_run(model_uri[len("runs:/"):].split("/", 1)[0])
            return
        name, at, alias = model_uri[len("models:/"):].partition("@")
        if at:
            client.get_model_version_by_alias(name, alias)
            return
        name, _, version = name.partition("/")
        if version.isdigit():
            client.get_model_version(name, version)
        elif name.startswith("m-") and not version:  # a logged model's id (MLflow 3)
            client.get_logged_model(name)
        else:
            client.get_registered_model(name)
    except MlflowException as e:
        if is_outage(e):
            raise TrackingError(f"--tracking-uri: cannot reach the MLflow store {shown}: {e.message[:300]}") from None
        if is_missing(e) or e.error_code == "INVALID_PARAMETER_VALUE":
            raise DataError(f"--model {model_uri}: not found in {shown}: {e.message[:300]}") from None
        raise


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
