"""Texts, alone or in pairs: what the text tasks (single_label, regression) read, encode and fit
their baselines on.

With `data.text_pair_column` every example is two texts (premise and hypothesis, two questions,
two captions): the tokenizer gets them as `(text, text_pair)`, so the encoder sees
`[CLS] a [SEP] b [SEP]` with segment ids 0 and 1 (`token_type_ids`), as GLUE's and CLUE's
sentence-pair recipes encode them; a pair too long for `training.max_length` is cut by
`training.truncation` (`longest_first`: the longer text, token by token). The split keeps the
second text in the column `text_pair` (`PAIR`), which is also the registered model's second input
column, so a pair model is served with `text` and `text_pair`; a row missing either gets no
prediction, as a row without its text does.

The baseline's features (`features`) are TF-IDF over each side plus what relates the two (how many
words they share, how long each is), which a bag of words of one side alone cannot see: "a man
sleeps" / "a man is sleeping" and "a man sleeps" / "a dog barks" differ mostly in overlap.
"""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp
from datasets import Dataset, Features, Value
from sklearn.base import BaseEstimator, TransformerMixin

from orchestrator.config.schema import DataConfig
from orchestrator.data.read import DataError, as_text, check_scalars, is_missing
from orchestrator.data.splits import where
from orchestrator.tasks.text_features import is_cjk, vectorizer

TEXT, PAIR = "text", "text_pair"  # the split's (and the registered model's input) columns
DEFAULT_TRUNCATION = "longest_first"
WORD = re.compile(r"\w+", re.UNICODE)


def text_columns(cfg: DataConfig) -> list[str]:
    """The data files' columns holding the texts: the text, and the pair's second text when set."""
    return [cfg.text_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])


def read_texts(cfg: DataConfig, cells: dict[str, list], split: str) -> dict[str, list[str | None]]:
    """{"text": [...]} (and "text_pair") of one split's cells: each checked to be a scalar and read
    as written (None where missing). A pair column empty in every row is refused: it is the wrong
    column (or a file without pairs), and a pair model trained on nothing beside would be a guess."""
    out = {}
    for key, column in zip((TEXT, PAIR), text_columns(cfg)):
        check_scalars(cells[column], where(cfg, split), column)
        out[key] = [as_text(v) for v in cells[column]]
    if PAIR in out and out[PAIR] and all(is_missing(t) for t in out[PAIR]):
        raise DataError(f"{where(cfg, split)}: column {cfg.text_pair_column!r} (data.text_pair_column) is empty in "
                        f"all {len(out[PAIR])} rows; name the column that holds each row's second text, or remove "
                        f"data.text_pair_column for single texts")
    return out


def present_rows(texts: dict[str, list]) -> list[int]:
    """Rows where every text is present (a pair with one side missing is not a pair)."""
    columns = list(texts.values())
    return [i for i in range(len(columns[0])) if not any(is_missing(c[i]) for c in columns)]


def is_pair(columns) -> bool:
    """Whether a split's (or an encoded batch's) columns hold pairs."""
    return PAIR in columns


def encode_texts(tokenizer, batch, max_length: int, truncation: str = DEFAULT_TRUNCATION) -> dict:
    """The tokenizer on a batch's texts, as pairs where the batch has `text_pair`.

    `only_first` (`only_second`) cuts only the first (second) text; a pair whose other text alone
    fills the window cannot be cut that way (the tokenizer refuses the whole batch), so such a pair
    is cut `longest_first` instead: both texts keep a share, and no row of a batch, in training
    or in a prediction, fails for another row's length."""
    if PAIR not in batch:
        return dict(tokenizer(batch[TEXT], truncation=True, max_length=max_length))
    first, second = list(batch[TEXT]), list(batch[PAIR])
    if truncation == DEFAULT_TRUNCATION or not first:
        return dict(tokenizer(first, second, truncation=truncation, max_length=max_length))
    kept = second if truncation == "only_first" else first  # the text this truncation never cuts
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    lengths = [len(ids) for ids in tokenizer(kept, add_special_tokens=False)["input_ids"]]
    fallback = [i for i, n in enumerate(lengths) if n >= room]
    if not fallback:
        return dict(tokenizer(first, second, truncation=truncation, max_length=max_length))
    skip = set(fallback)
    rest = [i for i in range(len(first)) if i not in skip]
    out: dict[str, list] = {}
    for rows, how in ((rest, truncation), (fallback, DEFAULT_TRUNCATION)):
        if not rows:
            continue
        part = tokenizer([first[i] for i in rows], [second[i] for i in rows], truncation=how, max_length=max_length)
        for name, values in part.items():
            column = out.setdefault(name, [None] * len(first))
            for i, value in zip(rows, values):
                column[i] = value
    return out


# ---------------------------------------------------------------- the tasks' side

class TextInputs:
    """What a `Task` whose examples are texts, or sentence pairs, shares (single_label,
    regression): how a pair is cut, the registered model's input columns, its examples."""

    reads_text_pairs = True
    _truncation: str | None = None  # a checkpoint's (`restore`), where there is no experiment

    @property
    def truncation(self) -> str:
        """How a sentence pair too long for max_length is cut (`training.truncation`)."""
        if self.cfg is not None:
            return self.cfg.training.truncation
        return self._truncation or DEFAULT_TRUNCATION

    def encoding_key(self) -> str:
        return f"{self.name}|{self.truncation}"

    def encode_examples(self, examples: Dataset, tokenizer, max_length: int, labels=None,
                        fingerprint: str | None = None) -> Dataset:
        """`examples` tokenized (texts, or pairs), with `labels(batch)` as each batch's labels when given."""
        truncation = self.truncation

        def encode(batch):
            enc = encode_texts(tokenizer, batch, max_length, truncation)
            if labels is not None:
                enc["labels"] = labels(batch)
            return enc

        return examples.map(encode, batched=True, remove_columns=examples.column_names,
                            desc=f"tokenizing (max_length={max_length})", new_fingerprint=fingerprint)

    def input_columns(self, saved: dict) -> tuple[str, ...]:
        return input_columns(saved)

    def restore(self, saved: dict) -> None:
        self._truncation = truncation_of(saved)

    def examples_from_texts(self, texts: list, saved: dict) -> Dataset:
        return examples(texts, saved)


# ---------------------------------------------------------------- what a checkpoint keeps

def pair_settings(columns, truncation: str | None) -> dict:
    """Saved with a checkpoint (`Task.saved_settings`): whether its inputs are pairs, and how a
    pair is cut; a checkpoint of single texts keeps nothing (older checkpoints read the same)."""
    return {"text_pair": True, "truncation": truncation or DEFAULT_TRUNCATION} if is_pair(columns) else {}


def input_columns(saved: dict) -> tuple[str, ...]:
    """The registered model's input columns."""
    return (TEXT, PAIR) if saved.get("text_pair") else (TEXT,)


def truncation_of(saved: dict) -> str:
    return saved.get("truncation") or DEFAULT_TRUNCATION


def examples(inputs: list, saved: dict) -> Dataset:
    """Examples from the registered model's inputs: texts, or (text, text_pair) tuples."""
    if saved.get("text_pair"):
        if any(not isinstance(x, (tuple, list)) or len(x) != 2 for x in inputs):
            raise ValueError("a sentence-pair model takes (text, text_pair) pairs")
        return Dataset.from_dict({TEXT: [str(a) for a, _ in inputs], PAIR: [str(b) for _, b in inputs]},
                                 features=Features({TEXT: Value("string"), PAIR: Value("string")}))
    return Dataset.from_dict({TEXT: [str(t) for t in inputs]}, features=Features({TEXT: Value("string")}))


def rows(dataset) -> list:
    """A split's inputs: its texts, or (text, text_pair) tuples."""
    if is_pair(dataset.column_names):
        return list(zip(dataset[TEXT], dataset[PAIR]))
    return list(dataset[TEXT])


def shown(dataset) -> list[str]:
    """Each example as one line for error-analysis tables (a pair as `a ||| b`)."""
    return [f"{r[0]} ||| {r[1]}" if isinstance(r, tuple) else r for r in rows(dataset)]


# ---------------------------------------------------------------- baseline features

def features(train: list):
    """A fitted transformer from `rows` to baseline features: TF-IDF of the texts; for pairs,
    TF-IDF of each side (one vocabulary fitted on both) plus their overlap features."""
    if train and isinstance(train[0], tuple):
        return PairFeatures().fit(train)
    return vectorizer(train).fit(train)


class PairFeatures(BaseEstimator, TransformerMixin):
    """[tfidf(a), tfidf(b), tfidf(a) * tfidf(b), overlap(a, b)] for (a, b) pairs. The product keeps
    the words both sides weigh (what they share, by word); `overlap` is shared-word shares, the
    Jaccard index, lengths and their ratio, scaled to a few units (word overlap for spaced text,
    character overlap for CJK)."""

    def fit(self, pairs: list, y=None):
        sides = [a for a, _ in pairs] + [b for _, b in pairs]
        self.vectorizer_ = vectorizer(sides).fit(sides)
        self.cjk_ = is_cjk(sides)
        return self

    def transform(self, pairs: list):
        a = self.vectorizer_.transform([x for x, _ in pairs])
        b = self.vectorizer_.transform([y for _, y in pairs])
        overlap = sp.csr_matrix(np.array([self._overlap(x, y) for x, y in pairs]).reshape(len(pairs), -1))
        return sp.hstack([a, b, a.multiply(b), overlap]).tocsr()

    def _units(self, text: str) -> set[str]:
        return {c for c in text if not c.isspace()} if self.cjk_ else set(WORD.findall(text.lower()))

    def _overlap(self, x: str, y: str) -> list[float]:
        ux, uy = self._units(x), self._units(y)
        shared, union = len(ux & uy), len(ux | uy)
        lx, ly = max(len(ux), 1), max(len(uy), 1)
        return [shared / lx, shared / ly, shared / union if union else 0.0, np.log1p(lx) / 4, np.log1p(ly) / 4,
                min(lx, ly) / max(lx, ly)]
