"""Question + context to overlapping windows, answers to token positions, and the best span back.

Encoding follows Hugging Face's run_qa recipe: the pair (question, context) goes to a fast
tokenizer with `truncation="only_second"`, so the question is whole in every window and a long
context is cut into windows that share `doc_stride` tokens (`return_overflowing_tokens`). An
answer becomes the positions of its first and last token (`return_offsets_mapping`); a window that
does not hold the whole answer, and an unanswerable question, point at position 0 ([CLS]): the
answer is never truncated away, the window only learns that it is elsewhere.

Per encoded row, `example` is the question's index and `offsets` per position the [start, end)
characters of a context token, or [-1, -1] for the question and the special tokens, so they can
never be an answer. `merge` reads each window's start and end logits as log-probabilities over its
context tokens and [CLS], keeps each question's best span (end >= start, at most
`max_answer_length` tokens) over all its windows, and the lowest [CLS] ("no answer") score of
its windows: the window most sure the answer is inside it speaks for the question.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NO_SPAN = -1e9  # the score of a question none of whose windows holds a valid span
NULL = 0  # the position of the "no answer" token ([CLS]) in a window
OUTPUT_WIDTH = 4  # start char, end char, span log-probability, no-answer log-probability


class WindowError(ValueError):
    """Windows that cannot be cut with these settings; the message names the setting or question."""


def question_room(tokenizer, max_length: int) -> int:
    """Tokens a window holds for the question and the context together."""
    return max_length - tokenizer.num_special_tokens_to_add(pair=True)


def fit_questions(questions: list[str], ids: Sequence[str], tokenizer, max_length: int, doc_stride: int,
                  strict: bool) -> list[str]:
    """The questions, each leaving more than `doc_stride` context tokens in a window (else the
    windows could not move on). `strict`: refuse a longer one naming it (training and evaluation
    data); else cut it to fit (a question sent to the registered model)."""
    room = question_room(tokenizer, max_length)
    if room <= doc_stride + 1:
        raise WindowError(f"training.doc_stride ({doc_stride}) leaves no context in a window of training.max_length "
                          f"({max_length}) with a question and {max_length - room} special tokens; lower "
                          f"training.doc_stride or raise training.max_length")
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    out = list(questions)
    most = room - doc_stride - 1  # question tokens that still leave doc_stride + 1 context tokens
    for i, tokens in enumerate(encoded["input_ids"]):
        if len(tokens) <= most:
            continue
        if strict:
            raise WindowError(f"question {ids[i]!r} is {len(tokens)} tokens long: with training.max_length "
                              f"{max_length} and training.doc_stride {doc_stride}, a window holds a question of at "
                              f"most {most} tokens beside its context; raise training.max_length, lower "
                              f"training.doc_stride, or shorten the question")
        out[i] = questions[i][:encoded["offset_mapping"][i][most - 1][1]] if most > 0 else ""
    return out


def encode(questions: list[str], contexts: list[str], ids: Sequence[str], tokenizer, max_length: int,
           doc_stride: int, answers: Sequence[dict] | None = None, strict: bool = True) -> dict[str, list]:
    """Columns of the encoded windows (one or more per question). `answers`: per question
    {"text": [...], "answer_start": [...]}, the first of which is learned; None: no labels."""
    if not getattr(tokenizer, "is_fast", False):
        raise WindowError(f"question_answering needs a fast (Rust) tokenizer for its offset mappings; "
                          f"{type(tokenizer).__name__} is not one. Use a model that ships tokenizer.json")
    if not len(questions):  # the tokenizer fails on an empty batch (a request whose every row misses an input)
        empty = {"input_ids": [], "attention_mask": [], "example": [], "offsets": []}
        return {**empty, **({"token_type_ids": []} if "token_type_ids" in tokenizer.model_input_names else {}),
                **({"labels": []} if answers is not None else {})}
    questions = fit_questions([q.lstrip() for q in questions], ids, tokenizer, max_length, doc_stride, strict)
    # verbose=False: contexts longer than max_length are expected (they are cut into windows).
    enc = tokenizer(questions, list(contexts), truncation="only_second", max_length=max_length, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, verbose=False)
    has_types = "token_type_ids" in enc
    out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "example": [], "offsets": []}
    if has_types:
        out["token_type_ids"] = enc["token_type_ids"]
    if answers is not None:
        out["labels"] = []
    for w, example in enumerate(enc["overflow_to_sample_mapping"]):
        sequence = enc.sequence_ids(w)
        offsets = [[int(s), int(e)] if part == 1 else [-1, -1]
                   for (s, e), part in zip(enc["offset_mapping"][w], sequence)]
        out["example"].append(int(example))
        out["offsets"].append(offsets)
        if answers is not None:
            out["labels"].append(answer_positions(offsets, answers[example]))
    return out


def answer_positions(offsets: Sequence[Sequence[int]], answers: dict) -> list[int]:
    """[start token, end token] of the first answer in a window, or [NULL, NULL] where the question
    has no answer or the window does not hold all of it."""
    if not answers["text"]:
        return [NULL, NULL]
    start = answers["answer_start"][0]
    end = start + len(answers["text"][0])
    inside = [p for p, (s, _) in enumerate(offsets) if s >= 0]
    if not inside or offsets[inside[0]][0] > start or offsets[inside[-1]][1] < end:
        return [NULL, NULL]
    first = max(p for p in inside if offsets[p][0] <= start)
    last = min(p for p in inside if offsets[p][1] >= end)
    return [first, max(first, last)]


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def best_span(logits: np.ndarray, offsets: np.ndarray, max_answer_length: int) -> tuple[float, int, int, float]:
    """(span log-probability, start char, end char, no-answer log-probability) of one window:
    start and end are log-softmaxed over the window's context tokens and [CLS]."""
    logits = np.asarray(logits, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    if len(logits) != len(offsets):
        raise ValueError(f"a row of {len(logits)} logits for an encoded row of {len(offsets)} tokens "
                         f"(trim each row to its attention mask)")
    valid = offsets[:, 0] >= 0
    allowed = valid.copy()
    allowed[NULL] = True
    start = log_softmax(np.where(allowed, logits[:, 0], -np.inf))
    end = log_softmax(np.where(allowed, logits[:, 1], -np.inf))
    null = float(start[NULL] + end[NULL])
    best = (NO_SPAN, -1, -1)
    n = len(logits)
    for length in range(min(max_answer_length, n)):  # the span's last token is `length` after its first
        scores = start[:n - length] + end[length:]
        ok = valid[:n - length] & valid[length:]
        if not ok.any():
            continue
        scores = np.where(ok, scores, -np.inf)
        i = int(scores.argmax())
        if scores[i] > best[0]:
            best = (float(scores[i]), int(offsets[i, 0]), int(offsets[i + length, 1]))
    return best[0], best[1], best[2], null


def merge(rows: Sequence[np.ndarray], example: Sequence[int], offsets: Sequence, max_answer_length: int) -> np.ndarray:
    """Per question, (start char, end char, span log-probability, no-answer log-probability): its
    best span over all its windows (start -1 where none holds one) and its lowest no-answer score."""
    if len(rows) != len(example):
        raise ValueError(f"{len(rows)} rows of logits for {len(example)} encoded rows")
    out = np.zeros((max(example, default=-1) + 1, OUTPUT_WIDTH), dtype=np.float64)
    out[:, :2] = -1
    out[:, 2] = NO_SPAN
    out[:, 3] = np.inf
    for row, ex, places in zip(rows, example, offsets):
        score, s, e, null = best_span(row, places, max_answer_length)
        if score > out[ex, 2]:
            out[ex, :3] = (s, e, score)
        out[ex, 3] = min(out[ex, 3], null)
    return out
