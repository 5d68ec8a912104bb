"""The registered model as MLflow serves it: `ClassifierPyfunc`, a pyfunc around `Classifier`.

`pyfunc_model.py` is the file MLflow stores and runs to build it ("models from code"), so a
registered version holds no pickle of this class: only the saved model's files (its artifact
`classifier`) and the name of this package.
"""

from __future__ import annotations

import os

import mlflow.pyfunc
import pandas as pd

from orchestrator.training.saved_model import Classifier

TEXT_COLUMN = "text"  # the model's (first) input column; a pair model's second is `text_pair`
FORMAT_ENV = "ORCHESTRATOR_MODEL_FORMAT"  # pytorch (default), onnx or int8: what computes the predictions


class ClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: a DataFrame with the model's input columns in (`text`; `text` and `text_pair`;
    `question` and `context`), the task's predictions out."""

    def load_context(self, context):
        # The format to run, from the environment: `serve --format` sets it for its child (`mlflow models
        # serve` takes no model config), `predict --format` around its load (`lookup.load_pyfunc`).
        runtime = os.environ.get(FORMAT_ENV) or "pytorch"
        self.classifier = Classifier(context.artifacts["classifier"], runtime=runtime)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        # ("text",); ("text", "text_pair") for pairs; ("question", "context").
        columns = self.classifier.input_columns if hasattr(self, "classifier") else (TEXT_COLUMN,)
        if isinstance(model_input, pd.DataFrame):
            # No stand-in column: the first column of a frame without `text` is as likely an id as a
            # text, and predicting ids is a guess. (MLflow's schema check refuses such a frame first
            # wherever the signature is enforced; this holds where it is not.)
            absent = [c for c in columns if c not in model_input.columns]
            if absent:
                shown = f"column {absent[0]!r}" if len(absent) == 1 else f"columns {absent}"
                raise ValueError(f"the input has no {shown} (columns: {list(model_input.columns)[:20]}); send "
                                 f"this model's inputs in columns named {list(columns)}")
            values = {c: model_input[c].tolist() for c in columns}
        elif len(columns) > 1:
            raise ValueError(f"this model takes the columns {list(columns)}; send a DataFrame with them")
        else:
            values = list(model_input)
        return self.classifier.predict_frame(values)  # missing values stay missing: no guess for them
