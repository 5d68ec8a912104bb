"""Training data in object storage: `data.train=s3://bucket/key` against a real S3 endpoint (moto's
server on loopback), credentials and endpoint from the environment as for any AWS client."""

from __future__ import annotations

import pytest
from conftest import make_rows, write_csv

from .stack import S3_KEYS, s3_client


@pytest.fixture
def aws(s3, monkeypatch, tmp_path):
    for key, value in {**S3_KEYS, "AWS_ENDPOINT_URL": s3}.items():
        monkeypatch.setenv(key, value)
    import orchestrator.config.paths as paths

    monkeypatch.setattr(paths, "CACHE_ROOT", tmp_path / "cache")
    return s3_client(s3)


def test_a_file_in_a_bucket_is_read_and_a_replaced_one_is_never_served_stale(aws, tmp_path):
    from orchestrator.config import DataConfig
    from orchestrator.data import load_splits
    from orchestrator.tasks.single_label.task import SingleLabel

    write_csv(tmp_path / "a.csv", make_rows(90, seed=1))
    aws.upload_file(str(tmp_path / "a.csv"), "team", "data/reviews.csv")
    first = load_splits(DataConfig(train="s3://team/data/reviews.csv"), SingleLabel())
    assert sum(len(first.data[s]) for s in first.data) == 90
    assert first.record["sources"]["train"]["location"] == "s3://team/data/reviews.csv"

    write_csv(tmp_path / "b.csv", make_rows(60, seed=2))
    aws.upload_file(str(tmp_path / "b.csv"), "team", "data/reviews.csv")  # same key, new content
    second = load_splits(DataConfig(train="s3://team/data/reviews.csv"), SingleLabel())
    assert sum(len(second.data[s]) for s in second.data) == 60
    assert second.digest != first.digest


def test_a_missing_object_is_a_clear_error(aws):
    from orchestrator.config import DataConfig
    from orchestrator.data import DataError, load_splits
    from orchestrator.tasks.single_label.task import SingleLabel

    with pytest.raises(DataError, match=r"data.train: s3://team/no/such.csv: no such object"):
        load_splits(DataConfig(train="s3://team/no/such.csv"), SingleLabel())
