"""Reading extractive-QA data, every answer checked against its context.

Two forms, per split:
  SQuAD JSON  {"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
              "answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]} (v1.1 and v2.0), recognised
              by its top-level `data` list; read here (`read_table` reads rows, not this nesting).
  flat        a table with one question per row (jsonl/json/csv/tsv/parquet, or a hub dataset):
              data.question_column, data.context_column, data.answers_column and, optionally,
              data.id_column. An answers cell is {"text": [...], "answer_start": [...]} (Hugging
              Face's squad form) or a list of {"text", "answer_start"}; in a csv cell, that as JSON.

A question without answers (an empty list, or SQuAD 2.0's `is_impossible: true`) is unanswerable:
its gold answer is "". An answer with empty text is no answer (some exports write unanswerable
questions as {"text": [""], "answer_start": [-1]}). Every other answer must sit at its
`answer_start` in its context (`context[start:start + len(text)] == text`): a shifted offset
would teach the model the wrong span, so it is refused naming the file and the question id.
"""

from __future__ import annotations

import json
import logging

from orchestrator.config.schema import DataConfig
from orchestrator.data import fingerprint
from orchestrator.data.read import DataError, as_text, is_missing, local_file, read_table
from orchestrator.data.splits import SPLITS, drop_empty, read_columns, where

log = logging.getLogger(__name__)

COLUMNS = ("id", "question", "context", "answers")  # of every split, as `Splits.data` holds them


def read(cfg: DataConfig) -> tuple[dict[str, dict[str, list]], dict[str, dict]]:
    """(split -> {id, question, context, answers} columns, checked; split -> source record)."""
    if cfg.hub:
        wanted = [cfg.question_column, cfg.context_column, cfg.answers_column, cfg.id_column]
        cells, sources = read_columns(cfg, wanted)
        raw = {split: _flat(c, cfg, split) for split, c in cells.items()}
    else:
        raw, sources = {}, {}
        for split in SPLITS:
            location = getattr(cfg, split)
            if location is None:
                continue
            key = f"data.{split}"
            path = local_file(location, key)
            squad = _squad_json(path, key, location)
            raw[split] = _from_squad(squad, location) if squad is not None else _from_table(cfg, split, key)
            sources[split] = {"location": location, "sha256": fingerprint.file_sha256(path)}
        if "train" not in raw:
            raise DataError("data.train: no training data configured")
    return {split: _check(cfg, split, columns) for split, columns in raw.items()}, sources


def _squad_json(path, key: str, location: str) -> dict | None:
    """The parsed file when it is SQuAD JSON (an object with a `data` list), else None."""
    if path.suffix.lower() != ".json":
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{key}: {location} is not UTF-8 ({e}); re-save it as UTF-8") from None
    if not text.lstrip().startswith("{"):
        return None  # a JSON array of rows: a flat table
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None  # JSON lines in a .json file: `read_table` reads (or refuses) them
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise DataError(f"{key}: {location} is a JSON object without a 'data' list; expected SQuAD's form "
                        f"{{\"data\": [{{\"paragraphs\": [{{\"context\", \"qas\": [...]}}]}}]}}, or one question per "
                        f"line (jsonl)")
    return obj


def _from_squad(obj: dict, location: str) -> dict[str, list]:
    out = {name: [] for name in COLUMNS}
    for a, article in enumerate(obj["data"]):
        for p, paragraph in enumerate(article.get("paragraphs") or [] if isinstance(article, dict) else []):
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                raise DataError(f"{location}: data[{a}].paragraphs[{p}] has no 'qas' list of questions")
            context = paragraph.get("context")
            for q, qa in enumerate(paragraph["qas"]):
                qid = str(qa.get("id", f"data[{a}].paragraphs[{p}].qas[{q}]"))
                answers = [] if _impossible(qa.get("is_impossible"), location, qid) else qa.get("answers")
                if answers is None:  # a missing key is no answer list, not an unanswerable question
                    raise DataError(f"{location}: question {qid!r} has no 'answers' list; give its answers "
                                    f"([{{\"text\": ..., \"answer_start\": ...}}]), or [] with \"is_impossible\": "
                                    f"true for an unanswerable question")
                out["id"].append(qid)
                out["question"].append(qa.get("question"))
                out["context"].append(context)
                out["answers"].append(_answers(answers, location, qid))
    if not out["id"]:
        raise DataError(f"{location}: SQuAD JSON without a single question (data[].paragraphs[].qas[] is empty)")
    return out


def _impossible(value, location: str, qid: str) -> bool:
    """SQuAD 2.0's flag, a JSON boolean (absent: false); the string "false" is no boolean, and
    read as one it would be true."""
    if value is None or isinstance(value, bool):
        return bool(value)
    raise DataError(f"{location}: question {qid!r}: is_impossible is {value!r}, not true or false; write it as "
                    f"a JSON boolean")


def _from_table(cfg: DataConfig, split: str, key: str) -> dict[str, list]:
    location = getattr(cfg, split)
    frame = read_table(location, key, cfg.delimiter)
    required = [cfg.question_column, cfg.context_column, cfg.answers_column]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{location}: column(s) {missing} not found; columns found: {list(frame.columns)}. Set "
                        f"data.question_column / data.context_column / data.answers_column, or give SQuAD JSON "
                        f"(an object with a 'data' list)")
    cells = {c: list(frame[c]) for c in required}
    cells[cfg.id_column] = list(frame[cfg.id_column]) if cfg.id_column in frame.columns else [None] * len(frame)
    return _flat(cells, cfg, split)


def _flat(cells: dict[str, list], cfg: DataConfig, split: str) -> dict[str, list]:
    ids = [as_text(v) or f"row {i}" for i, v in enumerate(cells[cfg.id_column], 1)]
    location = where(cfg, split)
    return {"id": ids, "question": [as_text(v) for v in cells[cfg.question_column]],
            "context": [as_text(v) for v in cells[cfg.context_column]],
            "answers": [_answers(_cell(v, location, qid, cfg.answers_column), location, qid)
                        for v, qid in zip(cells[cfg.answers_column], ids)]}


def _cell(value, location: str, qid: str, column: str):
    """An answers cell as a list or dict: a csv cell holds it as JSON text."""
    if isinstance(value, str):
        if is_missing(value):
            return []
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{location}: question {qid!r}: column {column!r} holds {value[:80]!r}, not JSON; write "
                            f"the answers as {{\"text\": [\"...\"], \"answer_start\": [0]}}") from None
    return [] if value is None else value


def _answers(value, location: str, qid: str) -> dict[str, list]:
    """{"text": [...], "answer_start": [...]} from either answers form; answers with empty text dropped."""
    if isinstance(value, dict) and set(value) >= {"text", "answer_start"}:
        texts, starts = value["text"], value["answer_start"]
        if not isinstance(texts, (list, tuple)) or not isinstance(starts, (list, tuple)) or len(texts) != len(starts):
            raise DataError(f"{location}: question {qid!r}: answers {str(value)[:120]} must hold two lists of one "
                            f"length, 'text' and 'answer_start'")
        pairs = list(zip(texts, starts))
    elif isinstance(value, (list, tuple)) and all(isinstance(a, dict) for a in value):
        pairs = [(a.get("text"), a.get("answer_start")) for a in value]
    else:
        raise DataError(f"{location}: question {qid!r}: answers {str(value)[:120]!r} are neither a list of "
                        f"{{\"text\", \"answer_start\"}} nor {{\"text\": [...], \"answer_start\": [...]}}")
    out = {"text": [], "answer_start": []}
    for text, start in pairs:
        if text is None or text == "":
            continue
        if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int):
            raise DataError(f"{location}: question {qid!r}: answer {text!r} at {start!r}: expected a text and a "
                            f"whole-number answer_start (its character offset in the context)")
        out["text"].append(text)
        out["answer_start"].append(start)
    return out


def _check(cfg: DataConfig, split: str, columns: dict[str, list]) -> dict[str, list]:
    """Questions without a question or a context dropped (a few) or refused (many); every answer at
    its place in its context."""
    n = len(columns["id"])
    keep = [i for i in range(n) if not is_missing(columns["question"][i]) and not is_missing(columns["context"][i])]
    drop_empty(split, cfg, n, keep, "no question or no context",
               "data.question_column / data.context_column (SQuAD JSON: each question's 'question' and its "
               "paragraph's 'context')")
    location = where(cfg, split)
    seen: dict[str, int] = {}
    for i, qid in enumerate(columns["id"]):
        seen[qid] = seen.get(qid, 0) + 1
    repeated = [qid for qid, count in seen.items() if count > 1]
    if repeated:  # ids name questions in messages and error tables; two questions under one id would be confused
        log.warning("%s: %d question id(s) are used more than once, e.g. %r; messages and qa_errors tables name "
                    "questions by id", location, len(repeated), repeated[0])
    for i in keep:
        context, answers = columns["context"][i], columns["answers"][i]
        for text, start in zip(answers["text"], answers["answer_start"]):
            found = context[start:start + len(text)] if 0 <= start <= len(context) else ""
            if found != text:
                at = context.find(text)
                hint = f"; the text occurs at {at}" if at >= 0 else "; the text does not occur in the context at all"
                raise DataError(f"{location}: question {columns['id'][i]!r}: answer {text!r} is not at its "
                                f"answer_start {start} (the context has {found!r} there{hint}). Fix answer_start "
                                f"(the answer's character offset in its context, from 0) or remove the answer")
    return {name: [columns[name][i] for i in keep] for name in COLUMNS}
