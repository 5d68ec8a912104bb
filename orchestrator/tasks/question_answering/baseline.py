"""The question_answering baseline: a sliding-window lexical-overlap answer picker, no model.

For each question: the context is cut into sentences; the sentence whose tokens share the most
IDF weight with the question's content tokens (stopwords and punctuation left out; IDF over the
training contexts' sentences) is the one the answer is looked for in; there, the answer is the
run of at most N tokens that are not question tokens, nearest (in tokens) to the shared ones.
N is chosen on the training split (the best F1 of a few), so the baseline is fitted on train
only. Tokens are words for English, single characters for Chinese. It always answers.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from orchestrator.tasks.question_answering import metrics

NAME = "lexical overlap: the sentence sharing most question words (IDF), the nearest span of up to N other tokens"
LENGTHS = (1, 2, 3, 4, 6, 8)  # the N tried
SENTENCE = re.compile(r"[^.!?。！？；;\n]+[.!?。！？；;\n]*")
WORD = re.compile(r"\w+", re.UNICODE)
CJK_CHAR = re.compile(r"[\u4e00-\u9fff]|[^\W\d_]+|\d+", re.UNICODE)
STOPWORDS = set("""a an the of in on at to for by with from as is are was were be been being do does did what which
who whom whose when where why how that this these those it its and or not no there their they he she his her him
than then into about over after before during under many much one ones any some all has have had can could would
should will may might must i you we our your name named called""".split())
ZH_STOPWORDS = set("的了是在和与及或么什哪谁几多少怎样吗呢吧个为有被把从对")
TRAIN_SAMPLE = 600  # training questions N is chosen on: enough to rank a few lengths, cheap


def tokens(text: str, lang: str) -> list[tuple[str, int, int]]:
    """(token lower-cased, start char, end char): words, or CJK characters one by one."""
    pattern = CJK_CHAR if lang == "zh" else WORD
    return [(m.group().lower(), m.start(), m.end()) for m in pattern.finditer(text)]


def _content(tokens_: list[tuple[str, int, int]], lang: str) -> set[str]:
    stop = ZH_STOPWORDS if lang == "zh" else STOPWORDS
    return {t for t, _, _ in tokens_ if t not in stop}


class LexicalOverlap:
    def __init__(self, lang: str, idf: dict[str, float], length: int = 3):
        self.lang, self.idf, self.length = lang, idf, length
        self.default_idf = max(idf.values(), default=1.0)

    @classmethod
    def fit(cls, questions: list[str], contexts: list[str], references: list[list[str]]) -> LexicalOverlap:
        lang = metrics.language(contexts)
        sentences = [s.group() for c in dict.fromkeys(contexts) for s in SENTENCE.finditer(c)]
        df = Counter(t for s in sentences for t in {t for t, _, _ in tokens(s, lang)})
        idf = {t: math.log((1 + len(sentences)) / (1 + n)) + 1 for t, n in df.items()}
        model = cls(lang, idf)
        sample = list(range(min(TRAIN_SAMPLE, len(questions))))
        best = None
        for length in LENGTHS:
            model.length = length
            preds = [model.answer(questions[i], contexts[i])[0] for i in sample]
            f1 = metrics.per_row(preds, [references[i] for i in sample], lang)[:, 1].mean() if sample else 0.0
            if best is None or f1 > best[0]:
                best = (f1, length)
        model.length = best[1]
        return model

    def answer(self, question: str, context: str) -> tuple[str, int, int]:
        """(answer text, start char, end char)."""
        asked = _content(tokens(question, self.lang), self.lang)
        best, best_score = None, -1.0
        for match in SENTENCE.finditer(context):
            found = tokens(match.group(), self.lang)
            score = sum(self.idf.get(t, self.default_idf) for t in {t for t, _, _ in found} & asked)
            if found and score > best_score:
                best, best_score = [(t, s + match.start(), e + match.start()) for t, s, e in found], score
        if not best:
            return "", -1, -1
        stop = ZH_STOPWORDS if self.lang == "zh" else STOPWORDS
        shared = [i for i, (t, _, _) in enumerate(best) if t in asked]
        free = {i for i, (t, _, _) in enumerate(best) if t not in asked} or set(range(len(best)))
        seeds = [i for i in free if best[i][0] not in stop] or sorted(free)
        anchor = np.array(shared or [0])
        # The free content token nearest a shared one, grown by its free neighbours (nearest the
        # shared tokens first) up to N tokens; stopwords may sit inside the span, not at its ends.
        lo = hi = min(seeds, key=lambda i: (np.abs(anchor - i).min(), i))
        while hi - lo + 1 < self.length:
            grown = [i for i in (lo - 1, hi + 1) if i in free]
            if not grown:
                break
            nearest = min(grown, key=lambda i: np.abs(anchor - i).min())
            lo, hi = min(lo, nearest), max(hi, nearest)
        while hi > lo and best[hi][0] in stop:
            hi -= 1
        while lo < hi and best[lo][0] in stop:
            lo += 1
        start, end = best[lo][1], best[hi][2]
        return context[start:end], start, end
