"""MLflow tracking: the parent run per study, a nested run per trial, metrics and artifacts.

`client` is the `Tracker` (and `BestEffort`, which lets a trial outlive a short store outage).
"""
