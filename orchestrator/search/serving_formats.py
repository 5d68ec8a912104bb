"""The champion in every serving format, measured: ONNX and int8 beside PyTorch, with what each
costs and what each scores.

Before the champion is registered (`registry.export`, on by default), its checkpoint gets
`model.onnx` and `model.int8.onnx` (`training/export.py`), which the registered pyfunc then
carries in its `classifier` artifact. Each format is measured on the machine that registers it:
latency p50 / p95 of a batch of 1 and of 32 test texts (`measure_latency`, this process's torch
threads; ONNX Runtime's default threads), its size in MiB, and the test metric it reaches, with
its difference from PyTorch's (fp32): quantisation's accuracy cost, measured, never assumed.
The table goes on the trial's run (`serving_formats.json`, metrics `<format>_latency_b1_p50_ms`...)
and into the version's tags (`<format>_latency_ms`, `<format>_mb`, `<format>_<test metric>`), and
`serve --format` / `predict --format` pick one.

An export that fails (an encoder the exporter cannot trace, a check that finds ONNX Runtime and
torch apart) costs only the extra formats: the PyTorch model is registered as before, and the
version's tag `export_error` says what went wrong.
"""

from __future__ import annotations

import logging
from pathlib import Path

from orchestrator.data import Splits
from orchestrator.tasks import Task
from orchestrator.training.export import FILES, FORMATS, ExportError, export_onnx, file_mb, measure_latency, \
    quantize_int8
from orchestrator.training.saved_model import Classifier

log = logging.getLogger(__name__)

BATCHES = (1, 32)
REPEATS = 20
FORMATS_TAG, ERROR_TAG = "export_formats", "export_error"


def checkpoint_mb(directory) -> float:
    """The PyTorch model's size: its weight files."""
    return sum(file_mb(p) for p in Path(directory).rglob("*.safetensors"))


def measure(checkpoint: str, splits: Splits, task: Task, metric: str) -> tuple[list[dict], str | None]:
    """(one row per format: latency, size, test score and its difference from PyTorch's; the
    export's error, when the ONNX formats could not be made)."""
    try:
        export_onnx(checkpoint)
        quantize_int8(checkpoint)
        formats = FORMATS
        error = None
    except (ExportError, RuntimeError, ValueError, OSError) as e:  # any failure to export: PyTorch alone
        log.warning("ONNX export of %s failed; registering the PyTorch model alone: %s", checkpoint, e)
        formats, error = ("pytorch",), f"{type(e).__name__}: {str(e)[:400]}"
    test = splits.data["test"]
    texts = task.inputs(test.select(range(min(max(BATCHES), len(test)))), task.saved_settings(splits))
    rows, reference = [], None
    for runtime in formats:
        classifier = Classifier(checkpoint, device="cpu", runtime=runtime)
        evaluation, _ = classifier.evaluate(test, "test")
        score = evaluation.metrics[metric]
        reference = score if reference is None else reference
        row = {"format": runtime, "mb": round(checkpoint_mb(checkpoint) if runtime == "pytorch"
                                             else file_mb(f"{checkpoint}/{FILES[runtime]}"), 3),
               metric: score, f"{metric}_vs_pytorch": score - reference}
        for batch in BATCHES:
            batch_texts = (texts * batch)[:batch] if texts else _stand_in(classifier) * batch
            timing = measure_latency(classifier, batch_texts, batch, repeats=REPEATS)
            row[f"latency_b{batch}_p50_ms"] = round(timing["p50_ms"], 3)
            row[f"latency_b{batch}_p95_ms"] = round(timing["p95_ms"], 3)
            row["threads"] = timing["threads"]
        rows.append(row)
    return rows, error


def tags(rows: list[dict], error: str | None, metric: str) -> dict[str, str]:
    """The version's tags: which formats it carries, and each one's latency, size and score."""
    out = {FORMATS_TAG: " ".join(r["format"] for r in rows)}
    for r in rows:
        f = r["format"]
        out[f"{f}_latency_ms"] = " ".join(f"b{b} p50 {r[f'latency_b{b}_p50_ms']:.2f} p95 {r[f'latency_b{b}_p95_ms']:.2f}"
                                          for b in BATCHES)
        out[f"{f}_mb"] = f"{r['mb']:.3f}"
        out[f"{f}_{metric}"] = f"{r[metric]:.6f}"
    if error:
        out[ERROR_TAG] = error[:500]
    return out


def metrics(rows: list[dict], metric: str) -> dict[str, float]:
    """The run's metrics: per format, latencies, size and test score."""
    out = {}
    for r in rows:
        f = r["format"]
        for key in (*(f"latency_b{b}_{q}_ms" for b in BATCHES for q in ("p50", "p95")), "mb", metric):
            out[f"{f}_{key}"] = float(r[key])
    return out


def said(rows: list[dict], error: str | None, metric: str) -> str:
    """One line for the summary."""
    if len(rows) == 1:
        return f"serving formats: PyTorch only (ONNX export failed: {error})"
    parts = []
    for r in rows:
        delta = "" if r["format"] == "pytorch" else f" ({r[f'{metric}_vs_pytorch']:+.4f})"
        parts.append(f"{r['format']} {r['latency_b1_p50_ms']:.1f} ms (batch 1, p50), {r['mb']:.1f} MiB, {metric} "
                     f"{r[metric]:.4f}{delta}")
    return f"serving formats ({rows[0]['threads']} thread(s)): " + "; ".join(parts)


def _stand_in(classifier: Classifier) -> list:
    """One input where the test split has none: a text, or a text per input column."""
    columns = classifier.input_columns
    return ["a text"] if len(columns) == 1 else [tuple("a text" for _ in columns)]
