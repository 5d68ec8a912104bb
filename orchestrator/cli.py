"""The command line: one plain function per subcommand, each taking its own arguments.

`python -m orchestrator {search,pretrain,probe,predict,status,report,serve,promote,rollback,ui}`.

Exit codes: 0 done; 1 the work ran but ended badly (no trial completed, the MLflow store failed
or refused a write); 2 bad input, found before anything was created; 130 interrupted (Ctrl-C or
SIGTERM), with every record closed. A user's mistake is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys

DEFAULT_CONFIG = "experiments/demo.yaml"
DEFAULT_TRACKING = "sqlite:///mlruns/mlflow.db"
# `training.export.FORMATS`, spelled out: importing it here would load torch before any command
# parses its arguments (tests/test_cli.py checks the two agree).
FORMATS = ("pytorch", "onnx", "int8")
FORMAT_HELP = ("what computes the predictions: pytorch (default), or the version's ONNX export (onnx) or its "
               "int8 quantisation (int8), both on ONNX Runtime; its registry tags give each one's latency and "
               "test score")
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # the shell's code for "stopped by Ctrl-C"


def exit_code(summary) -> int:
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if summary.tracking_error or summary.registry_error:
        return 1
    return 0 if summary.best_trial is not None else 1


def search(config: str, overrides: list[str], gpus: str | None, workers: int | str | None,
           ray_address: str | None) -> int:
    import datasets

    from orchestrator.tasks import load_experiment
    from orchestrator.search.progress import print_summary, terminal
    from orchestrator.search.driver import run_search

    datasets.disable_progress_bars()  # saving each split: a bar between the search's own lines
    cfg = load_experiment(config, overrides)
    summary = run_search(cfg, gpus=gpus, workers=workers, ray_address=ray_address)
    print_summary(summary, terminal(), config)
    return exit_code(summary)


def pretrain(config: str, overrides: list[str]) -> int:
    from orchestrator.tasks import load_experiment
    from orchestrator.training.pretrain.loop import PretrainError
    from orchestrator.search.pretrain_stage import run_pretrain

    cfg = load_experiment(config, overrides)
    try:
        outcome = run_pretrain(cfg)
    except PretrainError as e:
        print(f"error: pre-training stopped: {e}", file=sys.stderr)
        return 1
    print(f"encoder: {outcome.uri} (version {outcome.version}); fine-tune it with "
          f"model.name_or_path={outcome.uri}")
    return 0


def probe(config: str, overrides: list[str]) -> int:
    from orchestrator.tasks import load_experiment
    from orchestrator.search.probe_command import probe_experiment

    for line in probe_experiment(load_experiment(config, overrides)):
        print(line)
    return 0


def predict(model: str, input: str, output: str, text_column: str, tracking_uri: str, format: str,
            column: list[str] | None = None) -> int:
    from orchestrator.data import DataError
    from orchestrator.serving.predict import predict_file

    columns = {}
    for item in column or []:
        name, eq, found = item.partition("=")
        if not eq or not name or not found:
            raise DataError(f"--column {item}: expected INPUT=COLUMN, e.g. --column text_pair=hypothesis")
        columns[name] = found
    out = predict_file(model, input, output, text_column=text_column, tracking_uri=tracking_uri, fmt=format,
                       columns=columns)
    print(f"wrote {len(out)} predictions to {output}")
    return 0


def status(config: str, overrides: list[str]) -> int:
    from orchestrator.tasks import load_experiment
    from orchestrator.search.progress import terminal
    from orchestrator.reporting.status import show_status

    show_status(load_experiment(config, overrides), terminal())
    return 0


def report(config: str, overrides: list[str], output: str | None) -> int:
    from orchestrator.tasks import load_experiment
    from orchestrator.reporting.report import write_report

    path = write_report(load_experiment(config, overrides), output)
    print(f"wrote {path}")
    return 0


def serve(model: str | None, config: str | None, tracking_uri: str | None, host: str, port: int, format: str) -> int:
    from orchestrator.serving.scoring_server import serve_model

    uri = _tracking_uri(config, tracking_uri)
    return serve_model(model or f"models:/{_model_name(config)}@champion", uri, host, port, format)


def promote(model: str, version: str, reason: str | None, config: str | None, tracking_uri: str | None) -> int:
    from orchestrator.registry.promotion import promote as move

    print(move(_tracking_uri(config, tracking_uri), model, version, reason))
    return 0


def rollback(model: str, reason: str | None, config: str | None, tracking_uri: str | None) -> int:
    from orchestrator.registry.promotion import rollback as move_back

    print(move_back(_tracking_uri(config, tracking_uri), model, reason))
    return 0


def _tracking_uri(config: str | None, given: str | None) -> str:
    """--tracking-uri, else the experiment's tracking.uri, else $MLFLOW_TRACKING_URI, else the embedded store."""
    if given:
        return given
    if config:
        from orchestrator.tasks import load_experiment

        return load_experiment(config).tracking.uri
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING)


def _model_name(config: str | None) -> str:
    from orchestrator.tasks import load_experiment

    return load_experiment(config or DEFAULT_CONFIG).model_name


def ui(config: str | None, tracking_uri: str | None, port: int, optuna: bool) -> int:
    if optuna:
        from orchestrator.tasks import load_experiment
        from orchestrator.reporting.status import open_dashboard

        return open_dashboard(load_experiment(config or DEFAULT_CONFIG), port)
    from orchestrator.tasks import load_experiment
    from orchestrator.config.secrets import redact
    from orchestrator.tracking.client import existing_store, mark_training_experiment

    cfg = load_experiment(config) if config else None
    key = "--tracking-uri" if tracking_uri is not None or cfg is None else "tracking.uri"
    if tracking_uri is None:
        tracking_uri = cfg.tracking.uri if cfg else DEFAULT_TRACKING
    # `mlflow ui` would create a missing store (or its tables in a foreign database) and show it
    # empty: refused here, as status and report refuse it (exit 2).
    existing_store(tracking_uri, key)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--port", str(port)]
    print(f"running: mlflow ui --backend-store-uri {redact(tracking_uri)} --port {port}")
    experiment_id = mark_training_experiment(tracking_uri, cfg.experiment_name) if cfg else None
    if experiment_id is not None:
        print(f"the study's runs: http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs", flush=True)
    elif cfg:
        print(f"no experiment {cfg.experiment_name!r} in that store yet: run a search first", flush=True)
    # Through the environment, not the command line, where `ps` would show a password.
    # MLflow 3's job runner (for GenAI jobs) starts 8 more processes and doubles the start-up; a
    # tracking UI does not use it. Set MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true to keep it.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_BACKEND_STORE_URI": tracking_uri}
    return subprocess.call(cmd, env=env)


def _workers(text: str) -> int | str:
    """--workers: a number of trials (checked with the slots: >= 1) or auto."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of trials or auto, found {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m orchestrator",
                                     description="Pre-train, search, track and register fine-tuned text encoders.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("search", help="run (or continue) the Optuna study of an experiment")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment YAML (default {DEFAULT_CONFIG})")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. search.n_trials=3")
    p.add_argument("--gpus", default=None, help="all (default: every visible GPU), none, or a list like 0,1,3")
    p.add_argument("--workers", type=_workers, default=None,
                   help="trials at once on CPU (cores are split between them); auto (the default): as many as "
                        "the cores hold at the threads per trial measured fastest (benchmarks/workers.py: one "
                        "thread each), at most 8 and as many as the memory holds; 1: trials one after another, "
                        "which replays a study exactly (parallel trials' samples depend on which finished first)")
    p.add_argument("--ray-address", default=None,
                   help="with search.executor=ray: the cluster to join (auto, HOST:6379, ray://HOST:10001); "
                        "default $RAY_ADDRESS, else a Ray started on this machine")
    p = sub.add_parser("pretrain", help="masked-LM pre-training of the experiment's encoder (its pretrain: "
                                        "section); registers it as models:/<model_name>-encoder@<alias>")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment YAML (default {DEFAULT_CONFIG})")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. pretrain.max_steps=200")
    p = sub.add_parser("probe", help="largest per-device batch under search.memory_target of GPU memory")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("overrides", nargs="*")
    p = sub.add_parser("predict", help="predict a csv/tsv/jsonl/parquet file with a registered or logged model")
    p.add_argument("--model", required=True, help="e.g. models:/drug-review-classifier@champion")
    p.add_argument("--input", required=True, help="csv, tsv, json/jsonl or parquet file")
    p.add_argument("--output", required=True, help="csv, tsv, jsonl or parquet file to write (its folder must exist)")
    p.add_argument("--text-column", default="text", help="the input file's column for the model's `text` input")
    p.add_argument("--column", action="append", metavar="INPUT=COLUMN",
                   help="the input file's column for another model input, e.g. text_pair=hypothesis (sentence "
                        "pairs) or context=passage (question answering); default: the column of that name")
    p.add_argument("--format", default="pytorch", choices=FORMATS, help=FORMAT_HELP)
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING))
    p = sub.add_parser("status", help="a study's trials, best so far and champion, read from its stores "
                                      "(also while a search runs elsewhere)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment YAML (default {DEFAULT_CONFIG})")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. search.storage=postgresql://...")
    p = sub.add_parser("report", help="one self-contained HTML report of a study (also logged to its MLflow run)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment YAML (default {DEFAULT_CONFIG})")
    p.add_argument("--output", default=None, help="the HTML file to write (default: report.html in the "
                                                  "study's folder under search.work_dir)")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p = sub.add_parser("serve", help="an HTTP scoring server (MLflow's /invocations and /ping) for a "
                                     "registered model")
    p.add_argument("--model", default=None, help="default: models:/<registry.model_name>@champion of --config "
                                                 f"(default {DEFAULT_CONFIG})")
    p.add_argument("--config", default=None)
    p.add_argument("--tracking-uri", default=None, help="default: --config's tracking.uri, else "
                                                        "$MLFLOW_TRACKING_URI, else the embedded store")
    p.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default): this machine only; 0.0.0.0: every "
                                                       "interface")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--format", default="pytorch", choices=FORMATS, help=FORMAT_HELP)
    for name, text in (("promote", "move @champion to a version by hand, recorded with who, why and when"),
                       ("rollback", "move @champion back to the version it held before")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--model", required=True, help="the registered model's name, e.g. drug-review-classifier")
        if name == "promote":
            p.add_argument("--version", required=True, help="the version to make champion")
        p.add_argument("--reason", default=None, help="why; kept in the registry with the move")
        p.add_argument("--config", default=None)
        p.add_argument("--tracking-uri", default=None)
    p = sub.add_parser("ui", help="open the MLflow UI on an experiment's store (--optuna: optuna-dashboard on "
                                  "its study storage)")
    p.add_argument("--config", default=None)
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--optuna", action="store_true", help="optuna-dashboard on the study's storage instead")
    return parser


def _sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a command the way Ctrl-C does: cleanly, with 130


def main(argv: list[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    command = args.pop("command")
    previous = signal.signal(signal.SIGTERM, _sigterm) if _on_main_thread() else None
    try:
        return _run(command, args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(command: str, args: dict) -> int:
    from orchestrator.config.secrets import ScrubFilter, scrub

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(ScrubFilter())  # an exception's text may hold a URL with a password
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    from orchestrator.search.logs import quiet_optuna_logs
    from orchestrator.tracking.logs import quiet_mlflow_logs

    # The command's own lines and progress bars say what happens; MLflow's notes on creating its
    # tables and Optuna's info lines are noise between them (the datasets library's bars: `search`).
    quiet_mlflow_logs()  # after basicConfig: MLflow's own handler must scrub too
    quiet_optuna_logs()

    from orchestrator.config import ConfigError
    from orchestrator.data import DataError
    from orchestrator.execution.base import ExecutorError
    from orchestrator.execution.slots import SlotError
    from orchestrator.config.paths import PathError
    from orchestrator.registry.versions import RegistryError
    from orchestrator.search.study import StorageError
    from orchestrator.tracking.client import TrackingError

    commands = {"search": search, "pretrain": pretrain, "probe": probe, "predict": predict, "status": status,
                "report": report, "serve": serve, "promote": promote, "rollback": rollback, "ui": ui}
    try:
        return commands[command](**args)
    except (ConfigError, DataError, ExecutorError, PathError, RegistryError, SlotError, StorageError,
            TrackingError) as e:
        print(f"error: {scrub(str(e))}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _on_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
