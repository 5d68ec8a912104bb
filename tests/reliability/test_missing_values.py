"""Values spelled NA, None, N/A, null, nan are data, not missing: text and label columns are read as
strings exactly as written, in every format, by the search and by `predict`; only a truly empty
cell is missing. Numeric labels stay as written."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from orchestrator.config import DataConfig
from orchestrator.data import load_splits
from orchestrator.tasks.single_label.task import SingleLabel
from orchestrator.training.saved_model import Classifier

SPELLED = ["NA", "N/A", "None", "null", "nan", "NaN", "#N/A", "n/a", "-nan", "NULL"]


def _rows(labels, texts=None, n=60):
    texts = texts or ["great fine", "okay plain", "bad awful"]
    return [{"text": f"{texts[i % len(texts)]} {i}", "label": labels[i % len(labels)]} for i in range(n)]


def _write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        sep = "\t" if path.suffix == ".tsv" else ","
        with open(path, "w", encoding="utf-8") as f:  # by hand: exactly these characters in the file
            f.write(f"text{sep}label\n")
            for r in rows:
                f.write(f"{r['text']}{sep}{'' if r['label'] is None else r['label']}\n")
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_labels_spelled_like_missing_values_are_classes(tmp_path, suffix):
    labels = ["NA", "EU", "APAC", "None", "null"]  # NA: North America
    path = _write(tmp_path / f"regions{suffix}", _rows(labels, n=100))
    s = load_splits(DataConfig(train=str(path)), SingleLabel())
    assert set(s.label_names) == set(labels)
    assert sum(len(s.data[k]) for k in s.data) == 100  # no row vanished


def test_texts_spelled_like_missing_values_are_texts(tmp_path):
    rows = [{"text": SPELLED[i % len(SPELLED)], "label": ["a", "b"][i % 2]} for i in range(80)]
    s = load_splits(DataConfig(train=str(_write(tmp_path / "t.csv", rows))), SingleLabel())
    texts = {t for k in s.data for t in s.data[k]["text"]}
    assert texts == set(SPELLED)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_numeric_labels_stay_as_written_and_only_empty_cells_are_missing(tmp_path, suffix):
    rows = _rows([0, 1, 10], n=90)
    rows[4]["label"] = None  # one truly empty label cell: that row is dropped (with a warning)
    s = load_splits(DataConfig(train=str(_write(tmp_path / f"n{suffix}", rows))), SingleLabel())
    assert s.label_names == ["0", "1", "10"]  # not 0.0, 1.0, 10.0; numeric order
    assert sum(len(s.data[k]) for k in s.data) == 89


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_predict_keeps_na_texts_as_written_and_predicts_them(tmp_path, registered_model, suffix):
    uri, checkpoint = registered_model
    rows = [{"text": t, "label": "x"} for t in [*SPELLED, "", "great product"]]
    source = _write(tmp_path / f"in{suffix}", rows)
    out = tmp_path / f"out{suffix}"
    done = subprocess.run([sys.executable, "-m", "orchestrator", "predict", "--model", "models:/tiny-clf@champion",
                           "--input", str(source), "--output", str(out), "--tracking-uri", uri],
                          capture_output=True, text=True, timeout=300)  # a fresh process: MLflow's warnings print
    assert done.returncode == 0, done.stderr[-2000:]
    if suffix == ".parquet":
        got = pd.read_parquet(out)
    elif suffix == ".jsonl":
        got = pd.read_json(out, lines=True, dtype=False, convert_dates=False)
    else:
        got = pd.read_csv(out, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    assert got["text"].fillna("").tolist() == [r["text"] for r in rows]  # written back as read
    expected = Classifier(checkpoint).predict_frame([r["text"] for r in rows if r["text"]])
    predicted = got["predicted_label"].tolist()
    assert predicted[:len(SPELLED)] + predicted[-1:] == expected["label"].tolist()  # "NA" was predicted as "NA"
    assert predicted[len(SPELLED)] in ("", None) or pd.isna(predicted[len(SPELLED)])  # an empty text: no guess
    assert "UserWarning" not in done.stderr and "type hint" not in done.stderr


def test_predict_keeps_one_output_row_per_input_row(tmp_path, registered_model, monkeypatch):
    from orchestrator.cli import main

    uri, _ = registered_model
    monkeypatch.chdir(tmp_path)
    (tmp_path / "one.csv").write_text("text\ngreat\n\nawful\n   \nokay\n")  # a blank line, a blank text
    assert main(["predict", "--model", "models:/tiny-clf@champion", "--input", "one.csv", "--output", "o.csv",
                 "--tracking-uri", uri]) == 0
    got = pd.read_csv(tmp_path / "o.csv", dtype=str, keep_default_na=False, skip_blank_lines=False)
    assert got["text"].tolist() == ["great", "", "awful", "   ", "okay"]
    assert [bool(x) for x in got["predicted_label"]] == [True, False, True, False, True]  # no guess for no text
