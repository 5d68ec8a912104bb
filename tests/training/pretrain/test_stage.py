"""`python -m orchestrator pretrain` and the search that fine-tunes its encoder, as a user runs
them: a killed pre-training resumes; the encoder is registered, resolved by `search` and named
on every trial run; a changed corpus is never served the old encoder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from .conftest import zh_experiment

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _flat(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines


def _client(cwd: Path) -> MlflowClient:
    uri = f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}"
    return MlflowClient(uri, registry_uri=uri)


def _pretrain_runs(client: MlflowClient):
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, filter_string="tags.orchestrator_role = 'pretrain'")


@pytest.mark.slow
def test_a_killed_pretraining_resumes_from_its_last_checkpoint(tmp_path, zh_data, store):
    experiment = zh_experiment(tmp_path, zh_data, pretrain={"max_steps": 400, "save_every": 10, "eval_every": 50})
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "pretrain", "--config", str(experiment)],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    saved = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            for progress in (tmp_path / "mlruns" / "pretrain").glob("*/*/progress.json"):
                saved = json.loads(progress.read_text())["step"]
            if saved >= 20:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "pre-training ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert 20 <= saved < 400

    out = _cli("pretrain", "--config", experiment, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    resumed = int(out.stdout.split("resumed from step ")[1].split(")")[0])
    assert resumed >= saved  # not from zero: at or after the checkpoint seen before the kill
    client = _client(tmp_path)
    runs = _pretrain_runs(client)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the killed run was continued, not doubled
    assert runs[0].data.metrics["steps"] == 400
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")]
    assert steps[0] < resumed < steps[-1] == 400
    version = client.get_model_version_by_alias("zh-clf-encoder", "pretrained")
    assert version.run_id == runs[0].info.run_id and version.tags["steps"] == "400"
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id, "encoder")} >= {
        "encoder/model.safetensors", "encoder/tokenizer.json", "encoder/config.json"}

    # Run again: nothing to train; the registered version is reused.
    again = _cli("pretrain", "--config", experiment, cwd=tmp_path)
    assert again.returncode == 0 and "was done before" in again.stdout
    assert len(_pretrain_runs(client)) == 1
    assert len(client.search_model_versions("name='zh-clf-encoder'")) == 1


@pytest.mark.slow
def test_search_pretrains_first_then_fine_tunes_the_registered_encoder(tmp_path, zh_data, store):
    experiment = zh_experiment(tmp_path, zh_data, pretrain={"whole_word_masking": True})
    out = _cli("search", "--config", experiment, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "pre-training first: models:/zh-clf-encoder@pretrained does not exist yet" in _flat(out.stdout)
    client = _client(tmp_path)
    (pretrain,) = _pretrain_runs(client)
    version = client.get_model_version_by_alias("zh-clf-encoder", "pretrained")
    assert version.run_id == pretrain.info.run_id
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, filter_string="tags.orchestrator_role != 'pretrain'")
    assert {r.data.tags["orchestrator_role"] for r in runs} == {"study", "trial"}
    for run in runs:  # lineage: which encoder, and the run that pre-trained it (whose tags name its corpus)
        assert run.data.tags["encoder"] == "models:/zh-clf-encoder@pretrained"
        assert run.data.tags["encoder_version"] == str(version.version)
        assert run.data.tags["encoder_run_id"] == pretrain.info.run_id
    assert pretrain.data.params["pretrain.whole_word_masking"] == "True"
    assert int(pretrain.data.params["corpus.train_texts"]) < 240  # the training split only
    champion = client.get_model_version_by_alias("zh-clf", "champion")
    assert champion.tags["optuna_trial_number"] == "0"

    # The corpus changes: the encoder at @pretrained was trained on other text, so the next
    # search pre-trains again rather than fine-tune it (and its study, on changed data, says so).
    with open(zh_data / "train.csv", "a", encoding="utf-8") as f:
        f.write("前台态度很好，房间干净。,positive\n")
    rerun = _cli("search", "--config", experiment, "search.study_name=zh-2", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "was pre-trained with other text or settings" in _flat(rerun.stdout)
    assert len(_pretrain_runs(client)) == 2
    assert str(client.get_model_version_by_alias("zh-clf-encoder", "pretrained").version) == "2"


@pytest.mark.parametrize("change, message", [
    ({"model": {"name_or_path": "models:/nobody-encoder@pretrained"}},
     "is not the encoder this experiment's pre-training registers"),
    ({"pretrain": {"corpus": ["missing.txt"]}}, "pretrain.corpus[0]: file not found: missing.txt"),
    ({"pretrain": {"init": "no/such-folder-or-model"}}, "pretrain.init"),
    ({"pretrain": {"max_steps": None}}, "pretrain: set max_steps, max_minutes, or both"),
    ({"pretrain": {"mlm_probability": 1.5, "corpus": 3}}, "pretrain.mlm_probability: must be > 0 and < 1, found 1.5"),
])
def test_bad_pretrain_settings_exit_2_with_the_key_and_create_nothing(tmp_path, zh_data, change, message):
    import yaml

    experiment = zh_experiment(tmp_path, zh_data)
    cfg = yaml.safe_load(experiment.read_text())
    for section, values in change.items():
        cfg[section] = {**cfg[section], **values}
    experiment.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    out = _cli("pretrain", "--config", experiment, cwd=tmp_path, timeout=300)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "mlruns").exists()


def test_search_on_a_missing_registered_encoder_says_how_to_make_it(tmp_path, zh_data):
    import yaml

    experiment = zh_experiment(tmp_path, zh_data)
    cfg = yaml.safe_load(experiment.read_text())
    del cfg["pretrain"]
    experiment.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    out = _cli("search", "--config", experiment, cwd=tmp_path, timeout=300)
    assert out.returncode == 2
    assert "models:/zh-clf-encoder@pretrained is not in the MLflow store" in out.stderr
    assert "python -m orchestrator pretrain" in out.stderr and "Traceback" not in out.stderr


def test_electra_and_mlm_never_share_a_work_folder_and_bad_electra_settings_are_named(tmp_path, zh_data):
    from orchestrator.config import ConfigError
    from orchestrator.search.pretrain_stage import plan
    from orchestrator.tasks import load_experiment

    experiment = zh_experiment(tmp_path, zh_data)
    mlm, electra = plan(load_experiment(experiment)), plan(load_experiment(experiment, ["pretrain.objective=electra"]))
    assert mlm.folder != electra.folder and mlm.fingerprint != electra.fingerprint
    # ELECTRA's own settings leave an mlm fingerprint as it was before objectives existed.
    assert plan(load_experiment(experiment, ["pretrain.electra_weight=10"])).fingerprint == mlm.fingerprint
    assert plan(load_experiment(experiment, ["pretrain.objective=electra", "pretrain.electra_weight=10"])
                ).fingerprint != electra.fingerprint

    with pytest.raises(ConfigError) as caught:  # every problem at once, each naming its key
        load_experiment(experiment, ["pretrain.objective=electra", "pretrain.electra_weight=0",
                                     "pretrain.generator_layers=2", "pretrain.num_layers=1"])
    assert any(p.startswith("pretrain.electra_weight: must be > 0") for p in caught.value.problems)
    assert any(p.startswith("pretrain.generator_layers (2) must be at most pretrain.num_layers (1)")
               for p in caught.value.problems), caught.value.problems
    with pytest.raises(ConfigError, match="pretrain.generator_layers: 2 sizes ELECTRA's generator"):
        load_experiment(experiment, ["pretrain.generator_layers=2"])


@pytest.mark.slow
def test_electra_pretraining_registers_the_discriminator_encoder_alone(tmp_path, zh_data, store):
    from safetensors import safe_open
    from transformers import AutoModel

    experiment = zh_experiment(tmp_path, zh_data, pretrain={"objective": "electra", "num_layers": 2,
                                                            "max_steps": 20})
    out = _cli("pretrain", "--config", experiment, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "replaced-token detection accuracy" in _flat(out.stdout)
    client = _client(tmp_path)
    (run,) = _pretrain_runs(client)
    version = client.get_model_version_by_alias("zh-clf-encoder", "pretrained")
    assert version.run_id == run.info.run_id and version.tags["pretrain_objective"] == "electra"
    assert run.data.tags["pretrain_objective"] == "electra" and run.data.params["pretrain.objective"] == "electra"
    assert {"train_loss", "generator_loss", "discriminator_loss", "replaced_accuracy", "eval_generator_perplexity",
            "eval_rtd_accuracy", "eval_rtd_f1"} <= set(run.data.metrics)
    encoder = Path(client.download_artifacts(run.info.run_id, "encoder", str(tmp_path / "download")))
    with safe_open(encoder / "model.safetensors", "pt") as f:
        names = list(f.keys())
    assert not any("generator" in n or "rtd_head" in n or n.startswith("cls.") for n in names), names
    model = AutoModel.from_pretrained(encoder)
    assert type(model).__name__ == "BertModel" and model.config.num_hidden_layers == 2
