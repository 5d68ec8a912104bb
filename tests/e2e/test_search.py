"""`python -m orchestrator search` end to end on a tiny model, with real SQLite MLflow and Optuna stores."""

import os
import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.cli import main
from orchestrator.training.saved_model import Classifier

TRACKING = "sqlite:///mlruns/mlflow.db"


def _client() -> MlflowClient:
    # Absolute URI: MLflow caches stores by URI string, so a relative one would reach whichever
    # directory first opened it in this process.
    uri = f"sqlite:///{os.path.abspath('mlruns/mlflow.db')}"
    return MlflowClient(uri, registry_uri=uri)


@pytest.fixture
def experiment(tmp_path, tiny_model, data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = {
        "name": "tiny",
        "data": {"train": str(data_dir / "train.csv"), "validation": str(data_dir / "validation.csv"),
                 "test": str(data_dir / "test.csv")},
        "model": {"name_or_path": str(tiny_model)},
        "training": {"epochs": 2, "learning_rate": 2e-3, "batch_size": 16, "imbalance": "class_weights"},
        "space": {"learning_rate": {"low": 5e-4, "high": 5e-3, "log": True}, "head": ["cls", "mean"]},
        "search": {"n_trials": 3, "seed": 1},
        "registry": {"model_name": "tiny-clf", "export": False},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _runs(client):
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("orchestrator_role") == "study"]
    trials = [r for r in runs if r.data.tags.get("orchestrator_role") == "trial"]
    return parents, trials


@pytest.mark.slow
def test_search_builds_the_run_tree_registers_a_champion_and_predicts(experiment, tmp_path, capsys):
    assert main(["search", "--config", str(experiment)]) == 0
    out = capsys.readouterr().out
    assert "champion test macro-F1" in out and "baseline" in out and "python -m orchestrator ui" in out

    study = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")
    states = {t.number: t.state.name for t in study.trials}
    assert len(states) == 3 and "COMPLETE" in states.values()
    assert set(states.values()) <= {"COMPLETE", "PRUNED"}
    # Every trial ran in a spare process: the first one started while the driver prepared the data,
    # each next one while the trial before trained.
    assert [t.user_attrs["warm_start"] for t in study.trials] == [True, True, True]
    for t in study.trials:  # each trial's time: training and evaluation steps, and the share outside them
        busy = t.user_attrs["train_seconds"] + t.user_attrs["eval_seconds"]
        assert 0 < busy < t.user_attrs["wall_seconds"] and t.user_attrs["setup_seconds"] > 0
        assert t.user_attrs["overhead_share"] == pytest.approx(1 - busy / t.user_attrs["wall_seconds"], abs=1e-3)
        log = (tmp_path / "mlruns" / "studies" / "tiny" / "logs" / f"trial-{t.number}.log").read_text()
        assert "timing: imports" in log and "results and checkpoint" in log  # where its time went

    client = _client()
    parents, trials = _runs(client)
    assert len(parents) == 1 and len(trials) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {"baseline_test_macro_f1", "baseline_val_macro_f1", "champion_test_macro_f1"} <= set(parent.data.metrics)
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"optimization_history.png", "param_importances.png"} <= parent_files

    for run in trials:
        number = int(run.data.tags["optuna_trial_number"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["trial_state"] == states[number]
        assert run.info.status == "FINISHED"
        assert {"learning_rate", "head", "epochs", "batch_size"} <= set(run.data.params)
        assert float(run.data.params["learning_rate"]) == pytest.approx(study.trials[number].params["learning_rate"])
        loss = client.get_metric_history(run.info.run_id, "train_loss")
        assert len(loss) >= 2 and len({m.step for m in loss}) == len(loss)
        assert client.get_metric_history(run.info.run_id, "learning_rate")
        val = client.get_metric_history(run.info.run_id, "val_macro_f1")
        assert [m.step for m in val] == list(range(1, len(val) + 1))
        if states[number] == "COMPLETE":
            files = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert "confusion_matrix_validation.png" in files

    best = study.best_trial
    version = client.get_model_version_by_alias("tiny-clf", "champion")
    assert str(version.version) == "1"
    assert version.tags["optuna_trial_number"] == str(best.number)
    best_run = client.get_run(best.user_attrs["mlflow_run_id"])
    assert best_run.data.metrics["test_macro_f1"] == pytest.approx(float(version.tags["test_macro_f1"]), abs=1e-6)
    assert {"confusion_matrix_test.png", "classification_report_test.txt"} <= {
        a.path for a in client.list_artifacts(best_run.info.run_id)}

    # predict in a fresh process from the registry == predictions of the saved checkpoint in-process
    test = pd.read_csv(tmp_path / "data" / "test.csv")
    test.to_csv(tmp_path / "x.csv", index=False)
    env = {**os.environ, "MLFLOW_TRACKING_URI": TRACKING}
    subprocess.run([sys.executable, "-m", "orchestrator", "predict", "--model", "models:/tiny-clf@champion",
                    "--input", "x.csv", "--output", "y.csv"], check=True, env=env, cwd=tmp_path, timeout=300)
    predicted = pd.read_csv(tmp_path / "y.csv")
    local = Classifier(best.user_attrs["checkpoint"]).predict_frame(test["text"].tolist())
    assert predicted["predicted_label"].tolist() == local["label"].tolist()
    probs = [c for c in predicted.columns if c.startswith("prob_")]
    assert probs == ["prob_negative", "prob_neutral", "prob_positive"]
    np.testing.assert_allclose(predicted[probs].to_numpy(), local[probs].to_numpy(), atol=1e-5)
    np.testing.assert_allclose(predicted[probs].sum(axis=1), 1.0, atol=1e-5)

    # The registered artifacts hold no pickles: weights are safetensors, the model is code.
    from mlflow.artifacts import download_artifacts
    folder = download_artifacts(f"models:/tiny-clf/{version.version}", dst_path=str(tmp_path / "dl"),
                                tracking_uri=client.tracking_uri)
    names = [f for _, _, fs in os.walk(folder) for f in fs]
    assert any(n.endswith(".safetensors") for n in names)
    assert not any(n.endswith((".pkl", ".pickle", ".bin", ".pt", ".pth")) for n in names), names


# Evaluations inside an epoch, judged by successive halving from the start, with the GP sampler:
# through trial processes, the driver's pruner and the MLflow runs.
MULTI_FIDELITY = ["training.evals_per_epoch=2", "search.pruner=successive_halving", "search.sampler=gp",
                  "search.pruner_startup_trials=1", "search.pruner_warmup_epochs=0"]


@pytest.mark.slow
def test_rerun_continues_the_same_study_without_duplicates(experiment, store):
    assert main(["search", "--config", str(experiment), "search.n_trials=2", *MULTI_FIDELITY]) == 0
    # Same command with a larger budget: one more trial in the same study and parent run.
    assert main(["search", "--config", str(experiment), "search.n_trials=3", *MULTI_FIDELITY]) == 0
    # Budget reached: no new trial, no new model version.
    assert main(["search", "--config", str(experiment), "search.n_trials=3", *MULTI_FIDELITY]) == 0
    study = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")
    assert [t.number for t in study.trials] == [0, 1, 2]
    for t in study.trials:  # 2 epochs, 2 evaluations each: the pruner's steps 1..4
        steps = sorted(t.intermediate_values)
        assert steps == list(range(1, len(steps) + 1)) and (len(steps) == 4) == (t.state.name == "COMPLETE")
    client = _client()
    parents, trials = _runs(client)
    assert len(parents) == 1 and len(trials) == 3
    assert parents[0].data.params["search.sampler"] == "gp"
    first = next(r for r in trials if r.data.tags.get("optuna_trial_number") == "0")
    assert [m.step for m in client.get_metric_history(first.info.run_id, "interim_val_macro_f1")] != []
    versions = client.search_model_versions("name='tiny-clf'")
    keys = [(v.tags["orchestrator_study"], v.tags["optuna_trial_number"]) for v in versions]
    assert len(keys) == len(set(keys))
    champion = client.get_model_version_by_alias("tiny-clf", "champion")
    scores = [float(v.tags["test_macro_f1"]) for v in versions]
    assert float(champion.tags["test_macro_f1"]) == max(scores)


def test_bad_model_choices_exit_2_before_any_run(experiment, tmp_path, tiny_model, capsys):
    from transformers import DistilBertConfig, DistilBertModel

    from orchestrator.models.heads import load_tokenizer

    distil = tmp_path / "distil"
    DistilBertModel(DistilBertConfig(vocab_size=200, dim=32, n_layers=1, n_heads=2, hidden_dim=64)).save_pretrained(distil)
    load_tokenizer(str(tiny_model)).save_pretrained(distil)
    assert main(["search", "--config", str(experiment), f"model.name_or_path={distil}",
                 "space.head=[cls, pooler]"]) == 2
    assert "head 'pooler': DistilBertModel" in capsys.readouterr().err
    assert main(["search", "--config", str(experiment), f"model.name_or_path={tmp_path / 'missing'}"]) == 2
    assert "folder not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["search", "--config", str(experiment), f"model.name_or_path={empty}"]) == 2
    assert "holds no *.safetensors weights" in capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists()
