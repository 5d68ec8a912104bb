"""No guess for a row without a text, wherever a prediction is made: `predict`, the registered
pyfunc (what MLflow's scoring server `serve` runs) and `Classifier` itself, for every task. One
rule decides which rows are missing (None, NaN, pandas' NA, empty or whitespace-only; "NA",
"None", "null", "nan" are texts), the model never sees them, and their prediction columns are
empty: None for label / labels / spans, NaN for probabilities."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.pyfunc.scoring_server import predictions_to_json

from orchestrator.data import DataError
from orchestrator.data.read import missing_cells
from orchestrator.models.heads import TextClassifier, load_encoder, load_tokenizer
from orchestrator.data.missing_rows import predict_rows
from orchestrator.registry.pyfunc import ClassifierPyfunc
from orchestrator.serving.predict import predict_file
from orchestrator.training.saved_model import Classifier
from orchestrator.tasks.token_classification.heads import TokenClassifier

TEXTS = ["great product", "", "   ", None, float("nan"), "NA", "\t\n", "awful"]
MISSING = [False, True, True, True, True, False, True, False]


def test_one_rule_decides_which_cells_are_missing():
    values = [*TEXTS, pd.NA, np.float32("nan"), np.nan, "None", "null", "nan", 0, "0"]
    assert missing_cells(values) == [*MISSING, True, True, True, False, False, False, False, False]
    # Invisible format characters alone (zero-width space, a stray BOM) are no text either.
    assert missing_cells(["\u200b", " \ufeff ", "\u200d\u2060", "a\u200b", "\u200bb"]) == [True, True, True, False,
                                                                                        False]


def test_the_model_never_sees_a_missing_row():
    seen = []

    def model(texts: list[str]) -> pd.DataFrame:
        seen.extend(texts)
        return pd.DataFrame({"label": ["x"] * len(texts), "prob_x": [1.0] * len(texts)})

    out = predict_rows(TEXTS, model)
    assert seen == ["great product", "NA", "awful"]
    assert out["label"].tolist() == [None if m else "x" for m in MISSING]
    assert [math.isnan(p) for p in out["prob_x"]] == MISSING


def _blank(frame: pd.DataFrame, rows: list[bool]) -> None:
    """Missing rows: every prediction column empty; the others: a prediction."""
    for name in frame.columns:
        for value, missing in zip(frame[name], rows):
            if name.startswith("prob_"):
                assert math.isnan(value) == missing, (name, value)
            else:
                assert (value is None) == missing, (name, value)


@pytest.fixture(scope="module")
def pyfunc(registered_model):
    """The registered single_label model as deployment loads it: models:/tiny-clf@champion."""
    uri, _ = registered_model
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.pyfunc.load_model("models:/tiny-clf@champion")


def test_the_registered_model_and_so_serve_give_no_label_to_a_missing_text(pyfunc):
    out = pyfunc.predict(pd.DataFrame({"text": TEXTS}))
    assert list(out.columns) == ["label", "prob_negative", "prob_neutral", "prob_positive"]
    _blank(out, MISSING)
    probs = out[[c for c in out.columns if c.startswith("prob_")]].to_numpy()
    assert np.allclose(probs[~np.array(MISSING)].sum(1), 1.0)
    # What the scoring server sends back: null for the label, not a class.
    sent = io.StringIO()
    predictions_to_json(out, sent)
    records = json.loads(sent.getvalue())["predictions"]
    assert [r["label"] is None for r in records] == MISSING


@pytest.mark.parametrize("body", [{"inputs": {"text": ["great", None]}}, {"instances": [{"text": "great"}, {"text": None}]},
                                  {"dataframe_split": {"columns": ["text"], "data": [["great"], [None]]}}])
def test_serve_gives_no_label_to_a_null_text_in_every_request_format(pyfunc, body):
    """Was: `inputs` / `instances` turned null into the text "None" (a string column's numpy cast)
    before the model saw it, and "None" got a label."""
    from mlflow.pyfunc import scoring_server

    answer = scoring_server.invocations(json.dumps(body), "application/json", pyfunc,
                                        pyfunc.metadata.get_input_schema())
    assert answer.status == 200, answer.response
    labels = [r["label"] for r in json.loads(answer.response)["predictions"]]
    assert labels[0] is not None and labels[1] is None


def test_a_request_of_only_missing_texts_gets_only_empty_rows(pyfunc):
    out = pyfunc.predict(pd.DataFrame({"text": ["", "  "]}))
    assert len(out) == 2
    _blank(out, [True, True])


def test_the_pyfunc_never_takes_another_column_for_the_text():
    """Was: a frame without `text` had its first column (an id, say) predicted as the texts."""
    with pytest.raises(ValueError, match=r"the input has no column 'text' \(columns: \['id', 'body'\]\); send "):
        ClassifierPyfunc().predict(None, pd.DataFrame({"id": ["7", "8"], "body": ["great", "awful"]}))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """Untrained multi_label and token_classification checkpoints over the tiny encoder."""
    root = tmp_path_factory.mktemp("no-guess")
    tok = load_tokenizer(str(tiny_model))
    multi = TextClassifier(load_encoder(str(tiny_model)), 3).save(
        root / "multi", tok, {"task": "multi_label", "label_names": ["joy", "anger", "fear"], "max_length": 32,
                              "post": {"thresholds": [0.0, 0.0, 0.0]}})  # every label on: a guess shows
    token = TokenClassifier(load_encoder(str(tiny_model)), 3).save(
        root / "token", tok, {"task": "token_classification", "label_names": ["O", "B-PER", "I-PER"],
                              "max_length": 32, "saved": {"tokenization": "whitespace", "scheme": "BIO",
                                                          "window_overlap": 8}})
    return {"multi_label": multi, "token_classification": token}


@pytest.mark.parametrize("task, column", [("multi_label", "labels"), ("token_classification", "spans")])
def test_every_task_leaves_a_missing_text_unpredicted(checkpoints, task, column):
    out = Classifier(checkpoints[task]).predict_frame(TEXTS)
    assert len(out) == len(TEXTS)
    _blank(out, MISSING)
    present = [v for v, m in zip(out[column], MISSING) if not m]
    assert all(isinstance(v, list) for v in present)  # `[]` would be "predicted nothing", not "not predicted"
    if task == "multi_label":
        assert all(v == ["joy", "anger", "fear"] for v in present)


def test_predict_writes_empty_predictions_for_missing_cells(tmp_path, registered_model):
    uri, _ = registered_model
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS[:6])))
    out = predict_file("models:/tiny-clf@champion", str(source), str(tmp_path / "out.jsonl"), tracking_uri=uri)
    assert out["id"].tolist() == list(range(6))
    _blank(out[["predicted_label", "prob_negative", "prob_neutral", "prob_positive"]], MISSING[:6])
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["predicted_label"] is None for r in written] == MISSING[:6]


@pytest.mark.parametrize("column", ["predicted_label", "prob_positive"])
def test_predict_refuses_an_input_column_a_prediction_would_overwrite(tmp_path, registered_model, column):
    uri, _ = registered_model
    source = tmp_path / "in.csv"
    source.write_text(f"text,{column}\ngreat,old\n")
    with pytest.raises(DataError, match=rf"\['{column}'\] have the names predictions are written under"):
        predict_file("models:/tiny-clf@champion", str(source), str(tmp_path / "out.csv"), tracking_uri=uri)
    assert not (tmp_path / "out.csv").exists()
