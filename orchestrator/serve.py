"""Load a trained classifier and predict: from a checkpoint folder, or `models:/NAME@ALIAS`.

`Classifier` is what every prediction goes through: the champion's test evaluation, the MLflow
pyfunc that deployment loads (`ClassifierPyfunc`), and `python -m orchestrator predict`.
Output: one `label` column and one `prob_<label>` column per class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import DataCollatorWithPadding

from orchestrator.heads import TextClassifier
from orchestrator.paths import absolute_sqlite

TEXT_COLUMN = "text"


class Classifier:
    def __init__(self, directory: str | Path, device: str | None = None):
        self.model, self.tokenizer, self.info = TextClassifier.load(directory)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.label_names: list[str] = self.info["label_names"]
        self.max_length: int = self.info["max_length"]
        self._collate = DataCollatorWithPadding(self.tokenizer)

    @torch.no_grad()
    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer([str(t) for t in texts[i:i + batch_size]], truncation=True,
                                 max_length=self.max_length)
            batch = self._collate([{k: enc[k][j] for k in enc} for j in range(len(enc["input_ids"]))])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out.append(torch.softmax(self.model(**batch).float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, len(self.label_names)))

    def predict_frame(self, texts: list[str]) -> pd.DataFrame:
        return to_frame(self.predict_proba(texts), self.label_names)


def to_frame(probs: np.ndarray, label_names: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({"label": [label_names[i] for i in probs.argmax(-1)]})
    for i, name in enumerate(label_names):
        frame[f"prob_{name}"] = probs[:, i].astype(np.float64)
    return frame


def _pyfunc_base():
    import warnings

    # MLflow asks for type hints on `predict` at class creation; the logged model carries an
    # explicit signature instead (text in; label and per-class probabilities out).
    warnings.filterwarnings("ignore", message=".*type hint", category=UserWarning)
    import mlflow.pyfunc

    return mlflow.pyfunc.PythonModel


class ClassifierPyfunc(_pyfunc_base()):
    """MLflow pyfunc: a DataFrame with a `text` column in, labels and probabilities out."""

    def load_context(self, context):
        self.classifier = Classifier(context.artifacts["classifier"])

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, pd.DataFrame):
            column = TEXT_COLUMN if TEXT_COLUMN in model_input.columns else model_input.columns[0]
            texts = model_input[column].astype(str).tolist()
        else:
            texts = [str(t) for t in model_input]
        return self.classifier.predict_frame(texts)


def predict_file(model_uri: str, input_path: str, output_path: str, text_column: str = TEXT_COLUMN,
                 tracking_uri: str | None = None) -> pd.DataFrame:
    """Predict every row of a CSV/TSV file with a registered (or logged) model; write a CSV.

    The output keeps the input's columns and adds `predicted_label` (named so it never collides
    with a `label` column of true labels) and one `prob_<label>` column per class.
    """
    import mlflow.pyfunc

    if tracking_uri:
        tracking_uri = absolute_sqlite(tracking_uri)
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    sep = "\t" if input_path.endswith(".tsv") else ","
    frame = pd.read_csv(input_path, sep=sep)
    if text_column not in frame.columns:
        raise ValueError(f"{input_path}: column {text_column!r} not found; columns found: "
                         f"{list(frame.columns)}. Pass --text-column.")
    model = mlflow.pyfunc.load_model(model_uri)
    result = model.predict(pd.DataFrame({TEXT_COLUMN: frame[text_column].astype(str)}))
    result = result.rename(columns={"label": "predicted_label"})
    out = pd.concat([frame.reset_index(drop=True), result.reset_index(drop=True)], axis=1)
    out.to_csv(output_path, index=False)
    return out
