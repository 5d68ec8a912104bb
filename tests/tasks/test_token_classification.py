"""The token_classification task: reading and checking tagged sentences, the model, the loss,
gather/evaluate, the CRF baseline and the registered model's output."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from orchestrator.config.schema import DataConfig, ExperimentConfig, ParamSpace, TrainingConfig
from orchestrator.data.read import DataError
from orchestrator.tasks import get_task
from orchestrator.tasks.token_classification.task import TokenClassification, text_tokens

NER_NAMES = ["O", "B-LOC", "B-PER", "I-LOC", "I-PER"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def files(ner_dir) -> DataConfig:
    return DataConfig(train=str(ner_dir / "train.jsonl"), validation=str(ner_dir / "validation.jsonl"),
                      test=str(ner_dir / "test.jsonl"))


def one_hot(tag_ids: list[int], n: int = len(NER_NAMES)) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[tag_ids]


# ---------------------------------------------------------------- reading and checking

def test_registered_and_splits_read(ner_dir):
    task = get_task("token_classification")
    assert isinstance(task, TokenClassification)
    splits = task.load_splits(files(ner_dir))
    assert splits.label_names == NER_NAMES
    assert {k: len(v) for k, v in splits.data.items()} == {"train": 40, "validation": 12, "test": 12}
    assert splits.data["train"].features["tags"].feature.names == NER_NAMES
    first = json.loads((ner_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert splits.data["train"][0]["tokens"] == first["tokens"]
    assert [NER_NAMES[t] for t in splits.data["train"][0]["tags"]] == first["tags"]
    settings = splits.record["settings"]
    assert settings["task"] == "token_classification" and settings["tag_scheme"] == "BIO"
    assert set(splits.record["sources"]) == {"train", "validation", "test"}
    assert task.label_counts(splits, "train")["O"] > 0
    assert task.describe(splits).startswith("BIO tags")


def test_missing_splits_are_carved_at_random_with_the_seed(tmp_path):
    rows = [{"tokens": list("张三去北京"), "tags": ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]}] * 10
    rows += [{"tokens": list("我们") + [str(i)], "tags": ["O", "O", "O"]} for i in range(30)]
    cfg = DataConfig(train=write_jsonl(tmp_path / "all.jsonl", rows), test_size=0.2, validation_size=0.25)
    a = TokenClassification().load_splits(cfg)
    b = TokenClassification().load_splits(cfg)
    assert {k: len(v) for k, v in a.data.items()} == {"train": 24, "validation": 8, "test": 8}
    assert a.data["test"]["tokens"] == b.data["test"]["tokens"]
    assert "test_size" in a.record["settings"]
    capped = TokenClassification().load_splits(DataConfig(train=cfg.train, max_train_rows=5))
    assert len(capped.data["train"]) == 5


def test_orphan_i_tags_are_reported_and_repaired_not_fatal(tmp_path, caplog):
    rows = [{"tokens": list("我在北京"), "tags": ["O", "O", "I-LOC", "I-LOC"]},
            {"tokens": list("张三"), "tags": ["B-PER", "I-PER"]}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        splits = TokenClassification().load_splits(DataConfig(train=train, validation=train, test=train))
    assert "1 orphan tag(s)" in caplog.text and "row 1 token 3 'I-LOC'" in caplog.text
    names = splits.label_names
    assert [names[t] for t in splits.data["test"][0]["tags"]] == ["O", "O", "B-LOC", "I-LOC"]


def test_bmes_is_detected_and_a_tag_outside_it_is_an_error_naming_the_place(tmp_path):
    good = [{"tokens": list("共同创造"), "tags": ["B", "E", "B", "E"]}, {"tokens": list("的"), "tags": ["S"]}]
    train = write_jsonl(tmp_path / "train.jsonl", good)
    splits = TokenClassification().load_splits(DataConfig(train=train, validation=train, test=train))
    assert splits.label_names[0] == "S" and sorted(splits.label_names) == ["B", "E", "M", "S"]
    assert splits.record["settings"]["tag_scheme"] == "BMES"
    bad = write_jsonl(tmp_path / "bad.jsonl", good + [{"tokens": list("美好"), "tags": ["B", "X"]}])
    with pytest.raises(DataError) as err:
        TokenClassification().load_splits(DataConfig(train=train, validation=train, test=bad, tag_scheme="BMES"))
    text = str(err.value)
    assert "bad.jsonl" in text and "row 3" in text and "token 2" in text and "'X'" in text and "BMES" in text


def test_an_e_tag_in_data_declared_bio_is_an_error(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [{"tokens": list("北京"), "tags": ["B-LOC", "E-LOC"]}])
    with pytest.raises(DataError, match="'E-LOC' does not fit the BIO scheme"):
        TokenClassification().load_splits(DataConfig(train=train, validation=train, test=train, tag_scheme="BIO"))


def test_tokens_and_tags_of_different_lengths_name_the_row(tmp_path):
    rows = [{"tokens": list("北京"), "tags": ["B-LOC", "I-LOC"]}, {"tokens": list("上海"), "tags": ["B-LOC"]}]
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError, match=r"t.jsonl row 2: 2 tokens .* but 1 tags"):
        TokenClassification().load_splits(DataConfig(train=train, validation=train, test=train))


def test_a_string_instead_of_a_list_is_explained(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [{"tokens": "北京", "tags": ["B-LOC", "I-LOC"]}])
    with pytest.raises(DataError, match="expected a list of strings"):
        TokenClassification().load_splits(DataConfig(train=train, validation=train, test=train))


def test_tags_unseen_in_training_name_the_file(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"tokens": list("北京"), "tags": ["B-LOC", "I-LOC"]}])
    test = write_jsonl(tmp_path / "test.jsonl", [{"tokens": list("张三"), "tags": ["B-PER", "I-PER"]}])
    with pytest.raises(DataError, match=r"test.jsonl: tags \['B-PER', 'I-PER'\] \(first at row 1\)"):
        TokenClassification().load_splits(DataConfig(train=train, validation=train, test=test))


def test_a_type_seen_only_as_b_in_training_still_reads_its_i_in_test(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"tokens": list("京城"), "tags": ["B-LOC", "O"]}])
    test = write_jsonl(tmp_path / "test.jsonl", [{"tokens": list("北京"), "tags": ["B-LOC", "I-LOC"]}])
    splits = TokenClassification().load_splits(DataConfig(train=train, validation=train, test=test))
    assert splits.label_names == ["O", "B-LOC", "I-LOC"]


def test_an_empty_sentence_is_dropped(tmp_path, caplog):
    rows = [{"tokens": list("北京"), "tags": ["B-LOC", "I-LOC"]}] * 19 + [{"tokens": [], "tags": []}]
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        splits = TokenClassification().load_splits(DataConfig(train=train, validation=train, test=train))
    assert len(splits.data["train"]) == 19 and "1 of 20 rows have no tokens" in caplog.text


def test_conll_files_read_like_jsonl(tmp_path):
    conll = tmp_path / "train.conll"
    conll.write_text("-DOCSTART- O\n\n张 B-PER\n三 I-PER\n去 O\n\n\n北 B-LOC\n京 I-LOC\n", encoding="utf-8")
    splits = TokenClassification().load_splits(DataConfig(train=str(conll), validation=str(conll),
                                                           test=str(conll)))
    assert splits.data["train"]["tokens"][:] == [["张", "三", "去"], ["北", "京"]]
    assert splits.record["sources"]["train"]["sha256"]
    bad = tmp_path / "bad.conll"
    bad.write_text("张 B-PER\n三\n", encoding="utf-8")
    with pytest.raises(DataError, match="bad.conll line 2"):
        TokenClassification().load_splits(DataConfig(train=str(bad), validation=str(conll), test=str(conll)))


# ---------------------------------------------------------------- config and metrics

def test_metric_names_and_forms():
    task = TokenClassification()
    assert task.metric_names(NER_NAMES) == ["val_precision", "val_recall", "val_f1", "val_accuracy", "val_loss",
                                            "val_f1_LOC", "val_f1_PER"]
    assert task.metric_names(["S", "B", "E", "M"], "test") == ["test_precision", "test_recall", "test_f1",
                                                               "test_accuracy", "test_loss"]
    assert task.metric_form_ok("val_f1") and task.metric_form_ok("val_f1_PER.NAM")
    assert not task.metric_form_ok("val_macro_f1") and not task.metric_form_ok("f1")
    assert task.metric_problem("val_f1", "maximize") is None
    assert "minimize" in task.metric_problem("val_loss", "maximize")
    assert "val_f1_LOC" in task.metric_problem("val_f1_ORG", "maximize", NER_NAMES)


def test_config_problems_catch_an_overlap_that_fills_the_window():
    cfg = ExperimentConfig(task="token_classification", training=TrainingConfig(max_length=64, window_overlap=32))
    assert TokenClassification(cfg).config_problems(cfg) == []
    cfg = ExperimentConfig(task="token_classification", training=TrainingConfig(max_length=128, window_overlap=32),
                           space={"max_length": ParamSpace(choices=(32, 128))})
    assert any("window_overlap" in p for p in TokenClassification(cfg).config_problems(cfg))


def test_encoding_key_includes_the_overlap():
    def key(overlap):
        cfg = ExperimentConfig(task="token_classification", training=TrainingConfig(window_overlap=overlap))
        return TokenClassification(cfg).encoding_key()

    assert key(8) != key(16)


# ---------------------------------------------------------------- loss

def test_loss_ignores_unlabelled_positions_and_weights_tags():
    task = TokenClassification()
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [9.0, -9.0]]])
    labels = torch.tensor([[0, 0, -100]])
    expected = (torch.nn.functional.cross_entropy(logits[0, :2], labels[0, :2])).item()
    assert task.loss(logits, labels).item() == pytest.approx(expected)
    weighted = task.loss(logits, labels, torch.tensor([1.0, 5.0]))
    assert weighted.item() == pytest.approx(expected)  # only tag 0 is a target: its weight cancels in the mean
    nothing = task.loss(logits.requires_grad_(), torch.full((1, 3), -100))
    assert nothing.item() == 0.0 and torch.isfinite(nothing)
    nothing.backward()  # still a graph the loop can step through
    assert task.dummy_labels(2, 7, 5, "cpu").shape == (2, 7)


def test_class_weights_are_inverse_tag_frequencies(ner_dir):
    task = TokenClassification()
    splits = task.load_splits(files(ner_dir))
    assert task.loss_weights(splits, TrainingConfig()) is None
    weights = task.loss_weights(splits, TrainingConfig(imbalance="class_weights"))
    counts = task.label_counts(splits, "train")
    total = sum(counts.values())
    assert weights.tolist() == pytest.approx([total / (5 * counts[n]) for n in NER_NAMES])
    assert weights[0] < weights[2]  # O is the most frequent tag


# ---------------------------------------------------------------- gather and evaluate

def test_gather_round_trip_on_a_sentence_longer_than_max_length(zh_tokenizer):
    cfg = ExperimentConfig(task="token_classification", training=TrainingConfig(window_overlap=6))
    task = TokenClassification(cfg)
    rng = np.random.default_rng(1)
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    words = [["我", "们", "北", "京"][i] for i in rng.integers(0, 4, 90)]
    tags = [int(t) for t in rng.integers(0, 5, 90)]
    features = Features({"tokens": Sequence(Value("string")), "tags": Sequence(ClassLabel(names=NER_NAMES))})
    examples = Dataset.from_dict({"tokens": [words, ["我"]], "tags": [tags, [2]]}, features=features)
    encoded = task.encode(examples, zh_tokenizer, 24)
    assert len(encoded) > 4 and set(encoded.column_names) >= {"input_ids", "attention_mask", "labels", "example",
                                                              "word_index"}
    # An oracle's logits (the right tag at every labelled position) must come back word for word.
    rows = [np.where(np.asarray(lab)[:, None] == np.arange(5), 5.0, 0.0) for lab in encoded["labels"]]
    outputs = task.gather(rows, encoded)
    assert [o.shape for o in outputs] == [(90, 5), (1, 5)]
    assert outputs[0].argmax(-1).tolist() == tags and outputs[1].argmax(-1).tolist() == [2]
    ev = task.evaluate(outputs, examples, NER_NAMES, "val")
    assert ev.metrics["val_accuracy"] == 1.0 and ev.metrics["val_f1"] == 1.0


def test_evaluate_on_a_hand_case():
    from datasets import Dataset

    examples = Dataset.from_dict({"tokens": [list("张三在北京"), list("我")],
                                  "tags": [[2, 4, 0, 1, 3], [0]]})
    # The PER is right, the LOC is cut short (B-LOC O), the second sentence is right.
    outputs = [one_hot([2, 4, 0, 1, 0]), one_hot([0])]
    task = TokenClassification()
    ev = task.evaluate(outputs, examples, NER_NAMES, "test")
    m = ev.metrics
    assert sorted(m) == sorted(task.metric_names(NER_NAMES, "test"))
    assert (m["test_precision"], m["test_recall"], m["test_f1"]) == (0.5, 0.5, 0.5)
    assert m["test_f1_PER"] == 1.0 and m["test_f1_LOC"] == 0.0
    assert m["test_accuracy"] == pytest.approx(5 / 6)
    assert m["test_loss"] == pytest.approx(-np.log(1e-12) / 6)
    assert ev.predictions[0] == ["B-PER", "I-PER", "O", "B-LOC", "O"] and ev.post == {}
    scores, errors = task.artifacts(ev, outputs, examples, NER_NAMES, "test")
    assert scores.name == "tag_scores_test.json" and errors.name == "tag_errors_test.json"
    assert list(scores.value.columns) == ["type", "support", "precision", "recall", "f1"]
    assert scores.value["type"].tolist() == ["LOC", "PER", "all"]
    assert errors.value.to_dict("records") == [{"sentence": "张三在北京", "gold": "张三 (PER); 北京 (LOC)",
                                                "predicted": "张三 (PER); 北 (LOC)"}]


def test_evaluate_bmes_scores_words():
    from datasets import Dataset

    names = ["S", "B", "E", "M"]
    examples = Dataset.from_dict({"tokens": [list("共同创造美好")], "tags": [[1, 2, 1, 2, 1, 2]]})
    outputs = [np.eye(4, dtype=np.float32)[[1, 2, 0, 0, 1, 2]]]  # 共同 / 创 / 造 / 美好
    task = TokenClassification()
    m = task.evaluate(outputs, examples, names, "val").metrics
    assert sorted(m) == sorted(task.metric_names(names))
    assert m["val_precision"] == pytest.approx(2 / 4) and m["val_recall"] == pytest.approx(2 / 3)
    # A sentence whose last word the tokenizer dropped: gather's array is one word short, and that
    # word becomes a word of its own (S).
    m = task.evaluate([outputs[0][:5]], examples, names, "val").metrics
    assert m["val_accuracy"] == pytest.approx(3 / 6)  # B E . . B right; the padded S against E wrong


# ---------------------------------------------------------------- baseline

def test_crf_baseline_learns_the_synthetic_entities(ner_dir):
    task = TokenClassification()
    splits = task.load_splits(files(ner_dir))
    out = task.baseline(splits, 0)
    assert set(out) == {f"baseline_{p}_{m}" for p in ("val", "test") for m in ("f1", "precision", "recall")}
    assert out["baseline_val_f1"] > 0.8 and out["baseline_test_f1"] > 0.8


# ---------------------------------------------------------------- the model

def test_a_tiny_chinese_model_trains_a_step_and_evaluates(ner_dir, tiny_zh_model, zh_tokenizer, tmp_path):
    from orchestrator.models.heads import load_encoder
    from orchestrator.tasks.token_classification.heads import TokenClassifier

    cfg = ExperimentConfig(task="token_classification", training=TrainingConfig(window_overlap=4))
    task = TokenClassification(cfg)
    splits = task.load_splits(files(ner_dir))
    collate = task.collator(zh_tokenizer)
    encoded = task.encode(splits.data["train"], zh_tokenizer, 12)  # short: most sentences need windows
    assert len(encoded) > len(splits.data["train"])

    def batches(dataset, size=8):
        for start in range(0, len(dataset), size):
            rows = dataset.select(range(start, min(start + size, len(dataset))))
            yield collate([{k: v for k, v in r.items() if k not in task.meta_columns} for r in rows])

    torch.manual_seed(0)
    model = task.build_model(load_encoder(str(tiny_zh_model), pooler=False), splits.num_labels, cfg.training)
    assert isinstance(model, TokenClassifier) and model.head == "linear"
    model.apply_strategy("full")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = model.classifier.weight.detach().clone()
    batch = next(batches(encoded))
    labels = batch.pop("labels")
    logits = model(**batch)
    assert logits.shape == (*batch["input_ids"].shape, splits.num_labels)
    loss = task.loss(logits, labels, task.loss_weights(splits, TrainingConfig(imbalance="class_weights")))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.classifier.weight)

    model.eval()
    val = task.encode(splits.data["validation"], zh_tokenizer, 12)
    rows = []
    with torch.no_grad():
        for batch in batches(val):
            batch.pop("labels")
            out = model(**batch)
            rows += [out[i, :int(n)].numpy() for i, n in enumerate(batch["attention_mask"].sum(-1))]
    outputs = task.gather(rows, val)
    lengths = [len(t) for t in splits.data["validation"]["tokens"]]
    assert [o.shape for o in outputs] == [(n, splits.num_labels) for n in lengths]
    assert all(np.allclose(o.sum(-1), 1.0, atol=1e-5) for o in outputs)
    ev = task.evaluate(outputs, splits.data["validation"], splits.label_names, "val")
    assert sorted(ev.metrics) == sorted(task.metric_names(splits.label_names))
    assert all(0.0 <= v <= 1.0 for k, v in ev.metrics.items() if k != "val_loss")

    # Saved and loaded through TextClassifier's format, it predicts the same.
    folder = model.save(tmp_path / "ckpt", zh_tokenizer, {"label_names": splits.label_names})
    loaded, tokenizer, info = task.load_model(folder)
    assert isinstance(loaded, TokenClassifier) and info["label_names"] == splits.label_names
    batch = next(batches(val))
    batch.pop("labels")
    with torch.no_grad():
        assert torch.allclose(model(**batch), loaded(**batch), atol=1e-5)


def test_the_mlp_head_and_strategies(tiny_zh_model):
    from orchestrator.models.heads import HeadError, load_encoder
    from orchestrator.tasks.token_classification.heads import TokenClassifier

    model = TokenClassifier(load_encoder(str(tiny_zh_model)), 3, head="mlp", mlp_hidden=16)
    assert model.encoder.pooler is None  # dropped: it would get no gradient
    ids = torch.tensor([[2, 10, 11, 3]])
    assert model(ids, torch.ones_like(ids)).shape == (1, 4, 3)
    model.apply_strategy("frozen")
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.mlp.parameters())
    with pytest.raises(HeadError, match="not a token head"):
        TokenClassifier(load_encoder(str(tiny_zh_model)), 3, head="cls")


# ---------------------------------------------------------------- the registered model

def test_text_tokens_keep_character_offsets():
    assert text_tokens("我在 北京", "char") == [(0, 1), (1, 2), (3, 4), (4, 5)]
    assert text_tokens("  I live in  Paris", "whitespace") == [(2, 3), (4, 8), (9, 11), (13, 18)]


def test_saved_settings_and_examples_from_texts(ner_dir):
    task = TokenClassification()
    splits = task.load_splits(files(ner_dir))
    saved = task.saved_settings(splits)
    assert saved["tokenization"] == "char" and saved["scheme"] == "BIO"
    examples = task.examples_from_texts(["我在 北京", ""], saved)
    assert examples["tokens"][:] == [["我", "在", "北", "京"], []]
    assert task.examples_from_texts(["I live  here"], {"tokenization": "whitespace"})["tokens"][:] == [
        ["I", "live", "here"]]


def test_output_frame_gives_spans_with_character_offsets():
    task = TokenClassification()
    text = "我在 北京见张三"
    # tokens 我 在 北 京 见 张 三 ; the last word 三 has no output (dropped by a tokenizer): O
    outputs = [one_hot([0, 0, 1, 3, 0, 2])]
    frame = task.output_frame(outputs, [text], NER_NAMES, {}, {"tokenization": "char"})
    assert list(frame.columns) == ["spans"]
    assert frame["spans"][0] == [{"text": "北京", "label": "LOC", "start": 3, "end": 5},
                                 {"text": "张", "label": "PER", "start": 6, "end": 7}]
    assert text[3:5] == "北京"


def test_output_frame_segments_words_for_bmes():
    task = TokenClassification()
    names = ["S", "B", "E", "M"]
    frame = task.output_frame([np.eye(4)[[1, 2, 0, 1, 2]]], ["共同 的美好"], names, {}, {"tokenization": "char"})
    assert frame["words"][0] == ["共同", "的", "美好"]
    assert frame["spans"][0][0] == {"text": "共同", "label": "word", "start": 0, "end": 2}
    assert frame["spans"][0][2] == {"text": "美好", "label": "word", "start": 4, "end": 6}
