"""question_answering: extractive QA, the answer a span of the question's context (SQuAD, CMRC 2018).

Examples are questions: `id`, `question`, `context` and `answers` ({"text": [...], "answer_start":
[...]}, character offsets; none for an unanswerable question), read from SQuAD JSON or flat
files (`squad_format.py`). Missing splits are carved from train by paragraph (every question of a
context stays in one split). There are no classes: `Splits.label_names` is empty.

A context longer than a window is cut into windows sharing `training.doc_stride` tokens
(`windows.py`); the model (`heads.SpanExtractor`) gives start and end logits per token; each
question's best span of at most `training.max_answer_length` tokens over its windows is its answer.
Where the validation split holds unanswerable questions, a "no answer" threshold on the margin
between the no-answer and the best-span score is fitted there (SQuAD 2.0's best-F1 threshold) and
kept in `post`; otherwise every question is answered. Metrics: exact match and F1 as SQuAD's
official script computes them, CMRC 2018's for Chinese (`metrics.py`).

The registered model takes `question` and `context` and returns `answer`, `start` and `end`
(character offsets in the context; "" and -1, -1 for no answer) and `score` (the probability of
that answer, or of no answer, in the window that decided).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict, Features, Sequence, Value

from orchestrator.config.schema import DataConfig, ExperimentConfig, TrainingConfig
from orchestrator.data import fingerprint
from orchestrator.data.read import DataError
from orchestrator.data.splits import Splits, carve, warn_overlap, where
from orchestrator.tasks import thresholds
from orchestrator.tasks.base import Artifact, Evaluation, Task
from orchestrator.tasks.bootstrap import RowStats
from orchestrator.tasks.question_answering import metrics, squad_format, windows
from orchestrator.tasks.question_answering.baseline import NAME as BASELINE_NAME, LexicalOverlap

NAME = "question_answering"
DEFAULTS = TrainingConfig()
INPUTS = ("question", "context")  # the registered model's input columns
MAX_ERRORS = 500  # questions in the errors table
FEATURES = Features({"question": Value("string"), "context": Value("string"), "id": Value("string"),
                     "answers": Sequence({"text": Value("string"), "answer_start": Value("int32")})})


class QuestionAnswering(Task):
    name = NAME
    heads = ("linear",)
    imbalance = ("none",)
    main_metric = "f1"
    columns = ("question", "context", "id", "answers")
    meta_columns = ("example", "offsets")
    baseline_name = BASELINE_NAME

    def __init__(self, cfg: ExperimentConfig | None = None):
        super().__init__(cfg)
        # Without the experiment (a checkpoint's task): `restore` sets them from its saved settings.
        self.doc_stride = cfg.training.doc_stride if cfg is not None else None
        self.max_answer_length = cfg.training.max_answer_length if cfg is not None else None

    # ---- config
    def metric_names(self, label_names: list[str], prefix: str = "val") -> list[str]:
        return [f"{prefix}_{m}" for m in metrics.METRICS]

    def named_parts(self, label_names: list[str]) -> dict[str, list[str]]:
        return {}

    def label_column(self, cfg: DataConfig) -> str:
        return cfg.answers_column

    def metric_form_ok(self, metric: str) -> bool:
        return metric in self.metric_names([])

    def metric_help(self) -> str:
        return "use val_f1 (SQuAD's token F1; CMRC's for Chinese) or val_exact_match"

    def config_problems(self, cfg: ExperimentConfig) -> list[str]:
        t, problems = cfg.training, []
        lengths = [t.max_length]
        p = cfg.space.get("max_length")
        if p is not None:
            lengths += [v for v in (*(p.choices or ()), p.low, p.high) if isinstance(v, int)]
        # A window holds the question (a token at least) and three special tokens ([CLS] q [SEP] c [SEP]).
        if t.doc_stride >= min(lengths) - 4:
            problems.append(f"training.doc_stride ({t.doc_stride}) must be below training.max_length ({min(lengths)}) "
                            f"less the question and 3 special tokens, or the windows of a long context could not move "
                            f"on; use about a third of max_length (e.g. max_length 384, doc_stride 128)")
        for key in ("doc_stride", "max_answer_length"):
            if key in cfg.space:
                problems.append(f"space.{key}: {key} is read from training.{key} for the whole study (it shapes the "
                                f"encoded windows and the answers every trial is scored by); remove it from space")
        if t.eval_subsample is not None:
            problems.append("training.eval_subsample: question_answering scores whole questions (windows merged), "
                            "not a subsample of windows; remove it")
        if cfg.postprocess.threshold == "tune":
            problems.append("postprocess.threshold: tune is not available for question_answering (its no-answer "
                            "threshold is fitted on validation where it has unanswerable questions); remove it")
        problems += thresholds.unused_settings(cfg.postprocess, False, "question_answering has no class threshold")
        if cfg.postprocess.positive_label is not None:
            problems.append(f"postprocess.positive_label: {cfg.postprocess.positive_label!r} means nothing for "
                            f"question_answering (no classes); remove it")
        return problems

    # ---- data
    def load_splits(self, cfg: DataConfig) -> Splits:
        raw, sources = squad_format.read(cfg)
        data = {split: Dataset.from_dict({c: columns[c] for c in self.columns}, features=FEATURES)
                for split, columns in raw.items()}

        def split_off(dataset: Dataset, size: float | int) -> tuple[Dataset, Dataset]:
            return by_context(dataset, size, cfg.seed, where(cfg, "train"))

        data = carve(data, cfg, split_off)
        record = fingerprint.describe(cfg, NAME, sources, {
            "question_column": cfg.question_column, "context_column": cfg.context_column,
            "answers_column": cfg.answers_column, "id_column": cfg.id_column})
        splits = Splits(DatasetDict(data), [], record)
        warn_overlap(splits, "context")
        return splits

    def label_counts(self, splits, split: str, rows: np.ndarray | None = None) -> dict[str, int]:
        return {}  # no classes

    def describe(self, splits) -> str:
        train = splits.data["train"]
        contexts = len(set(train["context"]))
        unanswerable = sum(not a["text"] for a in train["answers"])
        return (f"extractive QA over {contexts} training contexts ({unanswerable} unanswerable questions), "
                f"scored the {'CMRC 2018 (Chinese)' if metrics.language(train['context']) == 'zh' else 'SQuAD'} way")

    # ---- encoding
    def _settings(self, max_length: int, tokenizer) -> tuple[int, int]:
        stride = self.doc_stride
        if stride is None:  # no experiment, no saved settings: a window still moves on
            stride = min(DEFAULTS.doc_stride, max(1, windows.question_room(tokenizer, max_length) // 4))
        return stride, self.max_answer_length or DEFAULTS.max_answer_length

    def encode(self, examples, tokenizer, max_length: int, with_labels: bool = True, fingerprint: str | None = None):
        stride, _ = self._settings(max_length, tokenizer)
        answers = examples["answers"][:] if with_labels else None
        try:
            columns = windows.encode(examples["question"][:], examples["context"][:], examples["id"][:], tokenizer,
                                     max_length, stride, answers, strict=with_labels)
        except windows.WindowError as e:
            raise DataError(str(e)) from None
        return Dataset.from_dict(columns)

    def encoding_problems(self, splits, tokenizer, max_length: int) -> list[str]:
        stride, _ = self._settings(max_length, tokenizer)
        problems = []
        for split, examples in splits.data.items():
            try:
                windows.fit_questions(examples["question"][:], examples["id"][:], tokenizer, max_length, stride,
                                      strict=True)
            except windows.WindowError as e:
                source = where(self.cfg.data, split) if self.cfg is not None and getattr(self.cfg.data, split) \
                    else f"the {split} split"
                problems.append(f"{source}: {e}")
        return problems

    def encoding_key(self) -> str:
        return f"{self.name}:doc_stride={self.doc_stride}"

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    # ---- model and loss
    def build_model(self, encoder, num_labels: int, params):
        from orchestrator.tasks.question_answering.heads import SpanExtractor

        return SpanExtractor(encoder, head=params.head or self.heads[0], dropout=params.dropout,
                             mlp_hidden=params.mlp_hidden)

    def load_model(self, directory):
        from orchestrator.tasks.question_answering.heads import SpanExtractor

        return SpanExtractor.load(directory)

    def loss(self, logits, labels, weights=None):
        """The mean of the start and the end cross-entropy over each window's tokens."""
        import torch.nn.functional as F

        logits = logits.float()
        labels = labels.clamp(0, logits.shape[1] - 1)
        return (F.cross_entropy(logits[..., 0], labels[:, 0]) + F.cross_entropy(logits[..., 1], labels[:, 1])) / 2

    def dummy_labels(self, batch_size: int, length: int, num_labels: int, device):
        import torch

        return torch.zeros((batch_size, 2), dtype=torch.long, device=device)

    # ---- outputs, post-processing, metrics
    def gather(self, rows, encoded) -> np.ndarray:
        longest = self.max_answer_length or DEFAULTS.max_answer_length
        if len(rows) == 0:
            return np.zeros((0, windows.OUTPUT_WIDTH))
        return windows.merge(rows, encoded["example"][:], encoded["offsets"][:], longest)

    def evaluate(self, outputs, examples, label_names: list[str], prefix: str, post: dict | None = None) -> Evaluation:
        contexts, references = examples["context"][:], [a["text"] for a in examples["answers"][:]]
        outputs = np.asarray(outputs, dtype=np.float64).reshape(-1, windows.OUTPUT_WIDTH)
        if len(outputs) != len(contexts):
            raise ValueError(f"{len(outputs)} outputs for {len(contexts)} questions")
        lang = metrics.language(contexts)
        spans = [c[int(s):int(e)] if s >= 0 else "" for c, (s, e, _, _) in zip(contexts, outputs)]
        if post is None:
            post = _fit_post(outputs, spans, references, lang)
        predictions = [span if not _no_answer(row, post) else "" for span, row in zip(spans, outputs)]
        scores = metrics.score(metrics.per_row(predictions, references, lang).sum(0))
        return Evaluation({f"{prefix}_{k}": float(v) for k, v in scores.items()}, post, predictions)

    def row_stats(self, evaluation: Evaluation, examples, label_names: list[str]) -> RowStats:
        """Per question: its exact match, F1 and 1 (the count). Covers exact_match and f1."""
        references = [a["text"] for a in examples["answers"][:]]
        counts = metrics.per_row(list(evaluation.predictions), references, metrics.language(examples["context"][:]))
        return RowStats(counts, metrics.score)

    def artifacts(self, evaluation: Evaluation, outputs, examples, label_names: list[str],
                  split: str) -> list[Artifact]:
        lang = metrics.language(examples["context"][:])
        rows = []
        for qid, question, answers, predicted in zip(examples["id"][:], examples["question"][:],
                                                     examples["answers"][:], evaluation.predictions):
            em, f1 = metrics.per_row([predicted], [answers["text"]], lang)[0, :2]
            if em < 1:
                rows.append({"id": qid, "question": question, "answers": list(answers["text"]),
                             "predicted": predicted, "f1": round(float(f1), 4)})
            if len(rows) >= MAX_ERRORS:
                break
        return [Artifact("table", f"qa_errors_{split}.json",
                         pd.DataFrame(rows, columns=["id", "question", "answers", "predicted", "f1"]))]

    # ---- baseline
    def baseline_run(self, splits, seed: int) -> tuple[dict[str, float], Evaluation]:
        """`baseline.LexicalOverlap`, fitted on train (deterministic: `seed` is unused)."""
        train = splits.data["train"]
        model = LexicalOverlap.fit(train["question"][:], train["context"][:],
                                   [a["text"] for a in train["answers"][:]])
        out, predictions = {}, []
        for split, prefix in (("validation", "val"), ("test", "test")):
            data = splits.data[split]
            predictions = [model.answer(q, c)[0] for q, c in zip(data["question"][:], data["context"][:])]
            counts = metrics.per_row(predictions, [a["text"] for a in data["answers"][:]],
                                     metrics.language(data["context"][:]))
            for key, value in metrics.score(counts.sum(0)).items():
                out[f"baseline_{prefix}_{key}"] = float(value)
        return out, Evaluation({}, {}, predictions)  # `predictions` are the test split's, the last

    # ---- the registered model
    def input_columns(self, saved: dict) -> tuple[str, ...]:
        return INPUTS

    def inputs(self, examples, saved: dict) -> list:
        return list(zip(examples["question"][:], examples["context"][:]))

    def saved_settings(self, splits) -> dict:
        return {"doc_stride": self.doc_stride or DEFAULTS.doc_stride,
                "max_answer_length": self.max_answer_length or DEFAULTS.max_answer_length}

    def restore(self, saved: dict) -> None:
        if self.doc_stride is None and saved.get("doc_stride") is not None:
            self.doc_stride = int(saved["doc_stride"])
        if self.max_answer_length is None and saved.get("max_answer_length") is not None:
            self.max_answer_length = int(saved["max_answer_length"])

    def examples_from_texts(self, inputs: list, saved: dict) -> Dataset:
        """Items are (question, context) pairs (`input_columns`); anything else is refused, not guessed at."""
        if any(isinstance(item, str) or len(item) != 2 for item in inputs):
            raise ValueError("a question-answering model takes (question, context) pairs; send the columns "
                             "question and context")
        pairs = [(str(item[0]), str(item[1])) for item in inputs]
        return Dataset.from_dict({"id": [f"input {i}" for i in range(1, len(pairs) + 1)],
                                  "question": [q for q, _ in pairs], "context": [c for _, c in pairs]},
                                 features=Features({"id": Value("string"), "question": Value("string"),
                                                    "context": Value("string")}))

    def output_frame(self, outputs, inputs: list, label_names: list[str], post: dict, saved: dict) -> pd.DataFrame:
        rows = []
        outputs = np.asarray(outputs, dtype=np.float64).reshape(-1, windows.OUTPUT_WIDTH)
        for item, row in zip(inputs, outputs):
            context = str(item[1])
            start, end, span, null = row
            if start < 0 or _no_answer(row, post):
                rows.append({"answer": "", "start": -1, "end": -1, "score": _probability(null)})
            else:
                rows.append({"answer": context[int(start):int(end)], "start": int(start), "end": int(end),
                             "score": _probability(span)})
        frame = pd.DataFrame(rows, columns=["answer", "start", "end", "score"])
        return frame.astype({"start": "int64", "end": "int64", "score": "float64"})


def _no_answer(row, post: dict) -> bool:
    """Whether a question's output is "no answer": no valid span, or (with a fitted threshold) a
    no-answer score above the best span's by more than the threshold."""
    start, _, span, null = row
    if start < 0:
        return True
    threshold = post.get("null_threshold")
    return threshold is not None and null - span > threshold


def _probability(log_probability: float) -> float:
    return float(math.exp(log_probability)) if np.isfinite(log_probability) and log_probability > -700 else 0.0


def _fit_post(outputs: np.ndarray, spans: list[str], references: list[list[str]], lang: str) -> dict:
    """{"null_threshold": ...} fitted where some questions are unanswerable; {} (always answer) otherwise."""
    if all(references):
        return {}
    answered = metrics.per_row(spans, references, lang)[:, 1]
    unanswered = metrics.per_row([""] * len(spans), references, lang)[:, 1]
    margin = np.where(outputs[:, 0] >= 0, outputs[:, 3] - outputs[:, 2], np.inf)  # no span: always no answer
    margin = np.minimum(margin, 1e9)
    threshold, f1 = metrics.fit_null_threshold(answered, unanswered, margin)
    return {"null_threshold": threshold, "null_threshold_val_f1": f1}


def by_context(dataset: Dataset, size: float | int, seed: int, source: str) -> tuple[Dataset, Dataset]:
    """(rest, part): `part` holds whole contexts (every question of a paragraph stays on one side),
    drawn in a seeded random order until it has `size` questions (a share, or a count: the
    `data.max_train_rows` cap), without passing it where a paragraph would overshoot."""
    contexts = dataset["context"][:]
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(contexts):
        groups.setdefault(c, []).append(i)
    if len(groups) < 2:
        raise DataError(f"{source}: all {len(contexts)} questions share one context, which cannot be split by "
                        f"paragraph; give data.validation and data.test files")
    target = size if isinstance(size, int) else max(1, round(size * len(contexts)))
    order = np.random.default_rng(seed).permutation(len(groups))
    members = list(groups.values())
    part: list[int] = []
    for g in order:
        if len(part) + len(members[g]) <= target or not part:
            part += members[g]
        if len(part) >= target:
            break
    chosen = set(part)
    rest = [i for i in range(len(contexts)) if i not in chosen]
    if not rest:
        raise DataError(f"{source}: {len(contexts)} questions over {len(groups)} contexts are too few to carve "
                        f"{size} from by paragraph; add questions or give data.validation / data.test files")
    return dataset.select(rest), dataset.select(sorted(part))
