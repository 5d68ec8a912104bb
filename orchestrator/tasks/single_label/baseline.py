"""The yardstick every study is measured against: TF-IDF + class-balanced logistic regression
(for sentence pairs, TF-IDF of both sides plus their overlap: `text_pairs.features`).

Fits in seconds on the same training split, so users see what fine-tuning bought them.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from orchestrator.data import Splits
from orchestrator.tasks.single_label.metrics import classification_metrics
from orchestrator.tasks.text_pairs import features, rows

def fit_baseline(splits: Splits, seed: int = 42) -> tuple[dict[str, float], np.ndarray]:
    """Its validation and test scores, and its test predictions (class ids)."""
    train = rows(splits.data["train"])
    pipe = make_pipeline(
        features(train),
        LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed),
    )
    pipe.fit(train, np.asarray(splits.data["train"]["label"]))
    out = {}
    for split, prefix in (("validation", "val"), ("test", "test")):
        probs = pipe.predict_proba(rows(splits.data[split]))
        # predict_proba's columns follow the classes seen in training; align them to all labels.
        full = np.zeros((len(probs), splits.num_labels))
        full[:, pipe.classes_] = probs
        m = classification_metrics(np.asarray(splits.data[split]["label"]), full, splits.label_names, prefix)
        out[f"baseline_{prefix}_macro_f1"] = m[f"{prefix}_macro_f1"]
        out[f"baseline_{prefix}_accuracy"] = m[f"{prefix}_accuracy"]
        predictions = full.argmax(-1) if len(full) else np.zeros(0, dtype=int)
    return out, predictions
