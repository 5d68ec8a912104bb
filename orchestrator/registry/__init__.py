"""The MLflow model registry: the champion rule and its paired gate, promotion history, encoders, the pyfunc.

`versions` registers a champion and moves `@champion` only to a better score in the metric's
direction and, through `gate`, only when a paired bootstrap on the same test rows finds it better
beyond noise; `promotion` is `promote`/`rollback` with their history; the registered model's class is
`pyfunc` (loaded through `pyfunc_model.py`, an MLflow "models from code" file).
"""
