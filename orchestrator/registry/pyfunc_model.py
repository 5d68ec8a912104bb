"""Entry point for MLflow "models from code": the registered model stores this file, not a pickle.

Loading `models:/NAME@ALIAS` runs it, which needs only this package (and its dependencies) installed.
MLflow runs it as a file (`versions.PYFUNC_CODE`), not as a module of this package: absolute imports only.
"""

import mlflow

from orchestrator.registry.pyfunc import ClassifierPyfunc

mlflow.models.set_model(ClassifierPyfunc())
