"""Ctrl-C / SIGTERM in any phase of a search gives exit 130, the summary so far and nothing RUNNING;
input that cannot work (a hub model with no network, model code that is not trusted, broken
weights, folders that cannot be written) is refused with exit 2 before anything is created.

Each interrupt is a real signal the search process sends itself at the moment a phase begins: a
subclass of the progress display does it, so no test hook lives in the product."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import optuna
import pytest
from conftest import tiny_experiment
from mlflow import MlflowClient

from orchestrator.cli import main

KILLER = textwrap.dedent("""
    import os, signal, sys
    from rich.console import Console
    from orchestrator.cli import exit_code
    from orchestrator.tasks import load_experiment
    from orchestrator.search.progress import StudyProgress, print_summary
    from orchestrator.search.driver import run_search

    class Killer(StudyProgress):
        def phase(self, name):
            super().phase(name)
            if name == sys.argv[2]:
                os.kill(os.getpid(), getattr(signal, sys.argv[3]))

    summary = run_search(load_experiment(sys.argv[1]), progress=Killer(None))
    print_summary(summary, Console(), sys.argv[1])
    sys.exit(exit_code(summary))
""")

PHASES = ["checking the input", "opening the study", "preparing the data", "fitting the baseline",
          "choosing the champion", "evaluating the champion on test", "registering the champion"]


def _nothing_running(tmp_path, name: str) -> None:
    db = tmp_path / "mlruns" / "optuna.db"
    if db.exists():
        try:
            trials = optuna.load_study(study_name=name, storage=f"sqlite:///{db}").trials
        except KeyError:  # stopped before the study was created
            trials = []
        assert not [t.number for t in trials if t.state.name == "RUNNING"]
    if (tmp_path / "mlruns" / "mlflow.db").exists():
        uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
        client = MlflowClient(uri, registry_uri=uri)
        exp = client.get_experiment_by_name(name)
        runs = client.search_runs([exp.experiment_id]) if exp else []
        assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []


@pytest.mark.slow
@pytest.mark.parametrize("phase", PHASES)
def test_a_signal_in_any_phase_exits_130_with_the_summary_and_nothing_running(tmp_path, tiny_model, data_dir,
                                                                               phase):
    name = "phase-" + phase.split()[0]
    experiment = tiny_experiment(tmp_path / "p.yaml", tiny_model, data_dir, name, training={"epochs": 1},
                                 search={"n_trials": 1})
    signal = "SIGINT" if phase in ("preparing the data", "registering the champion") else "SIGTERM"
    done = subprocess.run([sys.executable, "-c", KILLER, str(experiment), phase, signal], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 130, out[-3000:]
    assert f"interrupted while {phase}" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    _nothing_running(tmp_path, name)
    if (tmp_path / "mlruns" / "mlflow.db").exists():
        uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
        assert MlflowClient(uri, registry_uri=uri).search_model_versions(f"name='{name}-clf'") == []
    if phase == "registering the champion":  # the same command finishes the job
        again = subprocess.run([sys.executable, "-m", "orchestrator", "search", "--config", str(experiment)],
                               cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "registered as version 1 -> alias @champion" in again.stdout


def _remote_code_model(tiny_model, folder):
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="acme-bert", auto_map={"AutoConfig": "acme.AcmeConfig", "AutoModel": "acme.AcmeModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "acme.py").write_text("from transformers import BertConfig, BertModel\n"
                                    "class AcmeConfig(BertConfig):\n    model_type = 'acme-bert'\n"
                                    "class AcmeModel(BertModel):\n    config_class = AcmeConfig\n")
    return folder


def test_input_that_cannot_work_is_refused_before_anything_exists(tmp_path, tiny_model, data_dir, monkeypatch,
                                                                 capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    experiment = tiny_experiment(tmp_path / "x.yaml", tiny_model, data_dir, "refuse")
    broken = tmp_path / "broken-weights"
    shutil.copytree(tiny_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short, as by an interrupted download
    (tmp_path / "a-file").write_text("not a folder")
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_model, no_tokenizer, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*"))
    cases = {
        str(no_tokenizer): "has no tokenizer",  # transformers would build a near-empty one
        "bert-base-uncased-not-cached/xyz": "from the Hugging Face hub",  # no network in tests
        str(_remote_code_model(tiny_model, tmp_path / "remote-code")): "set model.trust_remote_code: true only if",
        str(broken): "model.safetensors is not a readable safetensors file",
    }
    failures = []
    for model, expected in cases.items():
        code = main(["search", "--config", str(experiment), f"model.name_or_path={model}"])
        err = capsys.readouterr().err
        if code != 2 or expected not in err:
            failures.append(f"{model}: exit {code}: {err[-600:]}")
    for override, expected in [(f"search.work_dir={tmp_path / 'a-file' / 'studies'}", "search.work_dir: cannot write"),
                               (f"tracking.uri=sqlite:///{tmp_path / 'a-file' / 'm.db'}", "tracking.uri: cannot write"),
                               ("tracking.uri=ftp://example.org/mlflow", "tracking.uri: 'ftp://example.org/mlflow' is not"),
                               ("search.work_dir=/proc/orchestrator", "search.work_dir: cannot write to /proc"),
                               ("search.storage=sqlite:////proc/optuna.db", "search.storage: cannot write to /proc"),
                               (f"search.storage=sqlite:///{tmp_path}", "is a folder; name a database file"),
                               ("search.storage=sqlite:///:memory:", "search.storage: an in-memory database"),
                               ("tracking.uri=sqlite:///:memory:", "tracking.uri: an in-memory database"),
                               ("tracking.uri=mysql://u@127.0.0.1:9/mlflow", "tracking.uri: cannot use the MLflow store"),
                               ("search.study_name=it's", "search.study_name: \"it's\" is not a usable name")]:
        code = main(["search", "--config", str(experiment), override])
        err = capsys.readouterr().err
        if code != 2 or expected not in err:
            failures.append(f"{override}: exit {code}: {err[-600:]}")
    assert not failures, "\n".join(failures)
    assert list(work.iterdir()) == []  # no stores, no lock file, no study folder


def test_a_hub_model_in_the_local_cache_is_used_offline(tmp_path, tiny_model, data_dir):
    """The real hub path (`snapshot_download`), offline, from a Hugging Face cache laid out by hand."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny-bert" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model, snapshot)
    (cache / "models--acme--tiny-bert" / "refs").mkdir()
    (cache / "models--acme--tiny-bert" / "refs" / "main").write_text("0" * 40)
    script = "from orchestrator.config import ModelConfig\nfrom orchestrator.models.sources import resolve_model\n" \
             "m = resolve_model(ModelConfig(name_or_path='acme/tiny-bert'))\nprint(m.path, m.max_positions)"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    path, positions = done.stdout.split()
    assert path == str(snapshot) and positions == "128"
