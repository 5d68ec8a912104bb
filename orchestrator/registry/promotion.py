"""`promote` and `rollback`: move @champion by hand, recorded like the search's own moves.

Both go through `registry.move_champion`, so the registry keeps who moved it, why, when, how
and from which version (tags `champion_*` on the version, `champion_history` on the model).
`rollback` undoes the moves in that history one at a time, newest first, whoever made them:
after a search made version 2 champion over 1 and a promote made 3 champion over 2, a rollback
returns to 2 and a second one to 1; it never steps forward again to the version it undid.

Nothing is created on bad input: a missing SQLite store is an error, not a new empty database.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from orchestrator.registry import versions as registry
from orchestrator.config.secrets import redact
from orchestrator.registry.versions import CHAMPION, RegistryError
from orchestrator.tracking.client import TrackingError, existing_store, is_missing, is_outage

VERSION = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses


def promote(tracking_uri: str, name: str, version: str, reason: str | None = None) -> str:
    """Move @champion of registered model `name` to `version`; returns what was done, in a line."""
    if not VERSION.fullmatch(str(version).strip()) or not 1 <= int(version) < 2**63:  # SQL's largest integer
        raise RegistryError(f"--version {version!r}: not a version number; give one of the versions listed "
                            f"on the model's registry page, e.g. --version 3")
    version = str(int(version))
    client, shown = _client(tracking_uri)
    with _store(shown):
        _model(client, name, shown)
        try:
            target = client.get_model_version(name, version)
        except MlflowException as e:
            if not is_missing(e):
                raise
            raise RegistryError(f"--version {version}: {name} has no version {version} in {shown}; its versions: "
                                f"{_versions(client, name)}") from None
        if target.status != "READY":
            raise RegistryError(f"--version {version}: version {version} of {name} is {target.status}, not READY; "
                                f"promote a version that finished registering")
        current = registry.alias_version(client, name, CHAMPION)
        if current is not None and str(current.version) == version:
            raise RegistryError(f"--version {version}: version {version} is already @champion of {name}; nothing "
                                f"to do")
        entry = registry.move_champion(client, name, version, "promote", reason or "promoted by hand")
    return _said(name, entry)


def rollback(tracking_uri: str, name: str, reason: str | None = None) -> str:
    """Move @champion of `name` back to the version it held before the current one (from its
    recorded history); returns what was done, in a line."""
    client, shown = _client(tracking_uri)
    with _store(shown):
        _model(client, name, shown)
        current = registry.alias_version(client, name, CHAMPION)
        if current is None:
            raise RegistryError(f"--model {name}: has no @champion to roll back; make one with "
                                f"`promote --model {name} --version N`")
        standing = _standing(registry.champion_history(client, name))
        last = standing[-1] if standing else None
        if last is None or last.get("from") is None:
            raise RegistryError(f"--model {name}: no earlier champion recorded to roll back to (@champion is "
                                f"version {current.version}); choose one with `promote --model {name} --version N`")
        if str(last["version"]) != str(current.version):
            raise RegistryError(f"--model {name}: @champion is version {current.version}, but the last recorded "
                                f"move made version {last['version']} champion: it was moved without a record; "
                                f"choose the version with `promote --model {name} --version N`")
        back = str(last["from"])
        try:
            client.get_model_version(name, back)
        except MlflowException as e:
            if not is_missing(e):
                raise
            raise RegistryError(f"--model {name}: version {back}, the champion before {current.version}, no longer "
                                f"exists; choose one with `promote --model {name} --version N`") from None
        why = reason or f"rollback of version {current.version} ({last.get('how')} by {last.get('by')} at " \
                        f"{last.get('at')})"
        entry = registry.move_champion(client, name, back, "rollback", why)
    return _said(name, entry)


def _standing(history: list[dict]) -> list[dict]:
    """The moves not undone yet: each rollback cancels the latest standing move. A rollback whose
    move was dropped from the trimmed history cancels nothing."""
    standing: list[dict] = []
    for entry in history:
        if entry.get("how") == "rollback":
            if standing:
                standing.pop()
        else:
            standing.append(entry)
    return standing


def _said(name: str, entry: dict) -> str:
    was = f"version {entry['from']}" if entry["from"] is not None else "no version"
    return (f"@champion of {name}: {was} -> version {entry['version']} ({entry['how']} by {entry['by']} at "
            f"{entry['at']}: {entry['reason']}); history in the registered model's tag {registry.HISTORY_TAG}")


def _client(tracking_uri: str) -> tuple[MlflowClient, str]:
    shown = redact(tracking_uri) or "the default store"
    return existing_store(tracking_uri), shown


@contextmanager
def _store(shown: str):
    """A store that cannot be reached is the user's to fix (exit 2), said in one line."""
    try:
        yield
    except MlflowException as e:
        if is_outage(e):
            raise TrackingError(f"--tracking-uri: cannot reach the MLflow store {shown}: {e.message[:300]}") from None
        raise


def _model(client: MlflowClient, name: str, shown: str) -> None:
    if not name.strip():
        raise RegistryError("--model: empty; give the registered model's name, e.g. --model drug-review-classifier")
    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if not (is_missing(e) or e.error_code == "INVALID_PARAMETER_VALUE"):  # a name MLflow refuses
            raise
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
        raise RegistryError(f"--model {name}: no registered model of that name in {shown}; registered models: "
                            f"{', '.join(names) or 'none'}") from None


def _versions(client: MlflowClient, name: str) -> str:
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    return ", ".join(map(str, versions[-20:])) or "none"
