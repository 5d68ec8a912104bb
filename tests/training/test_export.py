"""ONNX export, int8 quantisation and `Classifier(runtime=...)`: every format predicts through the
same code and follows the same rules (labels, probabilities, spans, missing rows).

The checkpoints are the tiny BERT with an untrained head, saved as a trial saves one (no training:
what is checked is that the formats agree, not that the model is good).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from orchestrator.training import export
from orchestrator.training.export import (FORMATS, INT8_FILE, ONNX_FILE, ExportError, OnnxModel, export_onnx,
                                          file_mb, measure_latency, quantize_int8)
from orchestrator.training.saved_model import Classifier

LABELS = ["negative", "neutral", "positive"]
TAGS = ["O", "B-LOC", "I-LOC"]
TEXTS = ["great product", None, "awful terrible day and the service was really bad", "", "okay", float("nan"),
         "fine but very normal"]
MISSING = [1, 3, 5]


def save_checkpoint(folder, tiny_model, task: str, head: str, labels: list[str], saved: dict,
                    token_type_ids: bool = False):
    """The tiny encoder with an untrained `head`, saved with the meta a trial writes."""
    from transformers import AutoTokenizer

    from orchestrator.models.heads import TextClassifier, load_encoder
    from orchestrator.tasks.token_classification.heads import TokenClassifier

    torch.manual_seed(0)
    cls = TokenClassifier if task == "token_classification" else TextClassifier
    model = cls(load_encoder(str(tiny_model), pooler=False), len(labels), head=head, mlp_hidden=16)
    names = ["input_ids", "token_type_ids", "attention_mask"] if token_type_ids else ["input_ids", "attention_mask"]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model), model_input_names=names)
    return model.save(folder, tokenizer, {"task": task, "label_names": labels, "max_length": 32, "post": {},
                                          "saved": saved})


@pytest.fixture(scope="module")
def sequence_checkpoint(tmp_path_factory, tiny_model):
    """A single_label checkpoint (mean pooling: a head of our own) with model.onnx and model.int8.onnx."""
    folder = save_checkpoint(tmp_path_factory.mktemp("export") / "ckpt", tiny_model, "single_label", "mean",
                             LABELS, {})
    export_onnx(folder)
    quantize_int8(folder)
    return folder


@pytest.fixture(scope="module")
def token_checkpoint(tmp_path_factory, tiny_model):
    """A token_classification checkpoint whose tokenizer also makes token_type_ids, exported."""
    folder = save_checkpoint(tmp_path_factory.mktemp("export-token") / "ckpt", tiny_model, "token_classification",
                             "linear", TAGS, {"tokenization": "whitespace", "scheme": "BIO", "window_overlap": 4},
                             token_type_ids=True)
    export_onnx(folder)
    quantize_int8(folder)
    return folder


@pytest.fixture(scope="module")
def classifiers(sequence_checkpoint):
    return {runtime: Classifier(sequence_checkpoint, device="cpu", runtime=runtime) for runtime in FORMATS}


def without_onnx(folder, target):
    return shutil.copytree(folder, target, ignore=shutil.ignore_patterns("*.onnx"))


def test_export_and_quantise_write_their_files_and_nothing_else(sequence_checkpoint):
    import onnx

    fp32, int8 = sequence_checkpoint / ONNX_FILE, sequence_checkpoint / INT8_FILE
    assert fp32.is_file() and int8.is_file()
    assert not [p for p in sequence_checkpoint.iterdir() if p.name.endswith(".tmp")]  # temp files moved or gone
    assert 0 < file_mb(int8) < file_mb(fp32)
    graph = onnx.load(str(fp32)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]  # no token_type_ids: none made
    assert [o.name for o in graph.output] == ["logits"]
    for i in graph.input:  # batch and sequence axes are named, not fixed
        assert all(d.dim_param and not d.dim_value for d in i.type.tensor_type.shape.dim)
    assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == len(LABELS)
    assert not any(n.metadata_props for n in graph.node)  # no source paths or stack traces in the file
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert "MatMulInteger" in ops  # the weights' matrix products run in int8


def test_every_runtime_gives_the_same_predictions_and_blanks_missing_rows(classifiers):
    frames = {runtime: c.predict_frame(TEXTS) for runtime, c in classifiers.items()}
    assert {c.runtime for c in classifiers.values()} == set(FORMATS)
    reference = frames["pytorch"]
    probs = [f"prob_{name}" for name in LABELS]
    for runtime, frame in frames.items():
        assert list(frame.columns) == ["label", *probs], runtime
        assert len(frame) == len(TEXTS)
        assert frame.loc[MISSING, "label"].isna().all() and frame.loc[MISSING, probs].isna().all().all(), runtime
        present = frame.drop(index=MISSING)
        assert np.allclose(present[probs].sum(axis=1), 1.0, atol=1e-5)
    onnx_frame = frames["onnx"]
    assert onnx_frame["label"].tolist() == reference["label"].tolist()
    assert np.allclose(onnx_frame[probs].to_numpy(), reference[probs].to_numpy(), atol=1e-4, equal_nan=True)
    # int8: the same rules, probabilities close (an untrained head's labels may flip on near ties).
    assert np.allclose(frames["int8"][probs].to_numpy(), reference[probs].to_numpy(), atol=0.02, equal_nan=True)


def test_dynamic_batch_and_sequence_axes(classifiers):
    one = ["great"]
    five = ["a", "great product really", "awful terrible day and the service was really bad", "okay fine",
            "the movie was so so and the day was very plain and usual"]
    for texts in (one, five):
        expected = classifiers["pytorch"].predict_proba(texts, batch_size=len(texts))
        for runtime in ("onnx", "int8"):
            got = classifiers[runtime].predict_proba(texts, batch_size=len(texts))
            assert got.shape == (len(texts), len(LABELS))
            assert np.allclose(got, expected, atol=1e-4 if runtime == "onnx" else 0.02), (runtime, len(texts))


def test_onnx_model_stands_in_for_the_torch_module(sequence_checkpoint):
    model = OnnxModel(sequence_checkpoint / ONNX_FILE, threads=1)
    assert model.eval() is model and model.to("cpu") is model
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids > 0).long(), "token_type_ids": torch.zeros_like(ids),
             "labels": torch.tensor([0, 1])}  # keys the graph does not take are ignored
    logits = model(**batch)
    assert isinstance(logits, torch.Tensor) and logits.dtype == torch.float32 and logits.shape == (2, 3)
    with pytest.raises(ValueError, match="attention_mask"):
        model(input_ids=ids)


def test_missing_files_and_unknown_runtimes_are_clear_errors(sequence_checkpoint, tmp_path):
    bare = without_onnx(sequence_checkpoint, tmp_path / "bare")
    with pytest.raises(FileNotFoundError, match=r"model\.int8\.onnx.*quantize_int8"):
        Classifier(bare, runtime="int8")
    with pytest.raises(FileNotFoundError, match=r"model\.onnx.*export_onnx"):
        Classifier(bare, runtime="onnx")
    with pytest.raises(FileNotFoundError, match=r"model\.onnx.*export_onnx"):
        quantize_int8(bare)
    with pytest.raises(ValueError, match="pytorch, onnx, int8"):
        Classifier(bare, runtime="tensorrt")
    with pytest.raises(ValueError, match="CPU"):
        Classifier(sequence_checkpoint, device="cuda", runtime="onnx")


def test_an_export_that_disagrees_with_torch_is_refused_and_not_written(sequence_checkpoint, tmp_path, monkeypatch):
    bare = without_onnx(sequence_checkpoint, tmp_path / "bare")
    monkeypatch.setattr(export, "ATOL", -1.0)  # no difference is small enough
    with pytest.raises(ExportError, match="differ from torch's"):
        export_onnx(bare)
    assert sorted(p.name for p in bare.iterdir()) == ["classifier.json", "encoder", "head.safetensors"]


def test_a_token_classification_checkpoint_exports_too(token_checkpoint):
    import onnx

    graph = onnx.load(str(token_checkpoint / ONNX_FILE)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert len(graph.output[0].type.tensor_type.shape.dim) == 3  # (batch, tokens, labels)
    texts = ["I live in Paris", None, "great product and the service was really bad today", "okay"]
    frames = {rt: Classifier(token_checkpoint, device="cpu", runtime=rt).predict_frame(texts) for rt in FORMATS}
    for runtime, frame in frames.items():
        assert list(frame.columns) == ["spans"] and frame["spans"][1] is None, runtime
    assert frames["onnx"]["spans"].tolist() == frames["pytorch"]["spans"].tolist()
    present = [t for t in texts if t]
    expected = Classifier(token_checkpoint, device="cpu").predict_proba(present)
    for runtime, atol in (("onnx", 1e-4), ("int8", 0.05)):
        got = Classifier(token_checkpoint, runtime=runtime).predict_proba(present)
        assert [g.shape for g in got] == [e.shape for e in expected]  # one row per word
        assert all(np.allclose(g, e, atol=atol) for g, e in zip(got, expected)), runtime


def test_measure_latency_reports_percentiles_and_threads(classifiers):
    result = measure_latency(classifiers["onnx"], ["great product", "awful"], batch_size=3, repeats=5, warmup=1)
    assert 0 < result["p50_ms"] <= result["p95_ms"]
    assert result["threads"] == torch.get_num_threads() and result["batch_size"] == 3
    assert result["runtime"] == "onnx"


def test_the_onnx_file_records_task_and_labels(sequence_checkpoint):
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(sequence_checkpoint / ONNX_FILE)).metadata_props}
    assert meta["orchestrator.task"] == "single_label" and json.loads(meta["orchestrator.label_names"]) == LABELS
