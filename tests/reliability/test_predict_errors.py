"""`predict` with bad input: one line on stderr, exit 2, found before the model is loaded, and no
MLflow store created where there was none. It reads the formats the search reads."""

import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import make_rows, write_csv

from orchestrator.cli import main


def _predict(tmp_path, *args, tracking=None):
    """A fresh `predict` process; MLflow's variable is dropped (an in-process client sets it)."""
    cmd = [sys.executable, "-m", "orchestrator", "predict", *args]
    if tracking:
        cmd += ["--tracking-uri", tracking]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture
def inputs(tmp_path):
    good = write_csv(tmp_path / "in.csv", make_rows(5))
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("text,label\n")
    write_csv(tmp_path / "body.csv", make_rows(5), text="body")
    return good


def test_each_bad_input_is_one_line_and_exit_2(tmp_path, registered_model, inputs, monkeypatch, capsys):
    uri, _ = registered_model
    monkeypatch.chdir(tmp_path)
    model = "models:/tiny-clf@champion"
    cases = [
        (["--model", model, "--input", "missing.csv", "--output", "o.csv"], "--input: file not found: missing.csv"),
        (["--model", model, "--input", "empty.csv", "--output", "o.csv"], "empty.csv is empty (0 bytes)"),
        (["--model", model, "--input", "header.csv", "--output", "o.csv"], "header.csv has no rows"),
        (["--model", model, "--input", "body.csv", "--output", "o.csv"], "column 'text' not found; columns found: "
                                                                          "['body', 'label']. Pass --text-column."),
        (["--model", model, "--input", "in.csv", "--output", "no/such/dir/o.csv"], "folder no/such/dir does not exist"),
        (["--model", model, "--input", "in.csv", "--output", "o.xlsx"], "unknown file type '.xlsx'"),
        (["--model", model, "--input", "in.csv", "--output", "in.csv"], "is the input file"),
        (["--model", "models:/no-such-model@champion", "--input", "in.csv", "--output", "o.csv"],
         "--model models:/no-such-model@champion: not found"),
        (["--model", "models:/tiny-clf@no-such-alias", "--input", "in.csv", "--output", "o.csv"],
         "--model models:/tiny-clf@no-such-alias: not found"),
        (["--model", "models:/tiny-clf/99", "--input", "in.csv", "--output", "o.csv"], "models:/tiny-clf/99: not found"),
        (["--model", "runs:/0123456789abcdef/model", "--input", "in.csv", "--output", "o.csv"], "not found"),
        (["--model", "./no-model-folder", "--input", "in.csv", "--output", "o.csv"], "not an MLflow model folder"),
        (["--model", ".", "--input", "in.csv", "--output", "o.csv"], "not an MLflow model folder (no MLmodel"),
        (["--model", model, "--input", "in.csv", "--output", "hard-link.csv"], "is the input file"),
    ]
    os.link(inputs, tmp_path / "hard-link.csv")  # the same file under another name
    failures = []
    for args, expected in cases:
        code = main(["predict", *args, "--tracking-uri", uri])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        if code != 2 or expected not in err or "Traceback" in err or len(lines) != 1:
            failures.append(f"{args}: exit {code}: {err[-800:]}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "o.csv").exists()
    assert (tmp_path / "hard-link.csv").read_text() == inputs.read_text()  # the input was not overwritten


def test_predict_never_creates_a_store_where_there_is_none(tmp_path, inputs):
    done = _predict(tmp_path, "--model", "models:/tiny-clf@champion", "--input", "in.csv", "--output", "o.csv",
                       tracking="sqlite:///nowhere/mlflow.db")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "no MLflow store at" in done.stderr
    assert not (tmp_path / "nowhere").exists()
    done = _predict(tmp_path, "--model", "models:/tiny-clf@champion", "--input", "in.csv", "--output", "o.csv")
    assert done.returncode == 2 and "no MLflow store at" in done.stderr  # the default store, also absent
    assert not (tmp_path / "mlruns").exists()
    # Another program's database, given by mistake: refused, and MLflow's tables not written into it.
    import sqlite3

    with sqlite3.connect(tmp_path / "other.db") as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    before = (tmp_path / "other.db").read_bytes()
    done = _predict(tmp_path, "--model", "models:/tiny-clf@champion", "--input", "in.csv", "--output", "o.csv",
                    tracking=f"sqlite:///{tmp_path / 'other.db'}")
    assert done.returncode == 2 and "not an MLflow store" in done.stderr, done.stderr[-2000:]
    assert (tmp_path / "other.db").read_bytes() == before


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".tsv"])
def test_predict_reads_and_writes_the_formats_the_search_reads(tmp_path, registered_model, suffix):
    uri, _ = registered_model
    frame = pd.DataFrame({"id": ["a1", "a2", "a3"], "text": ["great", "awful", "okay"]})
    source = tmp_path / f"in{suffix}"
    if suffix == ".jsonl":
        frame.to_json(source, orient="records", lines=True)
    elif suffix == ".parquet":
        frame.to_parquet(source)
    else:
        frame.to_csv(source, sep="\t", index=False)
    done = _predict(tmp_path, "--model", "models:/tiny-clf@champion", "--input", str(source), "--output",
                       f"out{suffix}", tracking=uri)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / f"out{suffix}"
    got = (pd.read_json(out, lines=True) if suffix == ".jsonl" else pd.read_parquet(out) if suffix == ".parquet"
           else pd.read_csv(out, sep="\t"))
    assert got["id"].tolist() == ["a1", "a2", "a3"]
    assert set(got["predicted_label"]) <= {"negative", "neutral", "positive"}
    assert [c for c in got.columns if c.startswith("prob_")] == ["prob_negative", "prob_neutral", "prob_positive"]
