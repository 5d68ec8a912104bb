"""A trial's extra objectives (`search.objectives`), measured on its best-epoch model.

- latency_ms: the median wall time of `Classifier.predict_proba` on one validation text (batch 1,
  tokenising and post-processing included) on the model's ONNX export, with one ONNX Runtime
  thread: the same conditions for every trial, whatever else runs beside it;
- params: the model's parameter count (encoder and head);
- model_mb: the size of its ONNX export (fp32), in MiB.

The model is saved to a temporary folder, exported there and measured; nothing stays behind.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from orchestrator.training.export import ONNX_FILE, OnnxModel, export_onnx, file_mb, measure_latency

BATCH, THREADS, REPEATS = 1, 1, 30


def measure(model, tokenizer, meta: dict, texts: Sequence[str], wanted: Sequence[str]) -> dict[str, float]:
    """{objective: value} for each of `wanted` (latency_ms, params, model_mb)."""
    from orchestrator.training.saved_model import Classifier

    out: dict[str, float] = {}
    if "params" in wanted:
        out["params"] = float(sum(p.numel() for p in model.parameters()))
    if not {"latency_ms", "model_mb"} & set(wanted):
        return out
    with tempfile.TemporaryDirectory(prefix="orchestrator-objectives-") as tmp:
        folder = Path(tmp) / "model"
        model.save(folder, tokenizer, meta)
        export_onnx(folder)
        if "model_mb" in wanted:
            out["model_mb"] = round(file_mb(folder / ONNX_FILE), 4)
        if "latency_ms" in wanted:
            classifier = Classifier(folder, device="cpu", runtime="onnx")
            classifier.model = OnnxModel(folder / ONNX_FILE, threads=THREADS)  # one thread: comparable trials
            timing = measure_latency(classifier, list(texts)[:BATCH] or ["a text"], BATCH, repeats=REPEATS)
            out["latency_ms"] = round(timing["p50_ms"], 4)
    return out
