"""Every check that can be made before work starts is made before work starts: each of these
used to be found only after a pre-training, or ended in a traceback. Exit 2, one message naming
the key, and nothing created (no store, study, run or folder)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from conftest import make_rows, tiny_experiment, write_csv
from rich.console import Console

from orchestrator import cli
from orchestrator.tasks import experiment_from_dict, load_experiment
from orchestrator.execution.base import ExecutorError
from orchestrator.execution.ray import connect
from orchestrator.search.pretrain_stage import unused
from orchestrator.search.progress import print_summary
from orchestrator.search.driver import Summary
from orchestrator.tasks.token_classification.task import TokenClassification

PRETRAIN = {"init": "scratch", "vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
            "intermediate_size": 64, "max_positions": 64, "max_length": 32, "max_steps": 40}


def _search(tmp_path: Path, path: Path, capsys, *overrides: str) -> tuple[int, str]:
    code = cli.main(["search", "--config", str(path), *overrides])
    err = capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists(), "a refused search created its stores or folders"
    return code, err


@pytest.fixture
def workspace(tmp_path, monkeypatch, tiny_model, data_dir):
    monkeypatch.chdir(tmp_path)  # the stores' default places (mlruns/...) are relative to here
    return tmp_path, tiny_model, data_dir


def test_an_encoder_alias_pretraining_never_makes_is_refused_before_pretraining(workspace, capsys):
    root, _, data = workspace
    path = tiny_experiment(root / "x.yaml", Path("unused"), data, "x", pretrain=PRETRAIN)
    code, err = _search(root, path, capsys, "model.name_or_path=models:/x-clf-encoder@nosuch")
    assert code == 2
    assert ("model.name_or_path: models:/x-clf-encoder@nosuch names the alias @nosuch, but pre-training registers "
            "this experiment's encoder as @pretrained (pretrain.alias)") in err
    assert "models:/x-clf-encoder@pretrained, or set pretrain.alias=nosuch" in err


def test_a_scratch_encoders_sizes_are_checked_before_it_is_pretrained(workspace, capsys):
    """max_length against pretrain.max_positions and the [CLS]/[SEP] the scratch tokenizer adds,
    freeze_layers against pretrain.num_layers: all settings, so all refused before pre-training."""
    root, _, data = workspace
    path = tiny_experiment(root / "x.yaml", Path("unused"), data, "x", pretrain=PRETRAIN)
    code, err = _search(root, path, capsys, "model.name_or_path=models:/x-clf-encoder@pretrained",
                        "space.max_length=[2, 128]", "training.strategy=partial", "training.freeze_layers=3")
    assert code == 2 and "Traceback" not in err
    assert "space.max_length: 128 is more than models:/x-clf-encoder@pretrained (pretrain.init: scratch" in err
    assert "(64 tokens); use at most 64" in err
    assert "space.max_length: 2 leaves no token for the text" in err and "use at least 3" in err
    assert "training.freeze_layers: 3 layers to freeze" in err and "has 1; use at most 1" in err
    assert not list(root.glob("**/pretrain*")), "pre-training started"


def test_an_empty_label_separator_is_a_config_error(workspace, capsys):
    root, model, data = workspace
    path = tiny_experiment(root / "x.yaml", model, data, "x")
    code, err = _search(root, path, capsys, "task=multi_label", "data.label_separator=''")
    assert code == 2 and "data.label_separator: '' is empty" in err and "Traceback" not in err


def test_positive_label_is_refused_for_multi_label(workspace, capsys):
    root, model, data = workspace
    path = tiny_experiment(root / "x.yaml", model, data, "x")
    code, err = _search(root, path, capsys, "task=multi_label", "data.label_separator=;",
                        "postprocess.positive_label=spam")
    assert code == 2 and "postprocess.positive_label: 'spam' means nothing for multi_label" in err


def test_an_unused_pretrain_section_is_still_checked_with_the_other_problems(workspace, capsys):
    root, model, data = workspace
    corpus = write_csv(root / "corpus.csv", make_rows(20), text="body")  # no column "text"
    path = tiny_experiment(root / "x.yaml", model, data, "x", pretrain={**PRETRAIN, "corpus": [str(corpus)]})
    code, err = _search(root, path, capsys, "model.attention=flash_attention_2")
    assert code == 2
    assert f"pretrain.corpus[0]: {corpus} has no column 'text'" in err and "set pretrain.text_column" in err
    assert "model.attention: flash_attention_2 runs on a GPU only" in err  # reported together


def test_an_unused_pretrain_section_is_named_in_the_output_and_the_summary(tmp_path):
    cfg = experiment_from_dict({"name": "x", "data": {"train": "t.csv"}, "model": {"name_or_path": "bert-base-chinese"},
                                "pretrain": PRETRAIN, "registry": {"model_name": "x-clf"}})
    note = unused(cfg)
    assert note == ("pretrain: declared but not used: model.name_or_path is bert-base-chinese, not the encoder "
                    "pre-training registers; to fine-tune that one, set "
                    "model.name_or_path=models:/x-clf-encoder@pretrained")
    used = experiment_from_dict({"name": "x", "data": {"train": "t.csv"}, "pretrain": PRETRAIN,
                                 "model": {"name_or_path": "models:/x-clf-encoder@pretrained"},
                                 "registry": {"model_name": "x-clf"}})
    assert unused(used) is None
    out = io.StringIO()
    print_summary(Summary("x", notes=[note]), Console(file=out, width=400), "x.yaml")
    assert note in out.getvalue()


def test_max_length_below_the_models_minimum_names_max_length(workspace, capsys):
    root, model, data = workspace
    path = tiny_experiment(root / "x.yaml", model, data, "x")
    code, err = _search(root, path, capsys, "training.max_length=2")
    assert code == 2
    assert "training.max_length: 2 leaves no token for the text" in err and "use at least 3" in err
    # A token task's window check leaves that to the model's check instead of blaming the overlap.
    cfg = experiment_from_dict({"name": "x", "task": "token_classification", "data": {"train": "t.jsonl"},
                                "training": {"max_length": 2}})
    assert not [p for p in TokenClassification(cfg).config_problems(cfg) if "window_overlap" in p]


def test_ui_refuses_a_missing_store_instead_of_creating_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli.subprocess, "call", lambda *a, **k: pytest.fail("mlflow ui was started"))
    store = tmp_path / "none" / "mlflow.db"
    (tmp_path / "none").mkdir()
    assert cli.main(["ui", "--tracking-uri", f"sqlite:///{store}"]) == 2
    assert f"no MLflow store at {store}" in capsys.readouterr().err and not store.exists()
    cfg = tmp_path / "x.yaml"  # the experiment's store, named by its key
    cfg.write_text(yaml.safe_dump({"name": "x", "data": {"train": "t.csv"},
                                   "tracking": {"uri": f"sqlite:///{store}"}}))
    assert load_experiment(str(cfg)).tracking.uri.endswith("mlflow.db")
    assert cli.main(["ui", "--config", str(cfg)]) == 2
    assert "tracking.uri" in capsys.readouterr().err and not store.exists()


def test_a_bad_ray_address_variable_is_named_not_the_flag(monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(ExecutorError) as caught:
        connect(None)
    assert str(caught.value).startswith("the environment variable RAY_ADDRESS='127.0.0.1:1'")
    assert "nothing answers there" in str(caught.value) and "--ray-address auto:" not in str(caught.value)
    monkeypatch.setenv("RAY_ADDRESS", "banana")
    with pytest.raises(ExecutorError, match="RAY_ADDRESS='banana'.*expected auto, HOST:PORT"):
        connect("auto")


def test_a_threshold_for_three_classes_is_refused_once_the_labels_are_read(workspace, capsys):
    root, model, data = workspace  # data_dir: negative / neutral / positive
    path = tiny_experiment(root / "x.yaml", model, data, "x")
    code, err = _search(root, path, capsys, "postprocess.threshold=tune")
    assert code == 2 and "Traceback" not in err
    assert "postprocess.threshold: tune tunes the positive class's threshold of two classes, but the training " \
           "data has 3 (negative, neutral, positive)" in err


def test_a_number_where_a_name_belongs_says_to_quote_it():
    """`positive_label: 1` for the labels 0/1: YAML made it a number; the fix is quotes, so say so."""
    from orchestrator.config import ConfigError

    with pytest.raises(ConfigError, match=r'postprocess.positive_label: expected str, found 1 \(int\); YAML reads an '
                                          r'unquoted 1, 1.0 or true as a number.*quote it, as in positive_label: "1"'):
        experiment_from_dict({"name": "x", "data": {"train": "t.csv"},
                              "postprocess": {"threshold": "tune", "positive_label": 1}})
    cfg = experiment_from_dict({"name": "x", "data": {"train": "t.csv"}, "postprocess": {"threshold": "tune",
                                                                                         "positive_label": "1"}})
    assert cfg.postprocess.positive_label == "1"


@pytest.mark.parametrize("task", ["single_label", "token_classification"])
def test_a_label_separator_outside_multi_label_is_a_config_error(task):
    """Was ignored: under single_label, 'a;b' became one class named 'a;b'."""
    from orchestrator.config import ConfigError

    with pytest.raises(ConfigError, match=r"data.label_separator: ';' splits a cell into several labels, which only "
                                          r"task multi_label reads; set task: multi_label"):
        experiment_from_dict({"name": "x", "task": task, "data": {"train": "t.jsonl", "label_separator": ";"}})
