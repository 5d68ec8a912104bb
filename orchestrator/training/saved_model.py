"""A saved model of any task, as every prediction and evaluation loads it: `Classifier`.

It is what the champion's test evaluation (`search/wrap_up.py`), the MLflow pyfunc deployment
loads (`orchestrator.registry.pyfunc`) and `python -m orchestrator predict` all go through. The
saved model's task decides the output: single_label a `label` column, multi_label a `labels`
list, both with one `prob_<label>` column per class; token_classification `spans` (and `words`
for segmentation). A row without a text is not given to the model and its prediction columns
are empty (`missing_rows`), in every one of these paths.

`runtime` picks what computes the logits: the torch model ("pytorch"), or its ONNX export run by
ONNX Runtime ("onnx": `model.onnx`, "int8": `model.int8.onnx`, made by `training/export.py`).
Only the model differs: tokenizer, collator, gather, post-processing and missing rows are the same
code for every runtime, so every format follows the same prediction rules.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from orchestrator.data.missing_rows import predict_rows
from orchestrator.tasks import Evaluation, get_task
from orchestrator.training.export import FILES, FORMATS, OnnxModel, saved_tokenizer
from orchestrator.training.loop import collect_logits, model_inputs


class Classifier:
    """A saved model of any task (`orchestrator.tasks`), with the post-processing validation chose."""

    def __init__(self, directory: str | Path, device: str | None = None, runtime: str = "pytorch"):
        if runtime not in FORMATS:
            raise ValueError(f"unknown runtime {runtime!r}; use one of {', '.join(FORMATS)}")
        self.runtime = runtime
        info = json.loads((Path(directory) / "classifier.json").read_text())
        self.task = get_task(info.get("task", "single_label"))
        if runtime == "pytorch":
            self.model, self.tokenizer, self.info = self.task.load_model(directory)
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        else:
            self.model, self.device = self._onnx_model(Path(directory), runtime, device), torch.device("cpu")
            self.tokenizer, self.info = saved_tokenizer(directory), info  # the torch weights are not loaded
        self.model.to(self.device)
        self.label_names: list[str] = self.info["label_names"]
        self.max_length: int = self.info["max_length"]
        self.post: dict = self.info.get("post", {})
        self.saved: dict = self.info.get("saved", {})
        self.task.restore(self.saved)
        self.input_columns: tuple[str, ...] = self.task.input_columns(self.saved)
        self._collate = self.task.collator(self.tokenizer)

    @staticmethod
    def _onnx_model(directory: Path, runtime: str, device: str | None) -> OnnxModel:
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"runtime {runtime!r} runs on the CPU (ONNX Runtime's CPUExecutionProvider); "
                             f"device {device!r} is for runtime 'pytorch'")
        path = directory / FILES[runtime]
        if not path.is_file():
            how = {"onnx": f"export_onnx({str(directory)!r})",
                   "int8": f"export_onnx({str(directory)!r}) then quantize_int8({str(directory)!r})"}[runtime]
            raise FileNotFoundError(f"runtime {runtime!r} needs {path}, which does not exist: make it with "
                                    f"orchestrator.training.export.{how}")
        return OnnxModel(path)

    def outputs(self, examples, batch_size: int = 64):
        """The task's per-example outputs (probabilities) for a Dataset of its examples."""
        # A fingerprint of its own: `datasets` would otherwise hash the tokenizer (dill) to make one,
        # which took more than half of a one-text prediction (profiled: ~60% of 0.4 s). Nothing
        # here is cached by fingerprint (the examples are in memory).
        with _no_progress_bars():  # a bar per request in a server's log says nothing
            encoded = self.task.encode(examples, self.tokenizer, self.max_length, with_labels=False,
                                       fingerprint=uuid.uuid4().hex)
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

    def predict_proba(self, texts: list, batch_size: int = 64):
        """Outputs for raw inputs: texts, or tuples of texts in `input_columns` order (pairs; question
        and context)."""
        return self.outputs(self.task.examples_from_texts(texts, self.saved), batch_size)

    def predict_frame(self, values: Sequence | Mapping[str, Sequence] | pd.DataFrame) -> pd.DataFrame:
        """The registered model's output: one row per input row (labels, label sets, spans, values or
        answers, and probabilities); a row missing a text (None, NaN, blank) gets empty prediction
        columns, not a guess. `values`: the texts of a one-input model, or its `input_columns` (a
        mapping or frame holding them)."""
        if isinstance(values, (Mapping, pd.DataFrame)):
            absent = [c for c in self.input_columns if c not in values]
            if absent:
                raise ValueError(f"the input has no column(s) {absent} (columns: {list(values)[:20]}); this model "
                                 f"takes {list(self.input_columns)}")
            values = {c: list(values[c]) for c in self.input_columns}
        elif len(self.input_columns) > 1:
            raise ValueError(f"this model takes {len(self.input_columns)} inputs per row {list(self.input_columns)}; "
                             f"give them as columns")
        return predict_rows(values, self._predict_texts)

    def _predict_texts(self, texts: list) -> pd.DataFrame:
        return self.task.output_frame(self.predict_proba(texts), texts, self.label_names, self.post, self.saved)

    def example_frame(self, examples, rows: int = 5) -> pd.DataFrame:
        """The model's input columns for the first `rows` of a Dataset of its task's examples: the
        input example a registered version carries."""
        inputs = self.task.inputs(examples.select(range(min(rows, len(examples)))), self.saved)
        if len(self.input_columns) == 1:
            return pd.DataFrame({self.input_columns[0]: inputs})
        return pd.DataFrame(list(inputs), columns=list(self.input_columns))


@contextlib.contextmanager
def _no_progress_bars():
    import datasets

    shown = not datasets.are_progress_bars_disabled()
    if shown:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()
