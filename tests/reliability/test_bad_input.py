"""Every bad input gets a clear message naming the file/key/column, exit code 2, and leaves the
stores exactly as they were (checked byte for byte after a real study has written them)."""

import hashlib
import logging
from pathlib import Path

import pytest
import yaml
from conftest import make_rows, write_csv

from orchestrator.cli import main


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model):
    """A directory whose mlruns/ already holds a finished study."""
    root = tmp_path_factory.mktemp("bad-input")
    data = root / "data"
    write_csv(data / "train.csv", make_rows(120, seed=2))
    write_csv(data / "test.csv", make_rows(45, seed=4))
    good = {"name": "good", "data": {"train": str(data / "train.csv"), "test": str(data / "test.csv")},
            "model": {"name_or_path": str(tiny_model)}, "training": {"epochs": 1},
            "space": {"learning_rate": {"low": 1e-4, "high": 1e-3}}, "search": {"n_trials": 1},
            "registry": {"model_name": "good-clf", "export": False}}
    (root / "good.yaml").write_text(yaml.safe_dump(good))
    return root, good


def _bad_data(root: Path, name: str) -> dict:
    d = root / "bad" / name
    d.mkdir(parents=True, exist_ok=True)
    rows = make_rows(60, seed=7)
    if name == "missing_file":
        return {"train": str(d / "nope.csv")}
    if name == "folder":
        return {"train": str(d)}
    if name == "empty_file":
        (d / "e.csv").write_text("")
        return {"train": str(d / "e.csv")}
    if name == "header_only":
        (d / "h.csv").write_text("text,label\n")
        return {"train": str(d / "h.csv")}
    if name == "wrong_delimiter":
        return {"train": str(write_csv(d / "t.csv", rows, sep="\t"))}
    if name == "latin1":
        (d / "l.csv").write_bytes("text,label\n".encode() + "caf\xe9 tr\xe8s bon,positive\n".encode("latin-1") * 30)
        return {"train": str(d / "l.csv")}
    if name == "missing_column":
        return {"train": str(write_csv(d / "c.csv", rows, text="body"))}
    if name == "blank_texts":
        blank = [{"text": "   " if i % 3 else r["text"], "label": r["label"]} for i, r in enumerate(rows)]
        return {"train": str(write_csv(d / "b.csv", blank))}
    if name == "single_class":
        return {"train": str(write_csv(d / "s.csv", make_rows(40, labels=("positive",))))}
    if name == "unseen_test_label":
        return {"train": str(write_csv(d / "tr.csv", make_rows(60, labels=("positive", "negative")))),
                "test": str(write_csv(d / "te.csv", make_rows(20)))}
    if name == "too_few_per_class":
        few = make_rows(40, labels=("positive", "negative")) + [{"text": "meh", "label": "neutral"}] * 2
        return {"train": str(write_csv(d / "f.csv", few))}
    raise KeyError(name)


DATA_CASES = {
    "missing_file": "data.train: file not found",
    "folder": "is not a file",
    "empty_file": "is empty (0 bytes)",
    "header_only": "has no rows",
    "wrong_delimiter": "is the delimiter right?",
    "latin1": "re-save it as UTF-8",
    "missing_column": "columns found: ['body', 'label']",
    "blank_texts": "have an empty text or label",
    "single_class": "has a single class",
    "unseen_test_label": "do not occur in the training split",
    "too_few_per_class": "too few rows per class for a stratified split",
}

CONFIG_CASES = {
    "unknown_key": ({"training": {"epochz": 3}}, "training.epochz: unknown key (did you mean 'epochs'?)"),
    "wrong_type": ({"search": {"n_trials": "ten"}}, "search.n_trials: expected int"),
    "impossible_space": ({"space": {"learning_rate": {"low": 1e-3, "high": 1e-5}}}, "low (0.001) is greater"),
    "empty_choices": ({"space": {"head": []}}, "space.head.choices: must be a non-empty list"),
    "missing_model": ({"model": {"name_or_path": "./no-such-model"}}, "model.name_or_path: folder not found"),
    "unknown_attention": ({"model": {"attention": "flash"}}, "model.attention: 'flash' is not one of auto, sdpa"),
    "flash_on_cpu": ({"model": {"attention": "flash_attention_2"}}, "flash_attention_2 runs on a GPU only"),
    "unsupported_storage": ({"search": {"storage": "mysql://db/optuna"}}, "search.storage: 'mysql://db/optuna' is not"),
    "unreachable_storage": ({"search": {"storage": "postgresql://optuna:secret@127.0.0.1:9/optuna"}},
                            "search.storage: cannot reach postgresql://optuna:***@127.0.0.1:9/optuna"),
}


def _run(root: Path, cfg: dict, capsys) -> tuple[int, str]:
    path = root / "case.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = main(["search", "--config", str(path)])
    return code, capsys.readouterr().err


def _merge(base: dict, patch: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in patch.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) and k != "space" else v
    return out


def test_bad_inputs_exit_2_with_a_clear_message_and_leave_stores_untouched(workspace, capsys, monkeypatch):
    root, good = workspace
    monkeypatch.chdir(root)
    assert main(["search", "--config", str(root / "good.yaml")]) == 0
    capsys.readouterr()
    before = _snapshot(root / "mlruns")
    failures = []
    for name, expected in DATA_CASES.items():
        code, err = _run(root, _merge(good, {"data": _bad_data(root, name)}), capsys)
        if code != 2 or expected not in err:
            failures.append(f"{name}: exit {code}, stderr: {err[-400:]}")
    for name, (patch, expected) in CONFIG_CASES.items():
        code, err = _run(root, _merge(good, patch), capsys)
        if code != 2 or expected not in err:
            failures.append(f"{name}: exit {code}, stderr: {err[-400:]}")
    (root / "broken.yaml").write_text("name: x\ndata:\n  train: [a.csv\n")
    code = main(["search", "--config", str(root / "broken.yaml")])
    err = capsys.readouterr().err
    if code != 2 or "malformed YAML at line" not in err:
        failures.append(f"malformed yaml: exit {code}, {err[-300:]}")
    assert not failures, "\n".join(failures)
    assert _snapshot(root / "mlruns") == before


def test_a_few_blank_texts_are_dropped_with_a_warning(tmp_path, caplog):
    from orchestrator.config import DataConfig
    from orchestrator.data import load_splits
    from orchestrator.tasks.single_label.task import SingleLabel

    rows = make_rows(100, seed=3)
    rows[5]["text"] = "  "
    rows[9]["text"] = ""
    path = write_csv(tmp_path / "a.csv", rows)
    with caplog.at_level(logging.WARNING):
        s = load_splits(DataConfig(train=str(path)), SingleLabel())
    assert sum(len(s.data[k]) for k in s.data) == 98
    assert "2 of 100 rows have an empty text or label" in caplog.text


def test_texts_shared_by_train_and_test_are_counted_in_a_warning(tmp_path, caplog):
    from orchestrator.config import DataConfig
    from orchestrator.data import load_splits
    from orchestrator.tasks.single_label.task import SingleLabel

    train = make_rows(60, seed=1)
    test = make_rows(20, seed=2) + train[:3]
    with caplog.at_level(logging.WARNING):
        load_splits(DataConfig(train=str(write_csv(tmp_path / "tr.csv", train)),
                               test=str(write_csv(tmp_path / "te.csv", test))), SingleLabel())
    assert "appear in both train and test" in caplog.text


def test_a_list_where_a_text_belongs_is_refused_with_its_row_not_read_as_its_repr(tmp_path, capsys):
    """Was: {"text": ["great", "awful"]} became the text "['great', 'awful']", in training and predict."""
    import json

    from orchestrator.config import DataConfig
    from orchestrator.data import DataError, load_splits
    from orchestrator.tasks.multi_label.task import MultiLabel
    from orchestrator.tasks.single_label.task import SingleLabel

    rows = make_rows(60, seed=3)
    rows[4]["text"] = ["great", "awful"]
    rows[8]["label"] = ["positive"]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"t\.jsonl row 5: column 'text' holds the list \['great', 'awful'\], not a "
                                        r"text; write one string per cell"):
        load_splits(DataConfig(train=str(path)), SingleLabel())
    with pytest.raises(DataError, match=r"row 5: column 'text' holds the list"):
        load_splits(DataConfig(train=str(path), label_separator=";"), MultiLabel())
    # predict refuses it before it looks for the model (none exists here) or writes anything
    code = main(["predict", "--model", "models:/none@champion", "--input", str(path),
                 "--output", str(tmp_path / "out.csv"), "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"])
    err = capsys.readouterr().err
    assert code == 2 and f"--input {path} row 5: column 'text' holds the list" in err
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "none.db").exists()
