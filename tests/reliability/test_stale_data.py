"""Nothing is served stale: what a study caches is keyed by the fingerprint of what it came from,
and a study re-run on different data (or a different model) stops with exit 2 saying what changed."""

import pytest
import hashlib
import json
import shutil
from pathlib import Path

import optuna
from conftest import make_rows, tiny_experiment, write_csv
from transformers import BertConfig, BertModel

from orchestrator.cli import main
from orchestrator.config import DataConfig
from orchestrator.data import load_splits, save_splits, tokenize
from orchestrator.tasks.single_label.task import SingleLabel
from orchestrator.models.heads import load_tokenizer


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _experiment(tmp_path, tiny_model, data_dir, **sections):
    return tiny_experiment(tmp_path / "stale.yaml", tiny_model, data_dir, "stale", training={"epochs": 1},
                           search={"n_trials": 1}, registry={"register": False}, **sections)


@pytest.mark.slow
def test_a_study_rerun_on_changed_data_stops_and_says_what_changed(tmp_path, tiny_model, data_dir, monkeypatch,
                                                                   capsys, store):
    monkeypatch.chdir(tmp_path)
    experiment = _experiment(tmp_path, tiny_model, data_dir)
    assert main(["search", "--config", str(experiment)]) == 0
    capsys.readouterr()
    before = _snapshot(tmp_path / "mlruns")

    write_csv(data_dir / "train.csv", make_rows(150, seed=9))  # same file name, other rows
    assert main(["search", "--config", str(experiment), "search.n_trials=2"]) == 2
    err = capsys.readouterr().err
    assert "study 'stale' was made from other input" in err
    assert f"the content of data.train ({data_dir / 'train.csv'}) changed" in err
    assert "search.study_name=stale-2" in err
    assert _snapshot(tmp_path / "mlruns") == before  # nothing trained, logged or cached on the new data

    # A setting that shapes the splits counts too, and so does the model.
    assert main(["search", "--config", str(experiment), "data.max_train_rows=60"]) == 2
    assert "data.max_train_rows: None -> 60" in capsys.readouterr().err
    retrained = tmp_path / "retrained"
    shutil.copytree(tiny_model, retrained)
    BertModel(BertConfig.from_pretrained(retrained)).save_pretrained(retrained)  # same shape, other weights
    assert main(["search", "--config", str(experiment), f"model.name_or_path={retrained}"]) == 2
    assert "the model changed" in capsys.readouterr().err
    assert _snapshot(tmp_path / "mlruns") == before
    # The way out that the message names works.
    assert main(["search", "--config", str(experiment), "search.study_name=stale-2"]) == 0


@pytest.mark.slow
def test_a_new_study_over_an_old_work_dir_trains_on_the_new_data(tmp_path, tiny_model, data_dir, monkeypatch, store):
    """The storage was reset but the study's folder stayed: the old saved splits must not be used."""
    monkeypatch.chdir(tmp_path)
    experiment = _experiment(tmp_path, tiny_model, data_dir)
    assert main(["search", "--config", str(experiment)]) == 0
    (tmp_path / "mlruns" / "optuna.db").unlink()  # the study is gone; mlruns/studies/stale is not

    rows = make_rows(150, seed=3, labels=("positive", "negative"))  # other rows and a smaller label set
    write_csv(data_dir / "train.csv", rows)
    write_csv(data_dir / "validation.csv", make_rows(40, seed=4, labels=("positive", "negative")))
    write_csv(data_dir / "test.csv", make_rows(40, seed=5, labels=("positive", "negative")))
    assert main(["search", "--config", str(experiment)]) == 0
    (trial,) = optuna.load_study(study_name="stale", storage="sqlite:///mlruns/optuna.db").trials
    saved = json.loads((Path(trial.user_attrs["checkpoint"]) / "classifier.json").read_text())
    assert saved["label_names"] == ["negative", "positive"]  # trained on the new splits
    folders = sorted(p.name for p in (tmp_path / "mlruns" / "studies" / "stale" / "data").iterdir())
    assert len(folders) == 2  # one per data fingerprint, side by side


def test_caches_are_keyed_by_content(tmp_path, tiny_model, data_dir):
    cfg = DataConfig(train=str(data_dir / "train.csv"), test=str(data_dir / "test.csv"))
    first = load_splits(cfg, SingleLabel())
    assert load_splits(cfg, SingleLabel()).digest == first.digest  # same bytes, same settings: same key
    assert load_splits(DataConfig(train=cfg.train, test=cfg.test, seed=7), SingleLabel()).digest != first.digest
    copy = tmp_path / "elsewhere.csv"
    copy.write_bytes((data_dir / "train.csv").read_bytes())
    moved = load_splits(DataConfig(train=str(copy), test=cfg.test), SingleLabel())
    assert moved.digest == first.digest  # moved, not changed

    folder = save_splits(first, tmp_path / "cache")
    tokenizer = load_tokenizer(str(tiny_model))
    a = tokenize(first, tokenizer, 16, folder, SingleLabel())
    # The same tokenizer name with another vocabulary is another tokenizer: a new cache entry.
    other = tmp_path / "other-tokenizer"
    tokenizer.save_pretrained(other)
    vocab = json.loads((other / "tokenizer.json").read_text())
    vocab["model"]["vocab"] = {t if t.startswith("[") else f"x{t}": i for t, i in vocab["model"]["vocab"].items()}
    (other / "tokenizer.json").write_text(json.dumps(vocab))
    b = tokenize(first, load_tokenizer(str(other)), 16, folder, SingleLabel())
    assert a["train"]["input_ids"] != b["train"]["input_ids"]
    assert len(list(folder.glob("tokenized-16-*"))) == 2
