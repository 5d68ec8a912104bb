"""Exact match and F1 of predicted answers: SQuAD's official definition, and CMRC 2018's for Chinese.

English (SQuAD v1.1/v2.0 `evaluate-v2.0.py`): an answer is normalised (lower case, punctuation
removed, the articles a/an/the removed, whitespace collapsed); exact match is equality of the
normalised texts, F1 the overlap of their bags of tokens; an empty answer (no answer) scores 1
against an empty reference and 0 against any other (SQuAD 2.0's rule).
Chinese (CMRC 2018's `cmrc2018_evaluate.py`): lower case, CMRC's punctuation removed, every CJK
character a token and runs of other characters split on spaces (CMRC uses nltk's word_tokenize
there; nltk is not a dependency, and on answer-sized text the two agree but for ASCII punctuation,
kept here as tokens of their own); F1 from the longest common substring of the token lists.
Both take the best over a question's reference answers.

`per_row` gives each question's exact match, F1 and a 1 (its count), so that a metric is a column
sum divided by the count: exactly what `evaluate` reports and what the bootstrap resamples.
"""

from __future__ import annotations

import re
import string
from collections import Counter

import numpy as np

from orchestrator.tasks.bootstrap import ratio

METRICS = ("exact_match", "f1")
ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
PUNCTUATION = set(string.punctuation)
CJK = re.compile(r"[\u4e00-\u9fa5]")  # CMRC's test for a Chinese character
CMRC_PUNCTUATION = {"-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！", "“", "”",
                    "；", "’", "《", "》", "……", "·", "、", "「", "」", "（", "）", "－", "～", "『", "』"}
ASCII_PUNCTUATION = re.compile(r"([%s])" % re.escape(string.punctuation))
CJK_SHARE = 0.3  # contexts with at least this share of CJK characters are scored the Chinese way
SAMPLE = 200  # contexts read to decide


def language(contexts: list[str]) -> str:
    """"zh" where the contexts are mostly Chinese (scored character by character), else "en"."""
    text = "".join(contexts[:SAMPLE])
    letters = [c for c in text if not c.isspace()]
    if not letters:
        return "en"
    return "zh" if sum(bool(CJK.match(c)) for c in letters) / len(letters) >= CJK_SHARE else "en"


# ---------------------------------------------------------------- SQuAD

def normalize(text: str) -> str:
    text = "".join(c for c in text.lower() if c not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def _bag_f1(pred: list[str], gold: list[str]) -> float:
    if not pred or not gold:
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(prediction: str, references: list[str]) -> tuple[float, float]:
    references = references or [""]  # no answer: the empty string
    pred = normalize(prediction)
    em = max(float(pred == normalize(r)) for r in references)
    f1 = max(_bag_f1(pred.split(), normalize(r).split()) for r in references)
    return em, f1


# ---------------------------------------------------------------- CMRC 2018

def _strip_punctuation(text: str) -> str:
    return "".join(c for c in text.lower().strip() if c not in CMRC_PUNCTUATION)


def segments(text: str) -> list[str]:
    """CMRC's mixed segmentation (punctuation removed): CJK characters one by one, other runs by word."""
    out, run = [], ""
    for c in _strip_punctuation(text):
        if CJK.match(c):
            out += _words(run)
            out.append(c)
            run = ""
        else:
            run += c
    return out + _words(run)


def _words(run: str) -> list[str]:
    return ASCII_PUNCTUATION.sub(r" \1 ", run).split()


def _longest_common_substring(a: list[str], b: list[str]) -> int:
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def _lcs_f1(pred: list[str], gold: list[str]) -> float:
    if not pred or not gold:
        return float(pred == gold)
    same = _longest_common_substring(gold, pred)
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def cmrc_scores(prediction: str, references: list[str]) -> tuple[float, float]:
    references = references or [""]
    pred = _strip_punctuation(prediction)
    em = max(float(pred == _strip_punctuation(r)) for r in references)
    f1 = max(_lcs_f1(segments(prediction), segments(r)) for r in references)
    return em, f1


# ---------------------------------------------------------------- per row and in all

def per_row(predictions: list[str], references: list[list[str]], lang: str) -> np.ndarray:
    """(questions, 3): each question's exact match, F1 and 1."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} questions")
    scores = cmrc_scores if lang == "zh" else squad_scores
    counts = np.ones((len(predictions), 3))
    for i, (p, refs) in enumerate(zip(predictions, references)):
        counts[i, :2] = scores(p, list(refs))
    return counts


def score(sums: np.ndarray) -> dict:
    """Summed `per_row` counts (or (B, 3) resamples) -> {"exact_match", "f1"}: means over the questions."""
    return {"exact_match": ratio(sums[..., 0], sums[..., 2]), "f1": ratio(sums[..., 1], sums[..., 2])}


def fit_null_threshold(answered: np.ndarray, unanswered: np.ndarray, margin: np.ndarray) -> tuple[float, float]:
    """SQuAD 2.0's best threshold: "no answer" where a question's `margin` (no-answer score less
    best-span score) is above it. `answered` / `unanswered`: per question, its F1 when the span is
    given / when no answer is. Returns (threshold, mean F1 there); ties go to answering."""
    order = np.argsort(margin, kind="stable")
    m = np.asarray(margin, dtype=np.float64)[order]
    gain = np.concatenate([[0.0], np.cumsum(answered[order] - unanswered[order])])  # the k lowest answered
    totals = unanswered.sum() + gain
    # Between equal margins no threshold separates: only the last of a run of ties is a cut.
    cuts = [0] + [k for k in range(1, len(m) + 1) if k == len(m) or m[k] > m[k - 1]]
    k = max(cuts, key=lambda c: (totals[c], c))
    threshold = float(m[0] - 1.0) if k == 0 else float(m[k - 1])
    return threshold, float(totals[k] / max(len(m), 1))
