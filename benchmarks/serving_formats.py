"""The registered champion in each serving format, measured side by side on a quiet machine.

    python benchmarks/serving_formats.py /tmp/bench-demo-XXXX experiments/demo.yaml [key=value ...]

Reads the study that `benchmarks/tasks.py` ran in that folder (its MLflow store), downloads the
champion's registered model, and measures PyTorch fp32 (what a user serves without this), its ONNX
export and its int8 quantisation with the same code the registry uses (`search/serving_formats.py`):
latency p50 / p95 of `predict_proba` at batch 1 and 32 (five rounds, formats interleaved, the best
round's p50 kept: the machine's noise is not the format's), size, and the test metric against
PyTorch's. Writes `benchmarks/results/serving/<study>.json` with machine, versions and commit.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

ROUNDS = 5


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    folder, config, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    import mlflow
    from mlflow import MlflowClient

    from orchestrator.data import load_splits
    from orchestrator.search import serving_formats
    from orchestrator.tasks import get_task, load_experiment
    from tasks import _machine

    cfg = load_experiment(ROOT / config, overrides)
    uri = f"sqlite:///{folder}/mlflow.db"
    version = MlflowClient(uri, registry_uri=uri).get_model_version_by_alias(cfg.model_name, "champion")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    local = mlflow.artifacts.download_artifacts(f"models:/{cfg.model_name}/{version.version}",
                                                dst_path=tempfile.mkdtemp(prefix="serving-"))
    # The pyfunc keeps the checkpoint under its folder's own name (artifacts/trial-N/).
    checkpoint = str(next((Path(local) / "artifacts").rglob("classifier.json")).parent)
    task = get_task(cfg.task, cfg)
    splits = load_splits(cfg.data, task)
    metric = f"test_{task.main_metric}"
    rounds = [serving_formats.measure(checkpoint, splits, task, metric)[0] for _ in range(ROUNDS)]
    best = []
    for i in range(len(rounds[0])):
        runs = [r[i] for r in rounds]
        keep = min(runs, key=lambda r: r["latency_b1_p50_ms"])
        best.append({**keep, "rounds": ROUNDS, "latency_b1_p50_ms_all": [r["latency_b1_p50_ms"] for r in runs],
                     "latency_b32_p50_ms_all": [r["latency_b32_p50_ms"] for r in runs]})
    result = {"study": cfg.study_name, "model": f"{cfg.model_name}/{version.version}", "config": config,
              "overrides": overrides, "metric": metric, "formats": best, **_machine()}
    out = ROOT / "benchmarks" / "results" / "serving" / f"{cfg.study_name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
