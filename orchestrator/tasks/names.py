"""Names made from labels (metric keys, tag keys), checked before a study exists.

A label becomes part of MLflow keys (`val_f1_<label>`, `train_class_count_<label>`) through
`safe_name`, which keeps letters, digits, `-`, `_` and `.` and writes `_` for anything else: the
characters MLflow accepts in every key. Two labels can then become one name ("a b" and "a_b" are
both `a_b`), and one of their metrics would silently overwrite the other, or `search.metric` name
the wrong one; a long label can make a key longer than MLflow stores. `name_problems` finds both,
from the label set alone, so the search refuses them before any study, run or folder exists
instead of in every trial. (Output columns, `prob_<label>`, use the labels as written: distinct
labels give distinct columns.)

Two labels that are one label spelled two ways ("Negative" and "negative", "pos" and "pos ",
"1" and "1.0", "é" composed and decomposed) are refused too (`spelled_twice`): they would be
learned as two classes that share their examples, each scored low, and nothing downstream would
say why. (Their metric names can also collide on a case-insensitive file system.)
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING

from orchestrator.config.schema import DataConfig
from orchestrator.data.read import DataError
from orchestrator.data.splits import where

if TYPE_CHECKING:
    from orchestrator.tasks.base import Task

MLFLOW_KEY_LIMIT = 250  # the longest metric, param or tag key MLflow's stores keep
CLASS_COUNT = "train_class_count_"
NUMBER = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(e[-+]?[0-9]+)?")  # ASCII digits, after casefold


def safe_name(label: str) -> str:
    """A label as it appears in a metric or tag name (MLflow keys allow only some characters)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def class_count_tag(label: str) -> str:
    """The tag a trial's run records the training count of `label` under."""
    return f"{CLASS_COUNT}{safe_name(label)}"


def collisions(names: Iterable[str]) -> dict[str, list[str]]:
    """safe name -> the distinct names that all become it (only where there are two or more)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in dict.fromkeys(names):
        groups[safe_name(name)].append(name)
    return {safe: found for safe, found in groups.items() if len(found) > 1}


def spelling(label: str) -> str:
    """What the spellings of one label share: Unicode form (NFKC), case, spaces at the ends, how a
    number is written (1, 01, 1.0, 1e0: a JSON file whose label column went through a float)."""
    text = unicodedata.normalize("NFKC", label).strip().casefold()
    return format(Decimal(text).normalize(), "f") if NUMBER.fullmatch(text) else text


def spelled_twice(names: Iterable[str]) -> list[list[str]]:
    """Groups of distinct names that are one name spelled two (or more) ways (`spelling`)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in dict.fromkeys(names):
        groups[spelling(name)].append(name)
    return [found for found in groups.values() if len(found) > 1]


def generated_keys(task: Task, label_names: list[str]) -> list[str]:
    """Every MLflow key a search makes from these labels: validation and test metrics, the
    champion's copy of the searched metric, the training class counts."""
    val = task.metric_names(label_names, "val")
    return [*val, *task.metric_names(label_names, "test"), *(f"champion_{k}" for k in val),
            *(class_count_tag(n) for n in label_names)]


def name_problems(task: Task, label_names: list[str]) -> list[str]:
    """Why these labels cannot name metrics and tags: one label spelled two ways, two that become
    one name, one too long."""
    problems = []
    for kind, names in task.named_parts(label_names).items():
        for found in spelled_twice(names):
            # Spellings that print the same (composed and decomposed "é") are shown by code point.
            same = len({unicodedata.normalize("NFC", n) for n in found}) < len(found)
            shown = " and ".join(ascii(n) if same else repr(n) for n in found)
            problems.append(f"{kind}s {shown} differ only in case, spaces at the ends, Unicode form or how a number "
                            f"is written, so they would be learned as {len(found)} different {kind}s; write them one "
                            f"way in the data (or, if they really differ, rename one)")
        for safe, found in collisions(names).items():
            example = next((k for k in task.metric_names(label_names) if k.endswith(f"_{safe}")), safe)
            shown = " and ".join(repr(n) for n in found)
            problems.append(f"{kind}s {shown} both become {safe!r} in metric names ({example}), so one "
                            f"{kind}'s scores would overwrite the other's; rename one of them")
    too_long = [k for k in generated_keys(task, label_names) if len(k) > MLFLOW_KEY_LIMIT]
    if too_long:
        longest = max(too_long, key=len)
        culprits = sorted({n for n in label_names if longest.endswith(safe_name(n))}, key=len)[-1:]
        shown = f"{culprits[0][:60]!r}... ({len(culprits[0])} characters)" if culprits else "a label"
        problems.append(f"{len(too_long)} metric or tag name(s) would be longer than the {MLFLOW_KEY_LIMIT} "
                        f"characters MLflow keeps, e.g. {longest[:70]}... ({len(longest)}), made from {shown}; "
                        f"shorten the long labels")
    return problems


def check_names(task: Task, label_names: list[str], cfg: DataConfig) -> None:
    """Raise `DataError` naming the training file, its column and every problem of `name_problems`."""
    problems = name_problems(task, label_names)
    if problems:
        raise DataError(f"{where(cfg, 'train')}: column {task.label_column(cfg)!r}: " + "; ".join(problems))
