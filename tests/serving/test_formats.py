"""`--format onnx|int8` is checked before a model is loaded (`registry.lookup.check_format`):
against a model folder's files, or a registered version's tag; other URIs say which to give."""

from __future__ import annotations

import pytest

from orchestrator.data import DataError
from orchestrator.registry.lookup import check_format


def test_a_model_folder_is_checked_by_its_files(tmp_path):
    checkpoint = tmp_path / "artifacts" / "trial-3"  # the pyfunc keeps the checkpoint under its own name
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.onnx").write_bytes(b"")
    check_format(str(tmp_path), None, "onnx")
    check_format(str(tmp_path), None, "pytorch")
    with pytest.raises(DataError, match="has no model.int8.onnx"):
        check_format(str(tmp_path), None, "int8")


@pytest.mark.parametrize("uri", ["models:/m-0123456789abcdef", "runs:/abc/model", "models:/clf"])
def test_uris_without_a_version_are_refused_for_onnx_formats(uri):
    with pytest.raises(DataError, match="names no registered version"):
        check_format(uri, None, "int8")
    check_format(uri, None, "pytorch")  # PyTorch needs no export


def test_a_version_that_is_no_number_is_refused():
    with pytest.raises(DataError, match="'latest' is no version number"):
        check_format("models:/clf/latest", "sqlite:////nonexistent/mlflow.db", "onnx")
