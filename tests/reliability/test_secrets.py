"""Passwords never reach a param, tag, artifact, job file, log line or summary. A real search runs
on a real PostgreSQL storage whose URL carries a password (the test server trusts loopback, so any
password connects); afterwards every file the run wrote, the MLflow database, a dump of the
Optuna database and everything printed are searched for it."""

import pytest
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import sqlalchemy
from conftest import tiny_experiment

from orchestrator.config import load_config
from orchestrator.config.secrets import scrub

PASSWORD = "Pw-s3cret-4f9"  # distinctive: no other text contains it by chance


def _with_password(url: str) -> str:
    return sqlalchemy.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


def _hits(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]


def _dump(url: str) -> bytes:
    pg_dump = shutil.which("pg_dump") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))), None)
    plain = sqlalchemy.make_url(url).set(password=None).render_as_string(hide_password=False)
    return subprocess.run([str(pg_dump), plain], capture_output=True, check=True, timeout=120).stdout


@pytest.mark.slow
def test_a_password_in_the_storage_url_reaches_no_file_log_or_store(tmp_path, tiny_model, data_dir, postgres):
    name = f"secret-{uuid.uuid4().hex[:8]}"
    storage = _with_password(postgres)
    experiment = tiny_experiment(tmp_path / "s.yaml", tiny_model, data_dir, name, training={"epochs": 1},
                                 search={"n_trials": 2, "storage": storage})
    assert PASSWORD in experiment.read_text()  # the worst case: it is in the config itself
    env = {**os.environ, "MLFLOW_TRACKING_PASSWORD": "env-only-Secret-77"}
    done = subprocess.run([sys.executable, "-m", "orchestrator", "search", "--config", str(experiment),
                           f"search.storage={storage}"],  # and on the command line
                          cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert PASSWORD not in output and "env-only-Secret-77" not in output
    written = [h for h in _hits(tmp_path) if not h.endswith("s.yaml")]
    assert written == [], written  # trial logs, job files, mlflow.db, artifacts, checkpoints
    assert (tmp_path / "mlruns" / "mlflow.db").is_file() and list((tmp_path / "mlruns").rglob("trial-*.json"))
    dump = _dump(postgres)
    assert name.encode() in dump and PASSWORD.encode() not in dump  # the Optuna storage itself


def test_the_storage_url_can_come_from_the_environment(tmp_path, monkeypatch):
    (tmp_path / "e.yaml").write_text("name: e\ndata: {train: a.csv}\n")
    url = f"postgresql://optuna:{PASSWORD}@db.example:5432/optuna"
    monkeypatch.setenv("ORCHESTRATOR_STORAGE", url)
    assert load_config(tmp_path / "e.yaml").search.storage == url
    explicit = load_config(tmp_path / "e.yaml", ["search.storage=sqlite:///x.db"])
    assert explicit.search.storage == "sqlite:///x.db"  # the experiment's own setting wins


def test_passwords_with_url_characters_are_masked_whole():
    from orchestrator.config.secrets import redact, remember

    for url, password in [("postgresql://u:ab/cd-Secret77@127.0.0.1:5432/db", "ab/cd-Secret77"),
                          ("postgresql://u:Sp@ce-Secret55@127.0.0.1/db", "Sp@ce-Secret55"),
                          ("http://admin:a:b:c-Secret9@mlflow:5000", "a:b:c-Secret9")]:
        remember(url)
        assert password not in redact(url)
        assert password not in scrub(f"failed: {url}; the password {password} was refused")


def test_scrub_masks_url_passwords_and_secret_variables(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "from-the-Env-123")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ray-Token-9f8e7d")  # the driver's only
    text = (f"could not connect to postgresql+psycopg://u:{PASSWORD}@h:5432/db; "
            f"http://admin:x%40y@mlflow:5000/api failed; password from-the-Env-123 rejected; token ray-Token-9f8e7d")
    clean = scrub(text)
    assert PASSWORD not in clean and "x%40y" not in clean and "from-the-Env-123" not in clean
    assert "ray-Token-9f8e7d" not in clean
    assert "postgresql+psycopg://u:***@h:5432/db" in clean and "http://admin:***@mlflow:5000/api" in clean
    assert scrub("http://127.0.0.1:5000/path and sqlite:////tmp/a.db") == "http://127.0.0.1:5000/path and " \
                                                                         "sqlite:////tmp/a.db"
