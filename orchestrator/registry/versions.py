"""The Model Registry: log the champion as a pyfunc, register it, move aliases.

`champion` moves to a new version only if its test score beats the current champion's, like with
like: the same metric (the task's, e.g. `test_macro_f1`, `test_f1`) measured on the same test
split (tag `test_data`, the split's fingerprint), better in the metric's direction (tag
`score_higher_is_better`, "true" or "false"; a version registered before that tag is read as
higher-is-better, the only rule there was). A champion measured on another split (or with another
metric) is re-scored on the new test split when the caller can (`rescore`); otherwise the new
version gets `challenger` and the registration says why the two could not be compared. A champion
whose recorded direction differs from the new version's for the same metric is never compared:
the two disagree on what better means, which no re-scoring settles. If the current champion's
score cannot be read (the store fails, its tag is missing or not a number), `champion` stays
where it is and the registration says so. A version that does not take `champion` says why in
its tag `challenger_reason` (removed when it becomes champion). Registering the same study's same
trial twice returns the existing version (re-running a finished study is safe), and gives it
an alias if it was left without one.

Every move of `champion`, the search's own (`register`) and a person's (`orchestrator.promotion`),
goes through `move_champion`, which records who, why, when and from which version: as tags on the
new champion version and as the registered model's `champion_history`, which `rollback` reads.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import AnyType, ColSpec, Schema

from orchestrator.registry.gate import COMPARISON_TAG
from orchestrator.tracking.client import is_missing

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
SCORE_TAG = "test_macro_f1"  # the metric of versions registered before tasks had their own
METRIC_TAG, DATA_TAG = "test_metric", "test_data"
DIRECTION_TAG = "score_higher_is_better"  # "true" / "false"; absent on versions registered before it: "true"
CHALLENGER_TAG = "challenger_reason"  # why a registered version did not take @champion; gone once it does
PYFUNC_CODE = str(Path(__file__).with_name("pyfunc_model.py"))
# The history of @champion is one registered-model tag holding a JSON list, newest last: the
# registry UI shows a model's tags on its page; one tag keeps the moves in order and is one read
# for `rollback` (a tag per move has no order and would crowd the page; the description is for
# people to write). MLflow validates such a tag up to 100,000 characters, but its SQL stores keep
# it in a VARCHAR(5000) column (registered_model_tags.value, MLflow 3.17), which PostgreSQL and
# MySQL enforce: the oldest moves are dropped to stay under 5000.
HISTORY_TAG, HISTORY_LIMIT, REASON_LIMIT = "champion_history", 5000, 500
DESCRIPTION_LIMIT = 5000  # registered_models.description and model_versions.description are VARCHAR(5000)
MODEL_DESCRIPTION = ("Fine-tuned transformer text models registered by `python -m orchestrator search`: each version "
                     "is a study's best trial, tested on its held-out test split (its description says what it is "
                     "and how it scored). @champion is the version to serve (`python -m orchestrator serve`); it "
                     "moves when a search beats it on the same test split, or by hand with `promote` / `rollback`, "
                     "each move recorded in the tag champion_history and the champion_* tags of the version.")


@dataclass
class Registration:
    name: str
    version: str
    alias: str
    score: float
    previous_champion: float | None
    uri: str
    reused: bool = False
    note: str | None = None  # why champion did not move although it might have (a score not read)
    comparison: object = None  # `gate.Comparison` with the champion it met, when there was one to compare
    reason: str | None = None  # why the alias is what it is, in a sentence


class RegistryError(ValueError):
    """A user's request the registry cannot satisfy (no such model or version, nothing to roll
    back to): exit 2 with the message."""


class ScoreUnreadable(RuntimeError):
    """The current champion's score could not be read; the alias must not move on a guess."""


def choose_alias(score: float, read_champion_score, maximize: bool = True) -> tuple[str, float | None, str | None]:
    """(alias for the new version, the current champion's score, a note). `read_champion_score()`
    returns the score, None when there is no champion, or raises `ScoreUnreadable`. `maximize`:
    whether a higher score is better; a tie keeps the champion either way."""
    if not math.isfinite(score):
        return CHALLENGER, None, f"the new version's score {score} is not a number; @champion stays"
    try:
        previous = read_champion_score()
    except ScoreUnreadable as e:
        return CHALLENGER, None, f"@champion stays where it is: {e}; compare the two versions and move it by hand"
    if previous is None or _beats(score, previous, maximize):
        return CHAMPION, previous, None
    return CHALLENGER, previous, None


def _beats(score: float, previous: float, maximize: bool) -> bool:
    return score > previous if maximize else score < previous


def higher_is_better(version) -> bool:
    """What `version`'s recorded score means: its tag `score_higher_is_better`; True when the tag
    is absent (registered before it existed, when higher was the only rule). `ScoreUnreadable`
    when the tag holds anything but "true" or "false"."""
    value = version.tags.get(DIRECTION_TAG)
    if value is None:
        return True
    if value.strip().lower() not in ("true", "false"):
        raise ScoreUnreadable(f"version {version.version} has tag {DIRECTION_TAG}={value!r}, not \"true\" or "
                              f"\"false\"; set it with the registry's tag editor")
    return value.strip().lower() == "true"


def _direction(maximize: bool) -> str:
    return "higher is better" if maximize else "lower is better"


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "safetensors", "pandas", "numpy", "mlflow")]


def register(client: MlflowClient, name: str, run_id: str, checkpoint: str | Path, score: float,
             example_input: pd.DataFrame | list[str], example_output: pd.DataFrame, tags: dict[str, str],
             metric: str = SCORE_TAG, test_data: str | None = None, rescore=None,
             description: str | None = None, maximize: bool = True, gate=None,
             extra_tags: dict[str, str] | None = None, fixed_alias: str | None = None) -> Registration:
    """Log `checkpoint` as a pyfunc model under `run_id`, register it under `name`, set an alias.

    `score` is `metric` on the test split whose fingerprint is `test_data`; `maximize`: whether a
    higher `metric` is better (recorded as tag `score_higher_is_better`). `rescore(version)`
    returns the current champion's `metric` on that split, or raises `ScoreUnreadable`.
    `description` (markdown) becomes the version's description: what the model is and how it scored.
    `gate(champion_version)` -> (moves, why, `gate.Comparison`): the paired test on the same rows
    that decides, once the champion is known comparable (`registry/gate.py`); it raises
    `ScoreUnreadable` when it cannot compare. Without it, the higher score decides. `extra_tags`:
    more tags for a new version (its score's interval, its confirmation, its code and data).
    `fixed_alias` (e.g. "fast"): the version gets that alias, whatever @champion does; no comparison.
    `example_input`: a few rows of the model's input columns (a list: texts of its one `text` column),
    whose columns become the signature's inputs; `example_output` the model's output for them."""
    if not isinstance(maximize, bool):  # "minimize" is truthy: it would silently compare the wrong way
        raise TypeError(f"register(maximize={maximize!r}): expected True or False (whether a higher {metric} is "
                        f"better), e.g. maximize=task.maximize({metric!r})")
    read = functools.partial(champion_score, client, name, metric, test_data, rescore, maximize=maximize)
    why = functools.partial(_search_reason, tags.get("orchestrator_study"), metric, score, maximize=maximize)
    existing = _find_version(client, name, tags)
    if existing is not None and fixed_alias:
        client.set_registered_model_alias(name, fixed_alias, existing.version)
        return Registration(name, str(existing.version), fixed_alias, score, None, f"models:/{name}@{fixed_alias}",
                            reused=True)
    if existing is not None:
        if DIRECTION_TAG not in existing.tags and existing.tags.get(METRIC_TAG, SCORE_TAG) == metric:
            # Registered by a run of the code before the tag: record what its score means before
            # it may become champion, or the next search would read it as higher-is-better.
            client.set_model_version_tag(name, existing.version, DIRECTION_TAG, _tag(maximize))
        if description and not existing.description:
            client.update_model_version(name, existing.version, description=_fit(description, DESCRIPTION_LIMIT))
        aliases = existing.aliases or []
        if aliases:
            alias = CHAMPION if CHAMPION in aliases else aliases[0]
            return Registration(name, str(existing.version), alias, score, None, f"models:/{name}@{alias}",
                                reused=True)
        # Registered by a run that stopped before it set the alias: decide it now.
        alias, previous, note, comparison, reason = _set_alias(client, name, existing.version, score, read, why,
                                                               maximize, gate)
        return Registration(name, str(existing.version), alias, score, previous, f"models:/{name}@{alias}",
                            reused=True, note=note, comparison=comparison, reason=reason)

    example = example_input if isinstance(example_input, pd.DataFrame) else pd.DataFrame({"text": example_input})
    # Inputs typed Any, not string: for a string column MLflow's scoring server turns a JSON null
    # sent as `inputs` or `instances` into the text "None" (numpy's str of None), which the model
    # then predicted; typed Any, null arrives as None and gets no prediction (`missing_rows`), as in
    # `dataframe_split`. The pyfunc itself refuses what is no text (a list) and a missing column.
    signature = ModelSignature(Schema([ColSpec(AnyType(), str(c)) for c in example.columns]),
                               infer_signature(example, example_output).outputs)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=PYFUNC_CODE, artifacts={"classifier": str(checkpoint)},
            signature=signature, input_example=example.head(2),
            pip_requirements=_requirements(),
        )
    scores = {METRIC_TAG: metric, metric: f"{score:.6f}", DIRECTION_TAG: _tag(maximize),
              **({DATA_TAG: test_data} if test_data else {})}
    version = mlflow.register_model(info.model_uri, name, tags={**tags, **scores, **(extra_tags or {})})
    if description:
        client.update_model_version(name, version.version, description=_fit(description, DESCRIPTION_LIMIT))
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=MODEL_DESCRIPTION)
    if fixed_alias:
        client.set_registered_model_alias(name, fixed_alias, version.version)
        return Registration(name, str(version.version), fixed_alias, score, None, f"models:/{name}@{fixed_alias}")
    alias, previous, note, comparison, reason = _set_alias(client, name, version.version, score, read, why,
                                                           maximize, gate)
    log.info("registered %s version %s as @%s (%s %.4f, %s, previous champion %s)",
             name, version.version, alias, metric, score, _direction(maximize), previous)
    return Registration(name, str(version.version), alias, score, previous, f"models:/{name}@{alias}", note=note,
                        comparison=comparison, reason=reason)


def _tag(maximize: bool) -> str:
    return "true" if maximize else "false"


def _set_alias(client: MlflowClient, name: str, version, score: float, read, why,
               maximize: bool = True, gate=None) -> tuple[str, float | None, str | None, object, str]:
    alias, previous, note = choose_alias(score, read, maximize)
    comparison, reason = None, None
    if gate is not None and previous is not None and note is None:
        current = alias_version(client, name, CHAMPION)
        try:
            moves, reason, comparison = gate(current)
        except ScoreUnreadable as e:
            alias, note = CHALLENGER, f"@champion stays where it is: {e}; compare the two versions and move it by hand"
        else:
            alias = CHAMPION if moves else CHALLENGER
            client.set_model_version_tag(name, version, COMPARISON_TAG, _fit(comparison.to_json(), REASON_LIMIT))
    reason = reason or note or why(previous)
    if alias == CHAMPION:
        move_champion(client, name, version, "search", reason)
    else:
        client.set_registered_model_alias(name, alias, version)
        # Why it did not take @champion, on its own page: lost the comparison, or could not be compared.
        client.set_model_version_tag(name, version, CHALLENGER_TAG, _fit(reason, REASON_LIMIT))
    return alias, previous, note, comparison, reason


def _search_reason(study: str | None, metric: str, score: float, previous: float | None,
                   maximize: bool = True) -> str:
    said = f"study {study}: " if study else ""
    lower = "" if maximize else ", lower is better"
    if previous is None:
        return f"{said}first champion ({metric} {score:.4f}{lower})"
    if not _beats(score, previous, maximize):
        return f"{said}{metric} {score:.4f} does not beat champion's {previous:.4f} ({_direction(maximize)})"
    if maximize:
        return f"{said}{metric} {score:.4f} > champion's {previous:.4f}"
    return f"{said}{metric} {score:.4f} < champion's {previous:.4f} (lower is better)"


# ---------------------------------------------------------------- who moved @champion, and why

def move_champion(client: MlflowClient, name: str, version, how: str, reason: str) -> dict:
    """Point @champion of `name` at `version` and record the move; returns the history entry.

    `how`: "search", "promote" or "rollback". The new champion gets tags `champion_since`,
    `champion_by`, `champion_how`, `champion_reason`, `champion_from`; the one it replaces gets
    `champion_until`. The alias moves first: a record that fails after it leaves a move without
    its entry, never an entry for a move that did not happen."""
    version = str(version)
    before = alias_version(client, name, CHAMPION)
    entry = {"version": version, "from": str(before.version) if before is not None else None, "how": how,
             "by": _user(), "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "reason": _fit(reason, REASON_LIMIT)}
    client.set_registered_model_alias(name, CHAMPION, version)
    tags = {"champion_since": entry["at"], "champion_by": entry["by"], "champion_how": how,
            "champion_reason": entry["reason"], "champion_from": entry["from"] or "none"}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    stale = client.get_model_version(name, version).tags
    for key in ("champion_until", CHALLENGER_TAG):  # champion (again): no longer "until", nor a challenger
        if key in stale:
            client.delete_model_version_tag(name, version, key)
    if entry["from"] is not None and entry["from"] != version:
        client.set_model_version_tag(name, entry["from"], "champion_until", entry["at"])
    history = [*champion_history(client, name), entry]
    while len(history) > 1 and len(_history_text(history)) > HISTORY_LIMIT:
        history.pop(0)
    client.set_registered_model_tag(name, HISTORY_TAG, _history_text(history))
    return entry


def champion_history(client: MlflowClient, name: str) -> list[dict]:
    """The recorded moves of @champion of `name`, oldest first; [] when none were recorded."""
    text = client.get_registered_model(name).tags.get(HISTORY_TAG)
    try:
        history = json.loads(text) if text else []
    except ValueError:
        log.warning("registered model %s: tag %s is not JSON; starting its history anew", name, HISTORY_TAG)
        return []
    return [e for e in history if isinstance(e, dict) and "version" in e] if isinstance(history, list) else []


def _history_text(history: list[dict]) -> str:
    return json.dumps(history, ensure_ascii=False, separators=(",", ":"))


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment, no entry in the password database
        return os.environ.get("USER") or "unknown"


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _find_version(client: MlflowClient, name: str, tags: dict[str, str]):
    versions = client.search_model_versions(f"name='{name}'")  # [] when the model is not registered yet
    for v in versions:
        if all(v.tags.get(k) == str(val) for k, val in tags.items()):
            return client.get_model_version(name, v.version)
    return None


def champion_score(client: MlflowClient, name: str, metric: str = SCORE_TAG, test_data: str | None = None,
                   rescore=None, maximize: bool = True) -> float | None:
    """The current champion's `metric` on the test split `test_data`; None when there is no
    champion; `ScoreUnreadable` when there is one whose comparable score cannot be had, or whose
    recorded direction for `metric` is not `maximize` (not comparable, re-scored or not)."""
    try:
        current = alias_version(client, name, CHAMPION)
    except MlflowException as e:
        raise ScoreUnreadable(f"reading the current champion of {name!r} failed ({e.message[:300]})") from e
    if current is None:
        return None
    its_metric = current.tags.get(METRIC_TAG, SCORE_TAG)
    its_data = current.tags.get(DATA_TAG)
    its_maximize = higher_is_better(current)
    if its_metric == metric and its_maximize != maximize:
        recorded = "recorded" if DIRECTION_TAG in current.tags else f"read, without tag {DIRECTION_TAG}, as"
        raise ScoreUnreadable(f"version {current.version} (the current champion) has {metric} {recorded} "
                              f"{_direction(its_maximize)}, this one {_direction(maximize)}: not comparable")
    if its_metric != metric or (test_data is not None and its_data != test_data):
        if rescore is None:
            directions = (f" ({its_metric}: {_direction(its_maximize)}; {metric}: {_direction(maximize)})"
                          if its_maximize != maximize else "")
            raise ScoreUnreadable(f"version {current.version} (the current champion) was scored with {its_metric} on "
                                  f"test split {its_data or 'unrecorded'}, this one with {metric} on {test_data}"
                                  f"{directions}: not comparable")
        score = rescore(current)
        log.info("re-scored the champion (version %s) on test split %s: %s %.4f", current.version, test_data,
                 metric, score)
        return score
    value = current.tags.get(metric)
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ScoreUnreadable(f"version {current.version} (the current champion) has tag {metric}={value!r}, "
                              f"not a number") from None
    if not math.isfinite(score):
        raise ScoreUnreadable(f"version {current.version} (the current champion) has score {score}")
    return score


# ---------------------------------------------------------------- pre-trained encoders

ENCODER_ARTIFACT = "encoder"  # a pre-training run's artifact folder: weights, config, tokenizer
FINGERPRINT_TAG = "pretrain_fingerprint"


def encoder_versions(client: MlflowClient, name: str, fingerprint: str) -> list:
    """The versions of encoder `name` pre-trained with `fingerprint` (corpus, start, settings)."""
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException as e:
        if is_missing(e):
            return []
        raise
    return [v for v in versions if v.tags.get(FINGERPRINT_TAG) == fingerprint]


def alias_version(client: MlflowClient, name: str, alias: str):
    """The version `alias` points to, or None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if is_missing(e) or (e.error_code == "INVALID_PARAMETER_VALUE" and "alias" in e.message.lower()):
            return None
        raise


def register_encoder(client: MlflowClient, name: str, run_id: str, tags: dict[str, str], alias: str) -> str:
    """Register the `encoder` artifacts of run `run_id` as a new version of `name`, give it
    `alias`; returns the version. The same fingerprint registered before is reused instead."""
    existing = encoder_versions(client, name, tags[FINGERPRINT_TAG])
    if existing:
        version = str(max(int(v.version) for v in existing))
    else:
        try:
            client.get_registered_model(name)
        except MlflowException as e:
            if not is_missing(e):
                raise
            client.create_registered_model(name, description="Encoders pre-trained by `orchestrator pretrain` "
                                                              "(masked-LM); fine-tune them with model.name_or_path: "
                                                              f"models:/{name}@<alias>")
        source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{ENCODER_ARTIFACT}"
        version = str(client.create_model_version(name, source, run_id=run_id, tags=tags).version)
    client.set_registered_model_alias(name, alias, version)
    return version


def parse_registered(uri: str) -> tuple[str, str | None, str | None]:
    """`models:/NAME@ALIAS` -> (NAME, ALIAS, None); `models:/NAME/3` -> (NAME, None, "3")."""
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, alias, None
    name, _, version = rest.rpartition("/")
    return (name, None, version) if name and version.isdigit() else (rest, None, None)
