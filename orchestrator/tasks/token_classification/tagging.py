"""Tag schemes and what is read from tags: entity spans, segmented words, and their scores.

Schemes: BIO (`O`, `B-X`, `I-X`), BIOES (adds `E-X`, `S-X`) and BMES (untyped `B`, `M`, `E`, `S`:
word segmentation). Tags are read the way seqeval's default mode reads them (conlleval's rules,
with `M` read as `I`): an `I-X` that continues nothing starts an entity, a `B-X` never closed by
an `E-X` still ends one. Checked data is repaired into that reading once, when it is loaded, so
gold tags are well-formed everywhere after; predictions are scored as they come.

Entity scores come from seqeval (default mode for BIO; strict mode with its IOBES scheme for
BIOES, where an entity counts only when its tags are well-formed); segmentation scores are the
SIGHAN bakeoff's word-level precision, recall and F1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from seqeval.metrics import classification_report
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOBES

SCHEMES = ("BIO", "BIOES", "BMES")
PREFIXES = {"BIO": "BI", "BIOES": "BIES", "BMES": "BMES"}
SEGMENT = frozenset("BMES")
NO_TYPE = "_"  # seqeval's type of an untyped tag (every BMES tag)


def split_tag(tag: str) -> tuple[str, str]:
    """(prefix, type): "B-PER" -> ("B", "PER"), "M" -> ("M", "_"), "O" -> ("O", "_")."""
    return tag[:1], tag[2:] if len(tag) > 2 and tag[1] == "-" else NO_TYPE


def detect_scheme(tags: Iterable[str]) -> str:
    """BMES when every tag is B, M, E or S; BIOES when any tag starts with S- or E-; else BIO."""
    seen = set(tags)
    if seen and seen <= SEGMENT:
        return "BMES"
    if any(t.startswith(("S-", "E-")) for t in seen):
        return "BIOES"
    return "BIO"


def fits(tag: str, scheme: str) -> bool:
    if scheme == "BMES":
        return tag in SEGMENT
    if tag == "O":
        return True
    return len(tag) > 2 and tag[0] in PREFIXES[scheme] and tag[1] == "-" and bool(tag[2:].strip())


def expected(scheme: str) -> str:
    """How a message says what the tags of `scheme` look like."""
    if scheme == "BMES":
        return "B, M, E or S"
    return "O or " + ", ".join(f"{p}-TYPE" for p in PREFIXES[scheme])


def scheme_of(label_names: Sequence[str]) -> str:
    """The scheme of a model's tag set (load_splits completes every tag set, so this is exact)."""
    return detect_scheme(label_names)


OUTSIDE = 0  # the index of O (S for BMES) in every tag set `tag_names` makes


def outside(label_names: Sequence[str]) -> int:
    """The tag a word gets when nothing is predicted for it: O, or S (a word of its own) for BMES."""
    return list(label_names).index("S" if scheme_of(label_names) == "BMES" else "O")


def entity_types(label_names: Sequence[str]) -> list[str]:
    if scheme_of(label_names) == "BMES":
        return []
    return sorted({split_tag(t)[1] for t in label_names if t != "O"})


def tag_names(tags: Iterable[str], scheme: str) -> list[str]:
    """The tag set of a model: every tag of every type seen in training (a type seen only as B-X
    in training may well show up as B-X I-X in test); all four tags for BMES. The tag of "nothing
    here" (O; S, a word of its own, for BMES) comes first: a word the tokenizer drops gets it
    without anyone needing the names (`windows.merge`)."""
    if scheme == "BMES":
        return ["S", "B", "E", "M"]
    types = {split_tag(t)[1] for t in tags if t != "O"}
    return ["O"] + sorted(f"{p}-{x}" for x in types for p in PREFIXES[scheme])


# ---------------------------------------------------------------- reading tags (seqeval's default mode)

def read_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, start, end) of each entity, end exclusive: seqeval's `get_entities`, with M as I."""
    return [(t, s, e + 1) for t, s, e in get_entities(["I" if t == "M" else t for t in tags])]


def words(tags: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) of each word of BMES tags, end exclusive."""
    return [(s, e) for _, s, e in read_spans(tags)]


def tags_from_spans(spans: Iterable[tuple[str, int, int]], n: int, scheme: str) -> list[str]:
    """Well-formed tags of `scheme` for `n` tokens holding `spans`."""
    out = ["S" if scheme == "BMES" else "O"] * n
    for type_, s, e in spans:
        if scheme == "BMES":
            out[s:e] = ["S"] if e - s == 1 else ["B"] + ["M"] * (e - s - 2) + ["E"]
        elif scheme == "BIO" or e - s > 1:
            inner = "I" if scheme == "BIO" else "E"
            out[s:e] = [f"B-{type_}"] + [f"I-{type_}"] * (e - s - 2) + [f"{inner}-{type_}"] * (e - s > 1)
        else:
            out[s] = f"S-{type_}"
    return out


def repair(tags: Sequence[str], scheme: str) -> tuple[list[str], list[tuple[int, str]]]:
    """(tags as seqeval reads them, written well-formed; [(position, "orphan" | "unclosed")] of the
    tags that changed). Orphan: an I-/E-/M- tag that continues nothing; unclosed: a B-/I-/M- tag
    left without its E- (BIOES, BMES)."""
    spans = read_spans(tags)
    fixed, starts = tags_from_spans(spans, len(tags), scheme), {s for _, s, _ in spans}
    # seqeval never puts an O in an entity, so every changed tag is in one: an orphan if its
    # entity starts on it, unclosed otherwise.
    return fixed, [(i, "orphan" if old[:1] in ("I", "E", "M") and i in starts else "unclosed")
                   for i, (old, new) in enumerate(zip(tags, fixed)) if old != new]


# ---------------------------------------------------------------- scores

def segmentation_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """SIGHAN word-level scores over a corpus: a word is a (start, end) character interval; P =
    correct / predicted words, R = correct / gold words."""
    correct = n_gold = n_pred = 0
    for g, p in zip(gold, pred):
        gw, pw = set(words(g)), set(words(p))
        correct, n_gold, n_pred = correct + len(gw & pw), n_gold + len(gw), n_pred + len(pw)
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": n_gold}


def entity_report(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], scheme: str,
                  types: Sequence[str] = ()) -> dict[str, dict[str, float]]:
    """{"micro": {precision, recall, f1, support}, TYPE: {...} for every type in `types` or found}.
    BMES: the segmentation scores under "micro"."""
    if scheme == "BMES":
        return {"micro": segmentation_scores(gold, pred)}
    zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    gold, pred = [list(s) for s in gold], [list(s) for s in pred]
    if not any(t != "O" for s in gold + pred for t in s):
        return {"micro": dict(zero), **{t: dict(zero) for t in types}}  # seqeval refuses a corpus without entities
    strict = {"mode": "strict", "scheme": IOBES} if scheme == "BIOES" else {}
    report = classification_report(gold, pred, output_dict=True, zero_division=0, **strict)
    out = {}
    for name, row in report.items():
        if name.endswith(" avg") and name != "micro avg":
            continue
        out["micro" if name == "micro avg" else name] = {
            "precision": float(row["precision"]), "recall": float(row["recall"]), "f1": float(row["f1-score"]),
            "support": int(row["support"])}
    for t in types:
        out.setdefault(t, dict(zero))
    return out
