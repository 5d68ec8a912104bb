"""`status` reads a study from its stores (finished, and with a trial still running), `ui` marks
the experiment for model training and names the runs page, `ui --optuna` serves the study."""

import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import yaml
from conftest import tiny_experiment
from mlflow import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from orchestrator.cli import main
from orchestrator.tracking.client import KIND_TAG, KIND_TRAINING


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_status_of_a_finished_study_reads_only(finished_search, capsys):
    stores = [finished_search.folder / "mlruns" / "optuna.db", finished_search.folder / "mlruns" / "mlflow.db"]
    before = [_digest(p) for p in stores]
    assert main(["status", "--config", str(finished_search.config)]) == 0
    out = capsys.readouterr().out
    assert [_digest(p) for p in stores] == before  # nothing written to either store

    study = optuna.load_study(study_name="done", storage=finished_search.storage)
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == len(study.trials) == 3
    for t, row in zip(study.trials, rows):
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert cells[0] == str(t.number) and cells[1] == t.state.name
        assert cells[4] == str(len(t.intermediate_values))  # epochs reported
        if t.value is not None:
            assert cells[2] == f"{t.value:.4f}"
    best = study.best_trial
    assert f"best so far: trial {best.number}, {best.value:.4f}" in out and "3 of 3 trials finished" in out

    uri = finished_search.tracking_uri
    champion = MlflowClient(uri, registry_uri=uri).get_model_version_by_alias("done-clf", "champion")
    assert (f"models:/done-clf@champion = version {champion.version}, test_macro_f1 "
            f"{champion.tags['test_macro_f1']}") in out


def test_status_names_the_metric_the_study_optimises_not_a_changed_config(finished_search, capsys):
    """A config whose metric changed since (which `search` refuses) must not relabel the study's values."""
    assert main(["status", "--config", str(finished_search.config), "search.metric=val_loss"]) == 0
    out = capsys.readouterr().out
    assert "study done (maximize val_macro_f1)" in out and "val_loss" not in out


def test_status_while_a_trial_runs_shows_where_and_an_eta(tmp_path, tiny_model, data_dir, capsys):
    # A study as a search on another machine leaves it mid-way: two trials finished (10 and 20
    # minutes), one running for 5 minutes on host gpu-box slot 1, a budget of 5 trials.
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    config = tiny_experiment(tmp_path / "mid.yaml", tiny_model, data_dir, "mid",
                             search={"n_trials": 5, "storage": storage},
                             tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    study = optuna.create_study(study_name="mid", storage=storage, direction="maximize")
    lr = FloatDistribution(1e-4, 1e-2, log=True)
    now = datetime.now()
    for value in (0.5, 0.6):
        study.add_trial(create_trial(value=value, params={"learning_rate": 1e-3}, distributions={"learning_rate": lr},
                                     intermediate_values={1: value - 0.1, 2: value}))
    running = study.ask({"learning_rate": lr})
    running.set_user_attr("driver", "gpu-box:4242")
    running.set_user_attr("slot", "1")
    running.report(0.3, 1)
    # Optuna stamps trials with the current time; move them back so durations are known.
    with sqlite3.connect(tmp_path / "optuna.db") as db:
        for number, minutes in ((0, 10), (1, 20)):
            start = now - timedelta(minutes=minutes + 30)
            db.execute("UPDATE trials SET datetime_start = ?, datetime_complete = ? WHERE number = ?",
                       (str(start), str(start + timedelta(minutes=minutes)), number))
        db.execute("UPDATE trials SET datetime_start = ? WHERE number = 2", (str(now - timedelta(minutes=5)),))

    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("│") and "RUNNING" in line)
    assert "gpu-box slot 1" in row and "5 min" in row
    # Median 15 min per trial, 3 left (one of them 5 min in), one trial at a time: 40 min.
    assert "2 of 5 trials finished" in out
    assert re.search(r"about (39 min 5\d|40 min 0\d) s left", out), out  # seconds pass while it runs
    assert "best so far: trial 1, 0.6000" in out
    assert "champion: none yet" in out  # no MLflow store: no champion, and no store created
    assert not (tmp_path / "mlflow.db").exists()
    # Another program's database as tracking.uri: said on the champion line, MLflow's tables not written.
    with sqlite3.connect(tmp_path / "other.db") as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    before = _digest(tmp_path / "other.db")
    assert main(["status", "--config", str(config), f"tracking.uri=sqlite:///{tmp_path / 'other.db'}"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("champion:"))
    assert line.startswith("champion: not read (tracking.uri") and "not an MLflow store" in line
    assert _digest(tmp_path / "other.db") == before
    assert study.trials[2].state == TrialState.RUNNING  # status changed nothing


def test_status_of_nothing_is_exit_2_and_creates_nothing(tmp_path, tiny_model, data_dir, capsys, finished_search):
    missing = tmp_path / "nowhere" / "optuna.db"
    config = tiny_experiment(tmp_path / "x.yaml", tiny_model, data_dir, "x", search={"storage": f"sqlite:///{missing}"})
    assert main(["status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: search.storage: no Optuna storage at") and "Traceback" not in err
    assert not missing.parent.exists()

    assert main(["status", "--config", str(finished_search.config), "search.study_name=nope"]) == 2
    err = capsys.readouterr().err
    assert "no study named 'nope'" in err and "'done'" in err  # names the studies that are there


def test_search_marks_the_experiment_and_ui_names_its_runs_page(finished_search, tmp_path):
    uri = finished_search.tracking_uri
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("done")
    assert exp.tags[KIND_TAG] == KIND_TRAINING  # MLflow's UI opens the runs table, not the GenAI overview

    client.delete_experiment_tag(exp.experiment_id, KIND_TAG)  # an experiment made before marking
    client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND_TRAINING)  # restored: shared fixture
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "ui", "--config", str(finished_search.config),
                             "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert lines[1].strip() == f"the study's runs: http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs"


def test_ui_optuna_serves_the_study(finished_search, tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "ui", "--optuna", "--config",
                             str(finished_search.config), "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert f"http://127.0.0.1:{port}/dashboard/" in proc.stdout.readline()
        deadline, studies = time.time() + 60, None
        while time.time() < deadline and studies is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.loads(r.read())
            except OSError:
                assert proc.poll() is None, "optuna-dashboard exited"
                time.sleep(0.5)
        names = [s["study_name"] for s in studies["study_summaries"]]
        assert "done" in names
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # Cleanup, not what this test checks: once in four runs on a loaded 2-core machine the
            # dashboard outlived SIGTERM by 30 s (cause not found yet); it must not outlive the test.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_ui_optuna_without_a_study_is_exit_2(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    base = yaml.safe_load((Path(__file__).parents[2] / "experiments" / "demo.yaml").read_text())
    base["search"]["storage"] = f"sqlite:///{tmp_path / 'none.db'}"
    config.write_text(yaml.safe_dump(base))
    assert main(["ui", "--optuna", "--config", str(config)]) == 2
    assert "no Optuna storage" in capsys.readouterr().err and not (tmp_path / "none.db").exists()


def _measured_trials() -> list:
    """Two trials as a search on a GPU records them: the first carries its peak GPU memory as a
    share of the card (the user attr a trial sends); the second measured none (on CPU, or it
    failed first). No GPU needed: the attrs are written directly."""
    study = optuna.create_study(direction="maximize")
    lr = FloatDistribution(1e-4, 1e-2, log=True)
    for value, attrs in ((0.5, {"peak_gpu_memory_share": 0.7341}), (0.6, {})):
        study.add_trial(create_trial(value=value, params={"learning_rate": 1e-3}, distributions={"learning_rate": lr},
                                     user_attrs=attrs))
    return study.trials


def test_status_shows_each_trials_peak_gpu_memory_where_measured():
    from io import StringIO

    from rich.console import Console

    from orchestrator.reporting.status import StudyState, trial_table

    def rows(trials) -> tuple[list[str], list[list[str]]]:
        console = Console(file=StringIO(), width=200)
        console.print(trial_table(StudyState("gpu", "val_macro_f1", "maximize", trials, None, datetime.now())))
        lines = [line for line in console.file.getvalue().splitlines() if line.startswith(("┃", "│"))]
        cells = [[c.strip() for c in line.strip("┃│").split(line[0])] for line in lines]
        return cells[0], cells[1:]

    header, body = rows(_measured_trials())
    assert header[-1] == "peak GPU mem" and [row[-1] for row in body] == ["73%", ""]
    header, _ = rows(_measured_trials()[1:])  # nothing measured (a search on CPU): no column
    assert "peak GPU mem" not in header
