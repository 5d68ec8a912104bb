"""Names made from labels never collide and never reach MLflow broken: two labels (entity types)
that become one metric name, a label too long for an MLflow key, JSON-list label cells under a
`data.label_separator`, a tag with a stray space, a tag set mixing BIO and BIOES: each is refused
with exit 2 and one message naming the file, row or labels and the fix, before a study, run or
folder exists, instead of in every trial (or never)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

from orchestrator.cli import main
from orchestrator.config import DataConfig
from orchestrator.data import DataError, load_splits
from orchestrator.tasks.multi_label.task import MultiLabel
from orchestrator.tasks.single_label.task import SingleLabel
from orchestrator.tasks.token_classification.task import TokenClassification
from orchestrator.tasks import get_task
from orchestrator.tasks.names import class_count_tag, generated_keys, name_problems


def _csv(path: Path, rows: list[tuple[str, str]], label: str = "label") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", label])
        w.writerows(rows)
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("task, labels, expected", [
    ("single_label", ["a b", "a_b", "c"], "labels 'a b' and 'a_b' both become 'a_b' in metric names"),
    ("multi_label", ["x/y", "x y", "x_y", "z"], "labels 'x/y' and 'x y' and 'x_y' both become 'x_y'"),
    ("token_classification", ["O", "B-a b", "I-a b", "B-a_b", "I-a_b"],
     "entity types 'a b' and 'a_b' both become 'a_b' in metric names (val_f1_a_b)"),
])
def test_labels_that_become_one_metric_name_are_a_problem(task, labels, expected):
    problems = name_problems(get_task(task), labels)
    assert len(problems) == 1 and expected in problems[0] and "rename one of them" in problems[0]


def test_distinct_names_are_no_problem_and_a_too_long_one_is():
    assert name_problems(get_task("single_label"), ["a b", "a-b", "a.b", "A_B"]) == []
    long = "x" * 240
    [problem] = name_problems(get_task("multi_label"), [long, "short"])
    assert "longer than the 250 characters MLflow keeps" in problem and "(240 characters)" in problem


def test_every_key_a_search_makes_from_odd_labels_is_taken_by_mlflow(tmp_path):
    """The names a trial logs (metrics and the class-count tags) for labels full of characters MLflow
    refuses in a key, logged to a real store: none is refused."""
    labels = ['["joy"]', "a/b", "../up", "x:y?", "naïve", "中文", "NA", "-1", "tab\there", " "]
    task = get_task("multi_label")
    assert name_problems(task, labels) == []
    keys = generated_keys(task, labels)
    assert class_count_tag('["joy"]') in keys and len(set(keys)) == len(keys)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("names", str(tmp_path / "artifacts")))
    metrics = [Metric(k, 0.5, 0, 0) for k in keys if not k.startswith("train_class_count_")]
    client.log_batch(run.info.run_id, metrics=metrics,
                     tags=[RunTag(k, "1") for k in keys if k.startswith("train_class_count_")])
    assert set(client.get_run(run.info.run_id).data.metrics) == {m.key for m in metrics}


def _search(folder: Path, tiny_model: Path, train: Path, **data) -> tuple[int, list[str]]:
    """`search` from `folder` on `train`; (exit code, what exists in the folder afterwards)."""
    config = {"name": "names", "task": data.pop("task", "single_label"), "data": {"train": str(train), **data},
              "model": {"name_or_path": str(tiny_model)}, "training": {"epochs": 1}, "search": {"n_trials": 1}}
    (folder / "names.yaml").write_text(yaml.safe_dump(config))
    before = set(folder.iterdir())
    code = main(["search", "--config", str(folder / "names.yaml")])
    return code, sorted(p.name for p in set(folder.iterdir()) - before)


def test_search_refuses_colliding_labels_before_anything_exists(tmp_path, tiny_model, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train = _csv(tmp_path / "train.csv", [(f"text number {i}", ["a b", "a_b", "c"][i % 3]) for i in range(60)])
    code, created = _search(tmp_path, tiny_model, train)
    err = capsys.readouterr().err
    assert code == 2 and created == [], err
    assert f"{train}: column 'label': labels 'a b' and 'a_b' both become 'a_b'" in err
    assert "Traceback" not in err


def test_search_refuses_json_lists_under_a_label_separator(tmp_path, tiny_model, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [(f"text number {i}", ["joy;fear", "anger", "fear"][i % 3]) for i in range(60)]
    rows[6] = ("text number 6", '["joy"]')
    train = _csv(tmp_path / "train.csv", rows, label="labels")
    code, created = _search(tmp_path, tiny_model, train, task="multi_label", label_column="labels",
                            label_separator=";")
    err = capsys.readouterr().err
    assert code == 2 and created == [], err
    assert (f"{train} row 7: column 'labels' holds the JSON list '[\"joy\"]' (1 such cell(s)), but "
            f"data.label_separator is ';'") in err
    assert "remove data.label_separator" in err


def test_json_lists_are_read_as_lists_without_a_separator(tmp_path):
    rows = [(f"text number {i}", json.dumps([["joy"], ["anger", "joy"], []][i % 3])) for i in range(60)]
    splits = load_splits(DataConfig(train=str(_csv(tmp_path / "t.csv", rows)), label_column="label"), MultiLabel())
    assert splits.label_names == ["anger", "joy"]


def _sentence(i: int, entity: list[str]) -> dict:
    return {"tokens": ["w"] * (len(entity) + 2), "tags": ["O", *entity, "O"], "id": i}


def test_a_tag_with_a_stray_space_is_refused_with_its_row(tmp_path):
    rows = [_sentence(i, ["B-PER", "I-PER"]) for i in range(20)]
    rows[4]["tags"][1] = "B-PER "
    train = _jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError, match=r"t\.jsonl row 5, token 2: tag 'B-PER ' in column 'tags' starts or ends "
                                        r"with a space.*beside 'B-PER'; remove the space"):
        load_splits(DataConfig(train=str(train)), TokenClassification())


def test_one_stray_bioes_tag_in_bio_data_is_refused_not_a_switch_of_scheme(tmp_path):
    rows = [_sentence(i, ["B-PER", "I-PER"]) for i in range(20)]
    rows[9]["tags"][2] = "E-PER"  # the slip: every other entity ends the BIO way
    train = _jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError, match=r"row 1, token 3: tag 'I-PER' ends an entity the BIO way, but .*row 10, "
                                        r"token 3 has 'E-PER', a BIOES tag: the tags mix BIO and BIOES.*would be "
                                        r"I-PER.*set data.tag_scheme: BIOES"):
        load_splits(DataConfig(train=str(train)), TokenClassification())


def test_a_declared_scheme_still_reads_mixed_tags_with_a_warning(tmp_path, caplog):
    rows = [_sentence(i, ["B-PER", "E-PER"]) for i in range(30)]
    rows[3]["tags"][2] = "I-PER"  # unclosed in BIOES: repaired, and said
    train = _jsonl(tmp_path / "t.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        splits = load_splits(DataConfig(train=str(train), tag_scheme="BIOES"), TokenClassification())
    assert "E-PER" in splits.label_names and "unclosed entity tag" in caplog.text
    clean = _jsonl(tmp_path / "c.jsonl", [_sentence(i, ["B-PER", "E-PER"]) for i in range(30)])
    assert "S-PER" in load_splits(DataConfig(train=str(clean)), TokenClassification()).label_names  # auto: BIOES


@pytest.mark.parametrize("task, labels, expected", [
    ("single_label", ["Negative", "negative", "pos"], "labels 'Negative' and 'negative' differ only in case"),
    ("single_label", ["1", "01", "2"], "labels '1' and '01' differ only in case"),
    ("single_label", ["0", "1", "1.0", "2"], "labels '1' and '1.0' differ only in case"),
    ("multi_label", ["caf\u00e9", "cafe\u0301", "tea"], "labels 'caf\\xe9' and 'cafe\\u0301' differ"),
    ("token_classification", ["O", "B-PER", "I-PER", "B-per", "I-per"], "entity types 'PER' and 'per' differ"),
])
def test_one_label_spelled_two_ways_is_a_problem(task, labels, expected):
    """Two spellings of one label would be learned as two classes sharing its examples."""
    problems = name_problems(get_task(task), labels)
    assert len(problems) == 1 and expected in problems[0] and "write them one way" in problems[0]


def test_a_label_with_a_stray_space_is_refused_with_its_row(tmp_path):
    """'positive ' beside 'positive' was a third class; alone, a class named with a space."""
    rows = [(f"text number {i}", ["positive", "negative"][i % 2]) for i in range(40)]
    rows[7] = ("text number 7", "negative ")
    with pytest.raises(DataError, match=r"t\.csv row 8: label 'negative ' in column 'label' starts or ends with a "
                                        r"space \(1 such cell\(s\)\).*beside 'negative'; remove the spaces"):
        load_splits(DataConfig(train=str(_csv(tmp_path / "t.csv", rows))), SingleLabel())


def test_search_refuses_labels_differing_only_in_case_before_anything_exists(tmp_path, tiny_model, capsys,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    train = _csv(tmp_path / "train.csv", [(f"text number {i}", ["Neg", "neg", "pos"][i % 3]) for i in range(60)])
    code, created = _search(tmp_path, tiny_model, train)
    err = capsys.readouterr().err
    assert code == 2 and created == [], err
    assert f"{train}: column 'label': labels 'Neg' and 'neg' differ only in case" in err and "Traceback" not in err
