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

TEXT_COLUMN = "text"  # the model's one input column (its signature's)
FORMAT_ENV = "ORCHESTRATOR_MODEL_FORMAT"  # pytorch (default), onnx or int8: what computes the predictions


class ClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: a DataFrame with a `text` column in, the task's predictions out."""

    def load_context(self, context):
        # The format to run, from the environment: `serve --format` sets it for its child (`mlflow models
        # serve` takes no model config), `predict --format` around its load (`lookup.load_pyfunc`).
        runtime = os.environ.get(FORMAT_ENV) or "pytorch"
        self.classifier = Classifier(context.artifacts["classifier"], runtime=runtime)

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
