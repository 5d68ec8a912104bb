"""Command line: `python -m orchestrator {search,probe,predict,ui}`; one function per subcommand."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys

DEFAULT_CONFIG = "experiments/demo.yaml"
DEFAULT_TRACKING = "sqlite:///mlruns/mlflow.db"
EXIT_BAD_INPUT = 2


def search(config: str, overrides: list[str], gpus: str | None, workers: int) -> int:
    from rich.console import Console

    from orchestrator.config import load_config
    from orchestrator.progress import print_summary
    from orchestrator.search import run_search

    cfg = load_config(config, overrides)
    summary = run_search(cfg, gpus=gpus, workers=workers)
    print_summary(summary, Console(), config)
    if summary.interrupted:
        return 130  # the shell's code for "stopped by Ctrl-C"
    if summary.tracking_error:
        return 1
    return 0 if summary.best_trial is not None else 1


def probe(config: str, overrides: list[str]) -> int:
    from orchestrator.config import load_config
    from orchestrator.memory import probe_experiment

    for line in probe_experiment(load_config(config, overrides)):
        print(line)
    return 0


def predict(model: str, input: str, output: str, text_column: str, tracking_uri: str) -> int:
    from orchestrator.serve import predict_file

    if not os.path.isfile(input):
        raise FileNotFoundError(f"--input: file not found: {input}")
    out = predict_file(model, input, output, text_column=text_column, tracking_uri=tracking_uri)
    print(f"wrote {len(out)} predictions to {output}")
    return 0


def ui(config: str | None, tracking_uri: str | None, port: int) -> int:
    if tracking_uri is None:
        from orchestrator.config import load_config

        tracking_uri = load_config(config).tracking.uri if config else DEFAULT_TRACKING
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri, "--port", str(port)]
    print("running:", " ".join(cmd[1:]))
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator",
                                     description="Search, track and register fine-tuned text classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("search", help="run (or continue) the Optuna study of an experiment")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment YAML (default {DEFAULT_CONFIG})")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. search.n_trials=3")
    p.add_argument("--gpus", default=None, help="all (default: every visible GPU), none, or a list like 0,1,3")
    p.add_argument("--workers", type=int, default=1, help="trials at once on CPU (cores are split between them)")
    p = sub.add_parser("probe", help="largest per-device batch under search.memory_target of GPU memory")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("overrides", nargs="*")
    p = sub.add_parser("predict", help="predict a CSV/TSV file with a logged or registered model")
    p.add_argument("--model", required=True, help="e.g. models:/drug-review-classifier@champion")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--text-column", default="text")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING))
    p = sub.add_parser("ui", help="open the MLflow UI on an experiment's store")
    p.add_argument("--config", default=None)
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--port", type=int, default=5000)
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from orchestrator.config import ConfigError
    from orchestrator.data import DataError
    from orchestrator.scheduler import SlotError
    from orchestrator.study import StorageError
    from orchestrator.tracking import TrackingError

    try:
        return {"search": search, "probe": probe, "predict": predict, "ui": ui}[command](**args)
    except (ConfigError, DataError, SlotError, StorageError, TrackingError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
