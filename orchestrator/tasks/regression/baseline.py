"""The yardstick of a regression study: ridge regression on TF-IDF (for sentence pairs, TF-IDF of
both sides plus their overlap: `text_pairs.features`).

Fits in seconds on the same training split, so users see what fine-tuning bought them.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

from orchestrator.data import Splits
from orchestrator.tasks.regression.metrics import regression_metrics
from orchestrator.tasks.text_pairs import features, rows


def fit_baseline(splits: Splits, seed: int = 42) -> tuple[dict[str, float], np.ndarray]:
    """Its validation and test scores (`baseline_<split>_<metric>`), and its test predictions."""
    train = rows(splits.data["train"])
    pipe = make_pipeline(features(train), Ridge(alpha=1.0, random_state=seed))
    pipe.fit(train, np.asarray(splits.data["train"]["label"], dtype=np.float64))
    out, predictions = {}, np.zeros(0)
    for split, prefix in (("validation", "val"), ("test", "test")):
        examples = splits.data[split]
        predictions = pipe.predict(rows(examples)).astype(np.float64) if len(examples) else np.zeros(0)
        truth = np.asarray(examples["label"], dtype=np.float64)
        out.update({f"baseline_{k}": v for k, v in regression_metrics(predictions, truth, prefix).items()})
    return out, predictions
