"""Entry point for MLflow "models from code": the registered model stores this file, not a pickle.

Loading `models:/NAME@ALIAS` runs it, which needs only this package (and its dependencies) installed.
"""

import mlflow

from orchestrator.serving.predict import ClassifierPyfunc

mlflow.models.set_model(ClassifierPyfunc())
