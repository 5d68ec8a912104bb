"""What pre-training reads: the training split by default (never validation or test), or files."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.tasks import load_experiment
from orchestrator.data import DataError
from orchestrator.training.pretrain.corpus import load_corpus

from .conftest import write_rows, zh_experiment


def _cfg(tmp_path, zh_data, **pretrain):
    return load_experiment(zh_experiment(tmp_path, zh_data, pretrain=pretrain))


def test_the_default_corpus_is_the_training_split_only(tmp_path, zh_data):
    import csv

    # Texts that occur in validation or test only must never be pre-trained on.
    write_rows(zh_data / "validation.csv", [{"text": f"只在验证集{i}", "label": "positive"} for i in range(20)]
               + [{"text": f"只在验证集负{i}", "label": "negative"} for i in range(20)])
    corpus = load_corpus(_cfg(tmp_path, zh_data))
    train = {r["text"] for r in csv.DictReader(open(zh_data / "train.csv", encoding="utf-8"))}
    texts = corpus.train + corpus.held_out
    assert set(texts) <= train and not any("验证集" in t for t in texts)
    assert len(corpus.held_out) == round(0.1 * len(texts))  # eval_share 0.1 in the tiny settings


def test_corpus_files_txt_and_csv(tmp_path, zh_data):
    (tmp_path / "a.txt").write_text("第一行\n\n  第二行  \n第三行\n", encoding="utf-8")
    write_rows(tmp_path / "b.csv", [{"text": "表格里的字", "label": "x"}, {"text": "", "label": "y"}])
    cfg = _cfg(tmp_path, zh_data, corpus=[str(tmp_path / "a.txt"), str(tmp_path / "b.csv")], eval_share=0.2)
    corpus = load_corpus(cfg)
    assert sorted(corpus.train + corpus.held_out) == sorted(["第一行", "第二行", "第三行", "表格里的字"])
    assert [f["texts"] for f in corpus.record["files"]] == [3, 1]
    again = load_corpus(cfg)
    assert (again.train, again.held_out, again.digest) == (corpus.train, corpus.held_out, corpus.digest)


@pytest.mark.parametrize("name, content, message", [
    ("c.csv", "body,label\n好,x\n", "has no column 'text'"),
    ("d.txt", "\n\n   \n", "holds no text"),
    ("e.txt", None, "is not UTF-8 text"),
])
def test_unusable_corpus_files_name_the_file_and_the_fix(tmp_path, zh_data, name, content, message):
    path = tmp_path / name
    if content is None:
        path.write_bytes("好的".encode("gbk"))
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="pretrain.corpus\\[0\\]") as e:
        load_corpus(_cfg(tmp_path, zh_data, corpus=[str(path)]))
    assert message in str(e.value)


def test_one_text_is_too_few_to_hold_some_out(tmp_path, zh_data):
    (tmp_path / "one.txt").write_text("只有一句\n", encoding="utf-8")
    with pytest.raises(DataError, match="leave nothing to train on"):
        load_corpus(_cfg(tmp_path, zh_data, corpus=[str(tmp_path / "one.txt")]))


def test_a_pretrain_section_round_trips_through_overrides(tmp_path, zh_data):
    path = zh_experiment(tmp_path, zh_data)
    cfg = load_experiment(path, ["pretrain.max_steps=7", "pretrain.corpus=x.txt"])
    assert cfg.pretrain.max_steps == 7 and cfg.pretrain.corpus == ("x.txt",)
    raw = yaml.safe_load(path.read_text())
    del raw["pretrain"]
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    assert load_experiment(path).pretrain is None
