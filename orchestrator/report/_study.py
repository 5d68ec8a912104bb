"""The study, opened from its Optuna storage without writing to it."""

from __future__ import annotations

import optuna
import sqlalchemy
from optuna.storages import RDBStorage

from orchestrator.config import ExperimentConfig
from orchestrator.config.secrets import redact, scrub
from orchestrator.paths import absolute_sqlite, sqlite_path
from orchestrator.study import StorageError


def open_study(cfg: ExperimentConfig) -> optuna.Study:
    """The study `cfg.study_name` in `search.storage`, read as it is.

    Optuna's `RDBStorage` creates its tables (and SQLite its file) in whatever it is pointed at,
    so the storage is first looked at with a plain engine: a report about a study that does not
    exist must leave nothing behind.
    """
    url, shown = cfg.search.storage, redact(cfg.search.storage)
    first = f"run `python -m orchestrator search --config {cfg.source}` first"
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise StorageError(f"search.storage: no Optuna storage at {shown} (the file {path} does not exist); "
                           f"{first}, or point search.storage at the study's storage")
    url = absolute_sqlite(url, create=False)
    try:
        engine = sqlalchemy.create_engine(url)
        try:
            has_tables = sqlalchemy.inspect(engine).has_table("studies")
        finally:
            engine.dispose()
        if not has_tables:
            raise StorageError(f"search.storage: {shown} holds no Optuna study at all; {first}")
        storage = RDBStorage(url, skip_table_creation=True)
        names = sorted(s.study_name for s in storage.get_all_studies())
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, ImportError, RuntimeError) as e:
        # Unreachable server, missing driver, not a database; RuntimeError: Optuna's word for a
        # schema written by another Optuna version.
        raise StorageError(f"search.storage: cannot read the Optuna storage {shown}: "
                           f"{scrub(str(e)).strip().splitlines()[0][:300]}") from None
    if cfg.study_name not in names:
        held = ", ".join(repr(n) for n in names[:20]) or "none"
        raise StorageError(f"search.storage: {shown} holds no study named {cfg.study_name!r} (it holds {held}); "
                           f"set search.study_name to one of them, or {first}")
    return optuna.load_study(study_name=cfg.study_name, storage=storage)
