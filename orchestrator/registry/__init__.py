"""The MLflow model registry: the champion rule, promotion history, encoders, the pyfunc.

`versions` registers a champion and moves `@champion` only to a better score in the metric's
direction; `promotion` is `promote`/`rollback` with their history; the registered model's class is
`pyfunc` (loaded through `pyfunc_model.py`, an MLflow "models from code" file).
"""
