"""A champion decided by evidence, end to end (tiny model, real SQLite stores): confirmation on new
seeds, the test CIs and kept predictions, the paired gate against the champion of an earlier study,
the baseline comparison, the ONNX / int8 formats registered and served by `predict --format`, and
the data and code recorded on every run."""

from __future__ import annotations

import contextlib
import io
import json
import os

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import make_rows, seed_store, tiny_experiment, write_csv
from orchestrator.cli import main
from orchestrator.registry.gate import COMPARISON_TAG
from orchestrator.search.confirm import CONFIRMS, SEED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evidence_search(tmp_path_factory, tiny_model, migrated_store):
    """Study "first": 2 trials of 1 epoch proposed by a Pareto front of quality, latency and
    parameters, its best 2 configurations confirmed on 1 new seed each, registered with its ONNX
    and int8 formats, and @fast under a latency budget every trial meets. Built once for this
    module (its tests run in this order on one worker: the second adds a study to the registry)."""
    folder = tmp_path_factory.mktemp("evidence")
    data = folder / "data"
    write_csv(data / "train.csv", make_rows(120, seed=2))
    write_csv(data / "validation.csv", make_rows(45, seed=3))
    write_csv(data / "test.csv", make_rows(45, seed=4))
    tracking = seed_store(folder, migrated_store)
    config = tiny_experiment(folder / "exp.yaml", tiny_model, data, "first",
                             training={"epochs": 1}, space={"head": ["cls", "mean"]},
                             search={"n_trials": 2, "seed": 3, "confirm": {"top_k": 2, "seeds": 1},
                                     "objectives": ["val_macro_f1", "latency_ms", "params"]},
                             tracking={"uri": tracking},
                             registry={"model_name": "ev-clf", "export": True, "latency_budget_ms": 10000})
    previous, out = os.getcwd(), io.StringIO()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out):
            assert main(["search", "--config", str(config)]) == 0
    finally:
        os.chdir(previous)
    client = MlflowClient(tracking, registry_uri=tracking)
    return folder, config, tracking, client, out.getvalue()


def test_a_confirmed_champion_with_its_evidence_formats_and_lineage(evidence_search, tmp_path, monkeypatch):
    folder, config, tracking, client, out = evidence_search
    data_dir = folder / "data"
    monkeypatch.chdir(folder)
    study = optuna.load_study(study_name="first", storage="sqlite:///mlruns/optuna.db")
    confirmations = [t for t in study.trials if CONFIRMS in t.user_attrs]
    searched_trials = [t for t in study.trials if CONFIRMS not in t.user_attrs]
    # Two trials of the search, and each completed configuration once more on seed training.seed + 1.
    assert len(searched_trials) == 2 and len(confirmations) == 2
    assert {t.user_attrs[SEED] for t in confirmations} == {43}
    for t in confirmations:
        assert t.params == study.trials[t.user_attrs[CONFIRMS]].params
    assert "confirmation budget (beside the trials'): 2 of 2 run(s) finished" in out
    assert "<- champion" in out and "95% CI" in out and "serving formats" in out

    experiment = client.get_experiment_by_name("first")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("orchestrator_role") == "study")
    trials = {int(r.data.tags["optuna_trial_number"]): r for r in runs
              if r.data.tags.get("orchestrator_role") == "trial"}
    # Confirmation runs are ordinary trial runs, tagged with what they confirm.
    for t in confirmations:
        tags = trials[t.number].data.tags
        assert tags["confirmation_of"] == str(t.user_attrs[CONFIRMS]) and tags["confirmation_seed"] == "43"
        assert trials[t.number].data.params["seed"] == "43"
    # The champion: the configuration of best mean; its weights are that configuration's best run.
    chosen = int(parent.data.tags["confirmed_trial"])
    group = [study.trials[chosen], *[t for t in confirmations if t.user_attrs[CONFIRMS] == chosen]]
    others = [t.number for t in searched_trials if t.number != chosen and t.state.name == "COMPLETE"]
    mean = sum(t.value for t in group) / len(group)
    for other in others:
        rivals = [study.trials[other], *[t for t in confirmations if t.user_attrs[CONFIRMS] == other]]
        assert mean >= sum(t.value for t in rivals) / len(rivals)
    assert parent.data.metrics["confirmed_mean_val_macro_f1"] == pytest.approx(mean)
    best_run = max(group, key=lambda t: t.value)
    assert parent.data.tags["best_trial"] == str(best_run.number)

    # Test metrics with their bootstrap interval, and the predictions kept to redo comparisons.
    champion_run = client.get_run(parent.data.tags["best_trial_run_id"])
    m = champion_run.data.metrics
    assert m["test_macro_f1_ci_low"] <= m["test_macro_f1"] <= m["test_macro_f1_ci_high"]
    files = {a.path for a in client.list_artifacts(champion_run.info.run_id)}
    assert {"test_predictions.json", "serving_formats.json"} <= files
    assert "baseline_test_predictions.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "paired resamples" in parent.data.tags["baseline_comparison"]

    # Lineage: every run has the three splits as dataset inputs, and the code version.
    for run in (parent, *trials.values()):
        full = client.get_run(run.info.run_id)
        contexts = {d.dataset.name: [t.value for t in d.tags] for d in full.inputs.dataset_inputs}
        assert contexts == {"train": ["training"], "validation": ["validation"], "test": ["testing"]}
        assert full.data.tags["code_version"].startswith(("git:", "orchestrator "))

    # The registered version: its formats, their latency, size and score against PyTorch's.
    version = client.get_model_version_by_alias("ev-clf", "champion")
    assert version.tags["export_formats"] == "pytorch onnx int8"
    for fmt in ("pytorch", "onnx", "int8"):
        assert version.tags[f"{fmt}_latency_ms"].startswith("b1 p50 ")
        assert float(version.tags[f"{fmt}_test_macro_f1"]) >= 0
    assert version.tags["confirmed_runs"] == str(len(group))
    # Every format predicts through the same rules; ONNX agrees with PyTorch.
    written = {}
    for fmt in ("pytorch", "onnx", "int8"):
        out_file = tmp_path / f"pred-{fmt}.csv"
        assert main(["predict", "--model", "models:/ev-clf@champion", "--input", str(data_dir / "test.csv"),
                     "--output", str(out_file), "--tracking-uri", tracking, "--format", fmt]) == 0
        written[fmt] = pd.read_csv(out_file)
    assert (written["onnx"]["predicted_label"] == written["pytorch"]["predicted_label"]).all()
    assert (written["onnx"]["prob_positive"] - written["pytorch"]["prob_positive"]).abs().max() < 1e-4
    # int8 is what ran, not PyTorch under its name: quantised weights move the probabilities a little.
    assert (written["int8"]["prob_positive"] - written["pytorch"]["prob_positive"]).abs().max() > 0

    # search.objectives: the front's study proposed both trials and holds their three objectives.
    front = optuna.load_study(study_name="first.objectives", storage="sqlite:///mlruns/optuna.db")
    assert front.user_attrs["objectives"] == ["val_macro_f1", "latency_ms", "params"]
    for t in searched_trials:
        paired = front.trials[t.user_attrs["front_trial"]]
        assert paired.user_attrs["study_trial"] == t.number and paired.params == t.params
        if t.state.name == "COMPLETE":
            assert paired.values[0] == t.value and paired.values[1] == t.user_attrs["objectives"]["latency_ms"] > 0
            assert paired.values[2] == t.user_attrs["objectives"]["params"] > 1000
    assert "pareto_front.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "search.objectives: a Pareto front of val_macro_f1, latency_ms, params (study first.objectives" in out
    # @fast: the best trial within the budget (every one here), with its latency as a tag.
    fast = client.get_model_version_by_alias("ev-clf", "fast")
    assert float(fast.tags["objective_latency_ms"]) > 0 and "objective_val_macro_f1" in fast.tags
    assert parent.data.tags["fast_trial"] == fast.tags["optuna_trial_number"]
    # The report draws the front.
    assert main(["report", "--config", str(config), "--output", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert 'id="front"' in page and 'data-kind="pareto"' in page and 'id="confirmation"' in page
    assert 'id="datasets"' in page and "95% CI" in page


def test_a_second_study_meets_the_champion_through_the_paired_gate(evidence_search, tmp_path, tiny_model, capsys,
                                                                 monkeypatch):
    folder, config, tracking, client, _ = evidence_search
    data_dir = folder / "data"
    monkeypatch.chdir(folder)
    before = client.get_model_version_by_alias("ev-clf", "champion").version
    second = tiny_experiment(tmp_path / "second.yaml", tiny_model, data_dir, "second",
                             training={"epochs": 1}, search={"n_trials": 1, "seed": 9},
                             tracking={"uri": tracking}, registry={"model_name": "ev-clf", "min_confidence": 0.99})
    assert main(["search", "--config", str(second)]) == 0
    experiment = client.get_experiment_by_name("second")
    parent = next(r for r in client.search_runs([experiment.experiment_id])
                  if r.data.tags.get("orchestrator_role") == "study")
    comparison = json.loads(parent.data.tags[COMPARISON_TAG])
    new = client.get_model_version("ev-clf", parent.data.tags["registered_model"].rpartition("/")[2])
    assert json.loads(new.tags[COMPARISON_TAG]) == comparison
    assert comparison["rows"] == 45 and comparison["rounds"] == 1000 and 0 <= comparison["p_better"] <= 1
    moved = comparison["difference"] > 0 and comparison["p_better"] >= 0.99
    holder = client.get_model_version_by_alias("ev-clf", "champion").version
    assert holder == (new.version if moved else before)
    if not moved:  # the challenger says by how much and how sure, on its own page
        assert "paired resamples" in new.tags["challenger_reason"]
        assert "challenger" in new.aliases
    # Without exports, `--format onnx` is refused before anything is loaded, naming the version.
    assert main(["predict", "--model", f"models:/ev-clf/{new.version}", "--input", str(data_dir / "test.csv"),
                 "--output", str(tmp_path / "p.csv"), "--tracking-uri", tracking, "--format", "onnx"]) == 2
    assert f"version {new.version} of ev-clf carries pytorch only" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
