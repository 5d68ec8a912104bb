"""Token classification: a tag per token (named entities with BIO/BIOES, word segmentation with BMES).

Examples are sentences: a list of tokens (characters for Chinese, words otherwise) and a tag per
token, from json/jsonl/parquet list columns, a hub dataset, or CoNLL files (`token tag` per
line, a blank line between sentences). Tag schemes, spans and scores live in `tagging.py`;
subword alignment, windows and their merging in `windows.py`; the model in `token_heads.py` (beside it in this package).

Metrics are entity-level (seqeval, micro-averaged) for BIO/BIOES, word-level (SIGHAN) for BMES,
plus word-level tag accuracy and loss. The module runs past ~400 lines because reading and
checking sentences (CoNLL included) and the CRF baseline belong to this task alone.
"""

from __future__ import annotations

import logging
import re
from collections import Counter

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

from orchestrator.config.schema import TOKEN_HEADS, DataConfig, ExperimentConfig, TrainingConfig
from orchestrator.data import fingerprint
from orchestrator.data.read import DataError, local_file
from orchestrator.data.splits import SPLITS, Splits, carve, drop_empty, read_columns, warn_overlap, where
from orchestrator.tasks import thresholds
from orchestrator.tasks.token_classification import tagging, windows
from orchestrator.tasks.base import Artifact, Evaluation, Task, safe_name
from orchestrator.tasks.bootstrap import RowStats, f1_of_rates, ratio

log = logging.getLogger(__name__)

NAME = "token_classification"
METRICS = ("precision", "recall", "f1", "accuracy", "loss")
CONLL = ".conll"
SHOWN = 5  # places listed in a warning or error about many tokens
MAX_ERRORS = 500  # sentences in the errors table
DEFAULT_OVERLAP = TrainingConfig().window_overlap


class TokenClassification(Task):
    name = NAME
    heads = TOKEN_HEADS
    imbalance = ("none", "class_weights")
    main_metric = "f1"
    columns = ("tokens", "tags")
    meta_columns = ("example", "word_index")
    baseline_name = "CRF on tokens and their neighbours"

    def __init__(self, cfg: ExperimentConfig | None = None):
        super().__init__(cfg)
        # Windows of a checkpoint without its experiment: see `examples_from_texts`.
        self.window_overlap = cfg.training.window_overlap if cfg is not None else None

    # ---- config
    def metric_names(self, label_names: list[str], prefix: str = "val") -> list[str]:
        names = [f"{prefix}_{m}" for m in METRICS]
        return names + [f"{prefix}_f1_{safe_name(t)}" for t in tagging.entity_types(label_names)]

    def named_parts(self, label_names: list[str]) -> dict[str, list[str]]:
        return {"entity type": tagging.entity_types(label_names)}

    def label_column(self, cfg: DataConfig) -> str:
        return cfg.tags_column

    def metric_form_ok(self, metric: str) -> bool:
        rest = metric[4:] if metric.startswith("val_") else None
        return rest is not None and (rest in METRICS or (rest.startswith("f1_") and len(rest) > 3))

    def metric_help(self) -> str:
        return ("use val_f1 (entities, micro-averaged; words for BMES segmentation), val_precision, val_recall, "
                "val_accuracy (tags), val_loss or val_f1_<entity type>")

    def config_problems(self, cfg: ExperimentConfig) -> list[str]:
        problems = []
        lengths = [cfg.training.max_length]
        overlaps = [cfg.training.window_overlap]
        for name, values in (("max_length", lengths), ("window_overlap", overlaps)):
            p = cfg.space.get(name)
            if p is not None:
                values.extend(v for v in (*(p.choices or ()), p.low, p.high) if isinstance(v, int))
        # Two special tokens ([CLS] and [SEP], <s> and </s>) is what BERT-family tokenizers add.
        # A max_length that holds no text at all is max_length's fault, not the overlap's: it is
        # reported against the model's own minimum once the model is known (preflight).
        if min(lengths) > 2 and max(overlaps) >= min(lengths) - 2:
            problems.append(f"training.window_overlap: {max(overlaps)} leaves no new tokens in a window of "
                            f"max_length {min(lengths)}; use at most a half of max_length")
        if cfg.postprocess.threshold == "tune":
            problems.append("postprocess.threshold: tune is not available for token_classification "
                            "(tags are the argmax); remove it")
        problems += thresholds.unused_settings(cfg.postprocess, False, "token_classification predicts the most "
                                                                     "probable tag, with no threshold")
        if cfg.postprocess.positive_label is not None:
            problems.append(f"postprocess.positive_label: {cfg.postprocess.positive_label!r} means nothing for "
                            f"token_classification (no threshold); remove it")
        return problems

    # ---- data
    def load_splits(self, cfg: DataConfig) -> Splits:
        raw, sources = _read(cfg)
        _check_spaces(cfg, raw)
        scheme = cfg.tag_scheme if cfg.tag_scheme != "auto" else _detect_scheme(cfg, raw)
        for split, (_, tags, places) in raw.items():
            _check_tags(cfg, split, tags, places, scheme)
            _repair(cfg, split, tags, places, scheme)
        names = tagging.tag_names((t for row in raw["train"][1] for t in row), scheme)
        if len(names) < 2:
            raise DataError(f"{where(cfg, 'train')}: column {cfg.tags_column!r} holds no entity tag (only 'O'); "
                            f"a tagger needs some")
        index = {n: i for i, n in enumerate(names)}
        features = Features({"tokens": Sequence(Value("string")), "tags": Sequence(ClassLabel(names=names))})
        data = {}
        for split, (tokens, tags, places) in raw.items():
            unseen = Counter(t for row in tags for t in row if t not in index)
            if unseen:
                first = next(places[i] for i, row in enumerate(tags) if any(t not in index for t in row))
                raise DataError(f"{where(cfg, split)}: tags {sorted(unseen)[:10]} (first at {first}) do not occur in "
                                f"the training split {where(cfg, 'train')}, whose types are "
                                f"{tagging.entity_types(names)}; fix the tags or add training sentences with them")
            data[split] = Dataset.from_dict({"tokens": tokens, "tags": [[index[t] for t in row] for row in tags]},
                                            features=features)

        def split_off(dataset: Dataset, size: float | int) -> tuple[Dataset, Dataset]:
            try:
                parts = dataset.train_test_split(test_size=size, seed=cfg.seed)
            except ValueError as e:
                raise DataError(f"{where(cfg, 'train')}: {len(dataset)} sentences are too few to carve {size} "
                                f"from ({e}); add sentences or give data.validation / data.test files") from None
            return parts["train"], parts["test"]

        data = carve(data, cfg, split_off)
        record = fingerprint.describe(cfg, NAME, sources, {"tokens_column": cfg.tokens_column,
                                                          "tags_column": cfg.tags_column, "tag_scheme": scheme})
        splits = Splits(DatasetDict(data), names, record)
        warn_overlap(splits, "tokens")
        return splits

    def label_counts(self, splits, split: str, rows: np.ndarray | None = None) -> dict[str, int]:
        tags = _column(splits.data[split], "tags")
        rows = range(len(tags)) if rows is None else rows
        counts = Counter(t for i in rows for t in tags[int(i)])
        return {name: counts.get(i, 0) for i, name in enumerate(splits.label_names)}

    def describe(self, splits) -> str:
        names = splits.label_names
        shown = names if len(names) <= 12 else names[:12] + [f"... ({len(names)} in all)"]
        return f"{tagging.scheme_of(names)} tags {shown}"

    # ---- encoding
    def encode(self, examples, tokenizer, max_length: int, with_labels: bool = True, fingerprint: str | None = None):
        overlap = self.window_overlap
        if overlap is None:  # no experiment: a window still moves on by at least half its length
            overlap = min(DEFAULT_OVERLAP, max(0, (max_length - 2) // 2))
        tags = _column(examples, "tags") if with_labels else None
        try:
            columns = windows.encode_words(_column(examples, "tokens"), tokenizer, max_length, overlap, tags)
        except windows.WindowError as e:
            raise DataError(str(e)) from None
        return Dataset.from_dict(columns)

    def encoding_key(self) -> str:
        return f"{self.name}:window_overlap={self.window_overlap}"

    def collator(self, tokenizer):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer)

    # ---- model and loss
    def build_model(self, encoder, num_labels: int, params):
        from orchestrator.tasks.token_classification.heads import TokenClassifier

        return TokenClassifier(encoder, num_labels, params.head or self.heads[0], params.dropout, params.mlp_hidden)

    def load_model(self, directory):
        from orchestrator.tasks.token_classification.heads import TokenClassifier

        return TokenClassifier.load(directory)

    def loss(self, logits, labels, weights=None):
        import torch.nn.functional as F

        labels = labels.reshape(-1)
        if not (labels != windows.IGNORE).any():
            # A batch of windows that hold only later subwords: nothing to learn, and cross-entropy's
            # mean over no tokens would be NaN (which stops the trial).
            return logits.float().sum() * 0.0
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels, weight=weights,
                               ignore_index=windows.IGNORE)

    def loss_weights(self, splits, params):
        if getattr(params, "imbalance", "none") != "class_weights":
            return None
        import torch

        tags = np.fromiter((t for row in _column(splits.data["train"], "tags") for t in row), dtype=np.int64)
        counts = np.bincount(tags, minlength=splits.num_labels).astype(np.float64)
        weights = len(tags) / (splits.num_labels * np.maximum(counts, 1))
        return torch.tensor(weights, dtype=torch.float32)

    def dummy_labels(self, batch_size: int, length: int, num_labels: int, device):
        import torch

        return torch.zeros((batch_size, length), dtype=torch.long, device=device)

    # ---- outputs and metrics
    def gather(self, rows, encoded) -> list[np.ndarray]:
        num_labels = np.shape(rows[0])[-1] if len(rows) else 0
        return windows.merge(rows, _column(encoded, "example"), _column(encoded, "word_index"), num_labels,
                             tagging.OUTSIDE)

    def evaluate(self, outputs, examples, label_names: list[str], prefix: str, post: dict | None = None) -> Evaluation:
        gold_ids = _column(examples, "tags")
        if len(outputs) != len(gold_ids):
            raise ValueError(f"{len(outputs)} outputs for {len(gold_ids)} sentences")
        fill = tagging.outside(label_names)
        probs = [windows.pad(np.asarray(p), len(g), fill) for p, g in zip(outputs, gold_ids)]
        gold = [[label_names[t] for t in row] for row in gold_ids]
        pred = [[label_names[t] for t in p.argmax(-1)] for p in probs]
        metrics = scores(gold, pred, label_names, prefix)
        truth = np.fromiter((t for row in gold_ids for t in row), dtype=np.int64)
        stacked = np.concatenate(probs) if truth.size else np.zeros((0, len(label_names)))
        picked = stacked[np.arange(truth.size), truth]
        metrics[f"{prefix}_accuracy"] = float((stacked.argmax(-1) == truth).mean()) if truth.size else 0.0
        metrics[f"{prefix}_loss"] = float(-np.log(np.clip(picked, 1e-12, None)).mean()) if truth.size else 0.0
        return Evaluation(metrics, {}, pred)

    def row_stats(self, evaluation: Evaluation, examples, label_names: list[str]) -> RowStats:
        """Per sentence: its correct, predicted and gold entities of each type, read as `scores` reads
        them (seqeval's default mode for BIO, strict IOBES for BIOES), or its correct, predicted and
        gold words for BMES; and its correctly tagged and all tokens. Covers precision, recall, f1
        (micro; the SIGHAN word scores for BMES), f1_<type> and accuracy; leaves out loss (a mean of
        log probabilities, not of the predicted tags)."""
        gold = [[label_names[t] for t in row] for row in _column(examples, "tags")]
        pred = [list(p) for p in evaluation.predictions]
        if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
            raise ValueError(f"predictions ({len(pred)} sentences) do not match the examples' tags "
                             f"({len(gold)} sentences) word for word")
        scheme = tagging.scheme_of(label_names)
        types = tagging.entity_types(label_names)
        groups = types if scheme != "BMES" else ["word"]
        column_of = {t: i for i, t in enumerate(groups)}
        g_spans, p_spans = _spans(gold, scheme), _spans(pred, scheme)
        n = len(groups)
        counts = np.zeros((len(gold), 3 * n + 2))
        for row, (g, p, gs, ps) in enumerate(zip(gold, pred, g_spans, p_spans)):
            for spans, offset in ((gs & ps, 0), (ps, n), (gs, 2 * n)):
                for span in spans:
                    counts[row, offset + column_of[span[0]]] += 1
            counts[row, 3 * n] = sum(a == b for a, b in zip(g, p))
            counts[row, 3 * n + 1] = len(g)
        safe = [safe_name(t) for t in types]

        def score(sums: np.ndarray) -> dict:
            tp, found, true = sums[..., :n], sums[..., n:2 * n], sums[..., 2 * n:3 * n]
            precision, recall = ratio(tp.sum(-1), found.sum(-1)), ratio(tp.sum(-1), true.sum(-1))
            out = {"precision": precision, "recall": recall, "f1": f1_of_rates(precision, recall)}
            per_type = f1_of_rates(ratio(tp, found), ratio(tp, true))
            out.update({f"f1_{name}": per_type[..., i] for i, name in enumerate(safe)})
            out["accuracy"] = ratio(sums[..., 3 * n], sums[..., 3 * n + 1])
            return out

        return RowStats(counts, score)

    def artifacts(self, evaluation: Evaluation, outputs, examples, label_names: list[str],
                  split: str) -> list[Artifact]:
        scheme = tagging.scheme_of(label_names)
        gold = [[label_names[t] for t in row] for row in _column(examples, "tags")]
        pred = evaluation.predictions
        report = tagging.entity_report(gold, pred, scheme, tagging.entity_types(label_names))
        # Types first, the micro average ("all") last; BMES has only the words.
        order = sorted(report, key=lambda name: name == "micro")
        table = pd.DataFrame([{"type": ("word" if scheme == "BMES" else "all") if name == "micro" else name,
                               **{k: report[name][k] for k in ("support", "precision", "recall", "f1")}}
                              for name in order])
        errors = []
        for tokens, g, p in zip(_column(examples, "tokens"), gold, pred):
            gs, ps = tagging.read_spans(g), tagging.read_spans(p)
            if gs != ps:
                errors.append({"sentence": _joined(tokens), "gold": _show(tokens, gs), "predicted": _show(tokens, ps)})
            if len(errors) >= MAX_ERRORS:
                break
        return [Artifact("table", f"tag_scores_{split}.json", table),
                Artifact("table", f"tag_errors_{split}.json", pd.DataFrame(errors, columns=["sentence", "gold",
                                                                                        "predicted"]))]

    # ---- baseline
    def baseline_run(self, splits, seed: int) -> tuple[dict[str, float], Evaluation]:
        """A CRF on the tokens and their neighbours (crfsuite's L-BFGS is deterministic: `seed` is unused)."""
        import sklearn_crfsuite

        names = splits.label_names

        def sentences(split):
            data = splits.data[split]
            return [[names[t] for t in row] for row in _column(data, "tags")], _column(data, "tokens")

        tags, tokens = sentences("train")
        crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=0.1, c2=0.1, max_iterations=100,
                                   all_possible_transitions=True)
        crf.fit([crf_features(s) for s in tokens], tags)
        out = {}
        for split, prefix in (("validation", "val"), ("test", "test")):
            gold, tokens = sentences(split)
            pred = crf.predict([crf_features(s) for s in tokens])
            m = scores(gold, pred, names, prefix)
            for key in ("f1", "precision", "recall"):
                out[f"baseline_{prefix}_{key}"] = m[f"{prefix}_{key}"]
        return out, Evaluation({}, {}, [list(p) for p in pred])  # `pred` is the test split's, the last

    # ---- the registered model
    def saved_settings(self, splits) -> dict:
        char = all(len(t) == 1 for row in _column(splits.data["train"], "tokens") for t in row)
        return {"tokenization": "char" if char else "whitespace", "scheme": tagging.scheme_of(splits.label_names),
                "window_overlap": self.window_overlap if self.window_overlap is not None else DEFAULT_OVERLAP}

    def restore(self, saved: dict) -> None:
        if self.window_overlap is None and saved.get("window_overlap") is not None:
            self.window_overlap = int(saved["window_overlap"])

    def inputs(self, examples, saved: dict) -> list:
        """Texts: each example's tokens joined as a text is split again (characters without spaces)."""
        join = "" if saved.get("tokenization") == "char" else " "
        return [join.join(tokens) for tokens in examples["tokens"]]

    def examples_from_texts(self, texts: list[str], saved: dict):
        tokens = [[text[s:e] for s, e in text_tokens(text, saved.get("tokenization", "whitespace"))]
                  for text in texts]
        return Dataset.from_dict({"tokens": tokens}, features=Features({"tokens": Sequence(Value("string"))}))

    def output_frame(self, outputs, texts: list[str], label_names: list[str], post: dict, saved: dict):
        scheme = tagging.scheme_of(label_names)
        fill = tagging.outside(label_names)
        rows = []
        for probs, text in zip(outputs, texts):
            offsets = text_tokens(text, saved.get("tokenization", "whitespace"))
            tags = [label_names[t] for t in windows.pad(np.asarray(probs), len(offsets), fill).argmax(-1)]
            spans = [{"text": text[offsets[s][0]:offsets[e - 1][1]], "label": "word" if scheme == "BMES" else t,
                      "start": offsets[s][0], "end": offsets[e - 1][1]} for t, s, e in tagging.read_spans(tags)]
            row = {"spans": spans}
            if scheme == "BMES":
                row["words"] = [s["text"] for s in spans]
            rows.append(row)
        return pd.DataFrame(rows, columns=["spans", "words"] if scheme == "BMES" else ["spans"])


# ---------------------------------------------------------------- scores and features

def scores(gold: list[list[str]], pred: list[list[str]], label_names: list[str], prefix: str) -> dict[str, float]:
    """`{prefix}_precision/recall/f1` and, for entities, `{prefix}_f1_<type>`: what evaluate and the
    baseline both report."""
    types = tagging.entity_types(label_names)
    report = tagging.entity_report(gold, pred, tagging.scheme_of(label_names), types)
    out = {f"{prefix}_{k}": float(report["micro"][k]) for k in ("precision", "recall", "f1")}
    out.update({f"{prefix}_f1_{safe_name(t)}": float(report[t]["f1"]) for t in types})
    return out


def _spans(sentences: list[list[str]], scheme: str) -> list[set[tuple[str, int, int]]]:
    """Per sentence, the set of (type, start, end) that `tagging.entity_report` scores: seqeval's
    strict IOBES entities for BIOES, its default reading for BIO, words (type "word") for BMES."""
    if scheme == "BIOES":
        from seqeval.scheme import IOBES, Entities

        return [{(e.tag, e.start, e.end) for e in found} for found in Entities(sentences, IOBES).entities]
    if scheme == "BMES":
        return [{("word", s, e) for s, e in tagging.words(tags)} for tags in sentences]
    return [set(tagging.read_spans(tags)) for tags in sentences]


def crf_features(tokens: list[str]) -> list[dict]:
    """Per token: itself, lower-cased, whether a number, its neighbours within two, sentence ends."""
    out = []
    for i, w in enumerate(tokens):
        f = {"bias": 1.0, "w": w, "digit": w.isdigit()}
        for d in (-2, -1, 1, 2):
            if 0 <= i + d < len(tokens):
                f[f"{d:+d}:w"] = tokens[i + d]
        # A lower-cased copy only where it differs: Chinese characters have no case, and a copy that
        # always agrees doubles the CRF's features (and its training time) for nothing.
        for key, value in list(f.items()):
            if isinstance(value, str) and value.lower() != value:
                f[f"{key}:lower"] = value.lower()
        if i == 0:
            f["BOS"] = True
        if i == len(tokens) - 1:
            f["EOS"] = True
        out.append(f)
    return out


def text_tokens(text: str, tokenization: str) -> list[tuple[int, int]]:
    """[start, end) character offsets of a raw text's tokens: its non-space characters (char), or
    its whitespace-separated words."""
    if tokenization == "char":
        return [(i, i + 1) for i, c in enumerate(text) if not c.isspace()]
    return [m.span() for m in re.finditer(r"\S+", text)]


def _column(table, name: str) -> list:
    """A column as a list: indexing a `datasets` column cell by cell reads Arrow each time (slow)."""
    return table[name][:]


def _joined(tokens: list[str]) -> str:
    return ("" if all(len(t) == 1 for t in tokens) else " ").join(tokens)


def _show(tokens: list[str], spans: list[tuple[str, int, int]]) -> str:
    return "; ".join(f"{_joined(tokens[s:e])} ({t})" if t != tagging.NO_TYPE else _joined(tokens[s:e])
                     for t, s, e in spans)


# ---------------------------------------------------------------- reading and checking sentences

def _read(cfg: DataConfig) -> tuple[dict[str, tuple[list, list, list]], dict[str, dict]]:
    """(split -> (tokens, tags, where each sentence is), split -> source record), checked: every
    sentence a list of tokens and a list of tags of the same length; empty sentences dropped."""
    given = {s: getattr(cfg, s) for s in SPLITS if getattr(cfg, s)}
    conll = {s for s, location in given.items() if location.lower().endswith(CONLL)} if not cfg.hub else set()
    if conll and conll != set(given):
        raise DataError(f"data: {', '.join(f'data.{s}' for s in sorted(conll))} are CoNLL files but "
                        f"{', '.join(f'data.{s}' for s in sorted(set(given) - conll))} are not; use one format "
                        f"for every split")
    if conll:
        if "train" not in given:
            raise DataError("data.train: no training data configured")
        raw, sources = {}, {}
        for split, location in given.items():
            raw[split] = _read_conll(location, f"data.{split}")
            path = local_file(location, f"data.{split}")
            sources[split] = {"location": location, "sha256": fingerprint.file_sha256(path)}
    else:
        columns, sources = read_columns(cfg, [cfg.tokens_column, cfg.tags_column])
        raw = {split: (c[cfg.tokens_column], c[cfg.tags_column],
                       [f"row {i}" for i in range(1, len(c[cfg.tokens_column]) + 1)])
               for split, c in columns.items()}
    return {split: _check_rows(cfg, split, *columns) for split, columns in raw.items()}, sources


def _read_conll(location: str, key: str) -> tuple[list, list, list]:
    path = local_file(location, key)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{key}: {location} is not UTF-8 ({e}); re-save it as UTF-8") from None
    tokens, tags, places = [], [], []
    current: tuple[list, list] = ([], [])
    for number, line in enumerate([*text.splitlines(), ""], 1):
        if not line.strip() or line.startswith("-DOCSTART-"):
            if current[0]:
                tokens.append(current[0])
                tags.append(current[1])
                current = ([], [])
            continue
        parts = line.split()
        if len(parts) < 2:
            raise DataError(f"{key}: {location} line {number}: expected a token and its tag separated by a space or "
                            f"tab, found {line!r}")
        if not current[0]:
            places.append(f"line {number}")
        current[0].append(parts[0])
        current[1].append(parts[-1])  # CoNLL-2003 puts POS and chunk tags between: the tag is last
    return tokens, tags, places


def _check_rows(cfg: DataConfig, split: str, tokens: list, tags: list, places: list) -> tuple[list, list, list]:
    keep = []
    for i, (words, labels) in enumerate(zip(tokens, tags)):
        if _empty(words) or _empty(labels):
            continue
        for value, column in ((words, cfg.tokens_column), (labels, cfg.tags_column)):
            if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
                raise DataError(f"{where(cfg, split)} {places[i]}: column {column!r} holds {str(value)[:80]!r}; "
                                f"expected a list of strings, like [\"我\", \"们\"] (csv/tsv cells cannot hold "
                                f"lists: use jsonl, parquet or a CoNLL file)")
        if len(words) != len(labels):
            raise DataError(f"{where(cfg, split)} {places[i]}: {len(words)} tokens ({cfg.tokens_column!r}) but "
                            f"{len(labels)} tags ({cfg.tags_column!r}); every token needs exactly one tag")
        keep.append(i)
    drop_empty(split, cfg, len(tokens), keep, "no tokens or no tags")
    return [list(tokens[i]) for i in keep], [list(tags[i]) for i in keep], [places[i] for i in keep]


def _empty(value) -> bool:
    return value is None or (isinstance(value, (list, tuple, str)) and len(value) == 0)


def _check_spaces(cfg: DataConfig, raw: dict[str, tuple[list, list, list]]) -> None:
    """'B-PER ' would be an entity type of its own ('PER '), beside 'PER'. Refused, not stripped:
    a CoNLL file cannot hold such a tag (its columns are split on whitespace), so it was written
    by hand or by a faulty export, and the file should say what the model learns."""
    for split, (_, tags, places) in raw.items():
        for row, place in zip(tags, places):
            for j, tag in enumerate(row):
                if tag != tag.strip():
                    raise DataError(f"{where(cfg, split)} {place}, token {j + 1}: tag {tag!r} in column "
                                    f"{cfg.tags_column!r} starts or ends with a space, which would make it an entity "
                                    f"type of its own beside {tag.strip()!r}; remove the space")


def _detect_scheme(cfg: DataConfig, raw: dict[str, tuple[list, list, list]]) -> str:
    """data.tag_scheme: auto. One E-/S- tag makes the tags BIOES; if other entities end the BIO way
    (a B-X or I-X that no E-X closes), the tags mix two schemes and are refused: read as BIOES, every
    BIO entity would be rewritten, read as BIO the E-/S- tags would not fit."""
    scheme = tagging.detect_scheme(t for _, split_tags, _ in raw.values() for row in split_tags for t in row)
    if scheme != "BIOES":
        return scheme
    bioes = bio = None
    for split, (_, tags, places) in raw.items():
        for row, place in zip(tags, places):
            if bioes is None:
                j = next((j for j, t in enumerate(row) if t.startswith(("E-", "S-"))), None)
                bioes = None if j is None else (split, place, j, row[j])
            if bio is None:
                j = next((p for p, kind in tagging.repair(row, "BIOES")[1] if kind == "unclosed"), None)
                bio = None if j is None else (split, place, j, row[j])
            if bio is not None and bioes is not None:
                raise DataError(
                    f"{where(cfg, bio[0])} {bio[1]}, token {bio[2] + 1}: tag {bio[3]!r} ends an entity the BIO way, "
                    f"but {where(cfg, bioes[0])} {bioes[1]}, token {bioes[2] + 1} has {bioes[3]!r}, a BIOES tag: the "
                    f"tags mix BIO and BIOES. Write them in one scheme (in BIO data {bioes[3]!r} would be "
                    f"{'I' if bioes[3][0] == 'E' else 'B'}-{bioes[3][2:]}), or set data.tag_scheme: BIOES to read them "
                    f"all as BIOES (the BIO endings are then rewritten, with a warning)")
    return scheme


def _check_tags(cfg: DataConfig, split: str, tags: list[list[str]], places: list[str], scheme: str) -> None:
    for row, place in zip(tags, places):
        for j, tag in enumerate(row):
            if not tagging.fits(tag, scheme):
                how = "data.tag_scheme" if cfg.tag_scheme != "auto" else "data.tag_scheme (detected from the tags)"
                raise DataError(f"{where(cfg, split)} {place}, token {j + 1}: tag {tag!r} does not fit the {scheme} "
                                f"scheme of {how}; expected {tagging.expected(scheme)}. Fix the tag or set "
                                f"data.tag_scheme")


def _repair(cfg: DataConfig, split: str, tags: list[list[str]], places: list[str], scheme: str) -> None:
    """Ill-formed tag sequences, reported and rewritten in place as seqeval reads them."""
    kinds, first = Counter(), []
    for i, row in enumerate(tags):
        fixed, changed = tagging.repair(row, scheme)
        for p, kind in changed:
            kinds[kind] += 1
            if len(first) < SHOWN:
                first.append(f"{places[i]} token {p + 1} {row[p]!r}")
        if changed:
            tags[i] = fixed
    if kinds:
        found = []
        if kinds["orphan"]:
            found.append(f"{kinds['orphan']} orphan tag(s) (I-/E-/M- continuing no entity)")
        if kinds["unclosed"]:
            found.append(f"{kinds['unclosed']} unclosed entity tag(s) (B-/I-/M- without its E-)")
        log.warning("%s: %s, first at %s; read them as seqeval does (an orphan I-X starts an entity) and rewrote "
                    "them as %s", where(cfg, split), " and ".join(found), "; ".join(first), scheme)

