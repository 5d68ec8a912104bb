"""A saved model of any task, as every prediction and evaluation loads it: `Classifier`.

It is what the champion's test evaluation (`search/wrap_up.py`), the MLflow pyfunc deployment
loads (`orchestrator.registry.pyfunc`) and `python -m orchestrator predict` all go through. The
saved model's task decides the output: single_label a `label` column, multi_label a `labels`
list, both with one `prob_<label>` column per class; token_classification `spans` (and `words`
for segmentation). A row without a text is not given to the model and its prediction columns
are empty (`missing_rows`), in every one of these paths.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from orchestrator.data.missing_rows import predict_rows
from orchestrator.tasks import Evaluation, get_task
from orchestrator.training.loop import collect_logits, model_inputs


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
