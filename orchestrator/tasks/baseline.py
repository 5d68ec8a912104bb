"""The yardstick every study is measured against: TF-IDF + class-balanced logistic regression.

Fits in seconds on the same training split, so users see what fine-tuning bought them.
"""

from __future__ import annotations

import re

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from orchestrator.data import Splits
from orchestrator.tasks.metrics import classification_metrics

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


def is_cjk(texts: list[str], share: float = 0.3) -> bool:
    """Mostly Chinese, Japanese or Korean characters: text written without spaces between words."""
    sample = "".join(texts[:2000])
    letters = sum(ch.isalnum() for ch in sample)
    return bool(letters) and len(CJK.findall(sample)) / letters >= share


def vectorizer(texts: list[str]) -> TfidfVectorizer:
    """Word 1-2-grams; for CJK text, where words are not separated, character 1-3-grams (a word
    n-gram there would be a whole clause)."""
    if is_cjk(texts):
        return TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True)
    return TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)


def fit_baseline(splits: Splits, seed: int = 42) -> dict[str, float]:
    train = list(splits.data["train"]["text"])
    pipe = make_pipeline(
        vectorizer(train),
        LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed),
    )
    pipe.fit(train, np.asarray(splits.data["train"]["label"]))
    out = {}
    for split, prefix in (("validation", "val"), ("test", "test")):
        probs = pipe.predict_proba(list(splits.data[split]["text"]))
        # predict_proba's columns follow the classes seen in training; align them to all labels.
        full = np.zeros((len(probs), splits.num_labels))
        full[:, pipe.classes_] = probs
        m = classification_metrics(np.asarray(splits.data[split]["label"]), full, splits.label_names, prefix)
        out[f"baseline_{prefix}_macro_f1"] = m[f"{prefix}_macro_f1"]
        out[f"baseline_{prefix}_accuracy"] = m[f"{prefix}_accuracy"]
    return out
