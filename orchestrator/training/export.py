"""A saved model as ONNX for serving, int8 dynamic quantisation, and what runs them: `OnnxModel`.

Three formats of one checkpoint folder (`FORMATS`), all predicted through `Classifier` with the
same tokenizer, collator, gather, post-processing and missing-row rule (`Classifier(directory,
runtime=...)`):

  pytorch   the folder as training saved it (`encoder/`, `head.safetensors`, `classifier.json`)
  onnx      `model.onnx` next to it: the model's forward exported by `export_onnx`
  int8      `model.int8.onnx`: that graph with int8 weights (`quantize_int8`), ONNX Runtime's
            dynamic quantisation (activations quantised on the fly, per batch)

The graph takes `input_ids`, `attention_mask` (and `token_type_ids` where the tokenizer makes
them), with dynamic batch and sequence axes, and returns `logits`: (batch, labels) for a sequence
task, (batch, tokens, labels) for a token task. `export_onnx` checks ONNX Runtime against torch on
batches of other sizes and lengths than the one it traced, and refuses (`ExportError`) when they
differ; files are written to a temporary name and moved into place, so a reader never sees half
of one.

Not Hugging Face `optimum` (optimum-onnx): it exports the models transformers defines, and ours
are not those: `TextClassifier` puts its own heads (cls / pooler / mean / cls_mean / mlp pooling)
on a bare encoder, and `TokenClassifier` its token heads; optimum knows neither. `torch.onnx.export`
traces our own `forward`, heads included.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from orchestrator.tasks import get_task
from orchestrator.training.loop import model_inputs

FORMATS = ("pytorch", "onnx", "int8")
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
FILES = {"onnx": ONNX_FILE, "int8": INT8_FILE}  # runtime -> its file in the checkpoint folder
ATOL = 1e-4  # the largest logit difference between ONNX Runtime and torch that export accepts

# Texts the export traces and checks with: any texts do (the graph does not depend on them), as
# long as the check's batches differ from the traced one in size and padded length.
TRACE_TEXTS = ("a short text to trace", "and a second one, somewhat longer than the first text is")
CHECK_TEXTS = ("one", "a third batch of another size and length than the traced batch had, with more words",
               "two words")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")  # what the models' forward takes


class ExportError(RuntimeError):
    """The model could not be exported, or its ONNX graph does not compute what torch computes."""


# ---------------------------------------------------------------- export and quantisation

def export_onnx(directory: str | Path) -> Path:
    """`model.onnx` in the checkpoint folder `directory`: the saved model's forward (as the task's
    `load_model` loads it), checked against torch within `ATOL`. Returns its path."""
    directory = Path(directory)
    task, model, tokenizer, info = _load(directory)
    trace = _batch(task, tokenizer, info, TRACE_TEXTS)
    names = [n for n in INPUT_NAMES if n in trace]  # token_type_ids only where the tokenizer makes them
    kwargs = {n: trace[n] for n in names}
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    try:
        with torch.no_grad(), warnings.catch_warnings(), _quiet_exporter():
            # One Dim for every input's axis: the exporter says so for each input, harmlessly.
            warnings.filterwarnings("ignore", message=".*shares the same shape constraints")
            # torch.export's own deprecations (pytree's LeafSpec), not ours to act on.
            warnings.filterwarnings("ignore", category=FutureWarning)
            # The dynamo exporter (torch.export + onnxscript) handles every head here on torch 2.13,
            # so there is no fallback to the legacy TorchScript exporter.
            program = torch.onnx.export(model, (), kwargs=kwargs, dynamo=True, input_names=names,
                                        output_names=["logits"], verbose=False,
                                        dynamic_shapes={n: {0: batch, 1: sequence} for n in names})
        proto = _clean(program.model_proto)
    except Exception as e:  # the exporter's own errors are many and long
        raise ExportError(f"{directory}: torch.onnx.export of the {type(model).__name__} failed: "
                          f"{type(e).__name__}: {str(e)[:2000]}") from e
    proto.metadata_props.add(key="orchestrator.task", value=task.name)
    proto.metadata_props.add(key="orchestrator.label_names", value=json.dumps(info["label_names"]))

    def check(path: Path) -> None:
        session = _session(path)
        for texts in (TRACE_TEXTS, CHECK_TEXTS, CHECK_TEXTS[:1]):  # other batch sizes and lengths too
            feed = _batch(task, tokenizer, info, texts)
            with torch.no_grad():
                expected = model(**{n: feed[n] for n in names}).float().numpy()
            got = session.run(["logits"], {n: feed[n].numpy() for n in names})[0]
            if got.shape != expected.shape:
                raise ExportError(f"{directory}: ONNX logits have shape {got.shape}, torch's {expected.shape} "
                                  f"(batch of {len(texts)} texts)")
            gap = float(np.max(np.abs(got - expected))) if got.size else 0.0
            if not gap <= ATOL:
                raise ExportError(f"{directory}: ONNX Runtime's logits differ from torch's by {gap:.3g} "
                                  f"(allowed {ATOL}) on a batch of {len(texts)} texts; the export is "
                                  f"not used")

    return _write(directory / ONNX_FILE, lambda path: _save(proto, path), check)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's registry notes that torchvision's operators are skipped (no torchvision
    here, and our models use none): a warning per operator on every export, in the user's terminal."""
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        yield
    finally:
        registry.setLevel(level)


def quantize_int8(directory: str | Path) -> Path:
    """`model.int8.onnx` from `model.onnx` in `directory`: ONNX Runtime's dynamic quantisation,
    int8 weights (MatMul/Gemm and embedding Gather) and activations quantised per batch. Returns its path."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    directory = Path(directory)
    source = directory / ONNX_FILE
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found: make it first with "
                                f"orchestrator.training.export.export_onnx({str(directory)!r})")
    # No quant_pre_process: its symbolic shape inference fails on this graph ("Incomplete symbolic
    # shape inference"), and with ONNX shape inference and optimisation only it quantises the
    # same 13 of 17 MatMul/Gemm of the tiny BERT (the other 4 multiply two activations: attention
    # scores) and ran no faster. `_clean` drops the initializers' shapes, which would contradict the
    # quantiser's Gemm -> MatMul rewrite (it transposes the weight).
    proto = _clean(onnx.load(str(source)))

    def quantize(path: Path) -> None:
        root = logging.getLogger()
        root.addFilter(_no_pre_process_advice)  # measured above: no gain here, and it fails on this graph
        try:
            quantize_dynamic(proto, path, weight_type=QuantType.QInt8)
        finally:
            root.removeFilter(_no_pre_process_advice)

    def check(path: Path) -> None:
        session = _session(path)
        names = [i.name for i in session.get_inputs()]
        feed = {"input_ids": np.full((2, 4), 1, dtype=np.int64), "attention_mask": np.ones((2, 4), dtype=np.int64),
                "token_type_ids": np.zeros((2, 4), dtype=np.int64)}
        got = session.run(["logits"], {n: feed[n] for n in names})[0]
        if not np.isfinite(got).all():
            raise ExportError(f"{path}: the quantised model gives non-finite logits")

    return _write(directory / INT8_FILE, quantize, check)


# ---------------------------------------------------------------- running a graph

class OnnxModel:
    """An ONNX graph where `collect_logits` expects the torch model: `model(**batch)` with torch
    tensors returns float logits as a torch tensor. Runs on the CPU (CPUExecutionProvider);
    `threads` sets ONNX Runtime's intra-op threads (None: its default, one per physical core)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        self.session = _session(self.path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def eval(self) -> OnnxModel:
        return self

    def to(self, device) -> OnnxModel:
        return self

    def __call__(self, **batch) -> torch.Tensor:
        missing = [n for n in self.input_names if n not in batch]
        if missing:
            raise ValueError(f"{self.path.name} takes {self.input_names}; the batch has no {missing}")
        # Keys the graph does not take (labels, or token_type_ids the export left out) are ignored.
        feed = {n: batch[n].detach().cpu().numpy().astype(np.int64, copy=False) for n in self.input_names}
        return torch.from_numpy(self.session.run(["logits"], feed)[0]).float()


def saved_tokenizer(directory: str | Path):
    """The checkpoint's tokenizer, without loading its torch weights (`TextClassifier.save`'s
    format, which every task's model uses: the tokenizer is saved in `encoder/`)."""
    from orchestrator.models.heads import load_tokenizer

    return load_tokenizer(str(Path(directory) / "encoder"))


# ---------------------------------------------------------------- measuring

def measure_latency(classifier, texts: Sequence[str], batch_size: int, repeats: int = 20,
                    warmup: int = 3) -> dict:
    """Wall time of `classifier.predict_proba` on one batch of `batch_size` texts (taken from
    `texts` in turn, repeated when there are fewer): median and 95th percentile in ms, over
    `repeats` runs after `warmup` untimed ones. Tokenising and post-processing are included."""
    if not texts:
        raise ValueError("measure_latency needs at least one text")
    batch = [texts[i % len(texts)] for i in range(batch_size)]
    for _ in range(warmup):
        classifier.predict_proba(batch, batch_size=batch_size)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        classifier.predict_proba(batch, batch_size=batch_size)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, int(np.ceil(0.95 * len(times))) - 1)]
    return {"p50_ms": statistics.median(times), "p95_ms": p95, "threads": torch.get_num_threads(),
            "batch_size": batch_size, "runtime": getattr(classifier, "runtime", "pytorch")}


def file_mb(path: str | Path) -> float:
    """The size of a file in MiB (2**20 bytes)."""
    return os.path.getsize(path) / 2**20


# ---------------------------------------------------------------- helpers

def _load(directory: Path):
    info = json.loads((directory / "classifier.json").read_text())
    task = get_task(info.get("task", "single_label"))
    model, tokenizer, info = task.load_model(directory)
    task.restore(info.get("saved", {}))
    return task, model.cpu().eval(), tokenizer, info


def _batch(task, tokenizer, info: dict, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """One padded batch of `texts`, encoded and collated as `Classifier` does. A model of several
    inputs (a sentence pair, a question and its context) gets each text paired with the batch's
    texts in reverse, so its inputs differ in length too."""
    saved = info.get("saved", {})
    columns = task.input_columns(saved)
    inputs = list(texts)
    if len(columns) > 1:
        inputs = [(t, *[r] * (len(columns) - 1)) for t, r in zip(texts, reversed(texts))]
    examples = task.examples_from_texts(inputs, saved)
    encoded = task.encode(examples, tokenizer, info["max_length"], with_labels=False)
    loader = DataLoader(model_inputs(encoded), batch_size=len(encoded), collate_fn=task.collator(tokenizer))
    return dict(next(iter(loader)))


def _clean(proto):
    """The graph without the exporter's debugging: per-node metadata (source paths and stack traces,
    most of a small model's file) and shapes recorded for initializers (value_info)."""
    graphs = [proto.graph] + [f for f in proto.functions]
    for graph in graphs:
        for node in graph.node:
            del node.metadata_props[:]
    initializers = {i.name for i in proto.graph.initializer}
    keep = [v for v in proto.graph.value_info if v.name not in initializers]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(keep)
    return proto


def _no_pre_process_advice(record: logging.LogRecord) -> bool:
    return "pre-processing before quantization" not in record.getMessage()


def _save(proto, path: Path) -> None:
    import onnx

    try:
        onnx.save(proto, str(path))
    except ValueError as e:  # protobuf refuses a message over 2 GB: weights would need external data files
        raise ExportError(f"{path.parent}: the ONNX graph could not be written ({e}); a model over 2 GB "
                          f"is not supported") from e


def _session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _write(target: Path, make, check) -> Path:
    """`make(temp)` then `check(temp)` on a temporary file next to `target`, then move it into place
    (os.replace: a reader sees the old file or the new one, never part of one)."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    temp = Path(name)
    try:
        make(temp)
        check(temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target
