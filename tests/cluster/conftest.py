"""Servers for the cluster tests (see `stack.py`), started once per test module and stopped after it:
under pytest-xdist, modules run on different workers, and a server idling until the session ends
would take CPU from the tests still running."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import new_database

from .stack import RayCluster, mlflow_basic_auth, moto_s3


@pytest.fixture(scope="module")
def ray_cluster():
    root = Path(tempfile.mkdtemp(prefix="orchestrator-ray-"))  # short: Ray's socket paths must fit 107 bytes
    cluster = RayCluster(root)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 endpoint on loopback with a bucket `team`. Yields its URL."""
    with moto_s3(tmp_path_factory.mktemp("s3")) as url:
        yield url


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, s3, postgres):
    """The team's MLflow server: basic auth, PostgreSQL behind it (a database of its own, since
    Optuna's and MLflow's schemas both keep an `alembic_version` table), artifacts in `team`."""
    backend = new_database(postgres.replace("postgresql://", "postgresql+psycopg://", 1), "mlflow")
    with mlflow_basic_auth(tmp_path_factory.mktemp("mlflow-server"), s3, backend) as server:
        yield server
