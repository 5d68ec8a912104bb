"""Text features the tasks' TF-IDF baselines share: word or, for CJK text, character n-grams."""

from __future__ import annotations

import re

from sklearn.feature_extraction.text import TfidfVectorizer

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
