"""The pyfunc's old import path, kept for models registered before the package's layout by stage.

MLflow stores a copy of `registry/pyfunc_model.py` with every registered version and runs that
copy on load; versions registered before 2026-12-07 import `orchestrator.serve.ClassifierPyfunc`.
Without this module they would no longer load.
"""

from orchestrator.registry.pyfunc import ClassifierPyfunc

__all__ = ["ClassifierPyfunc"]
