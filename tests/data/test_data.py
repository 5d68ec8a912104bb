import zipfile

import pytest
from conftest import make_rows, write_csv

from orchestrator.config import paths
from orchestrator.config import DataConfig
from orchestrator.data import DataError, load_splits, tokenize
from orchestrator.tasks.single_label.task import SingleLabel
from orchestrator.models.heads import load_tokenizer


def test_given_files_keep_splits_and_share_train_label_set(data_dir):
    s = load_splits(DataConfig(train=str(data_dir / "train.csv"), validation=str(data_dir / "validation.csv"),
                               test=str(data_dir / "test.csv")), SingleLabel())
    assert s.label_names == ["negative", "neutral", "positive"]
    assert [len(s.data[k]) for k in ("train", "validation", "test")] == [120, 45, 45]
    assert s.data["train"].features["label"].names == s.label_names


def test_missing_splits_are_carved_stratified_with_a_seed(tmp_path):
    path = write_csv(tmp_path / "all.csv", make_rows(400, seed=5, weights=[0.7, 0.2, 0.1]))
    cfg = DataConfig(train=str(path), validation_size=0.2, test_size=0.25, seed=7)
    a, b = load_splits(cfg, SingleLabel()), load_splits(cfg, SingleLabel())
    assert sum(len(a.data[k]) for k in ("train", "validation", "test")) == 400
    assert list(a.data["test"]["text"]) == list(b.data["test"]["text"])  # same seed, same split
    total = {k: sum(load_splits(cfg, SingleLabel()).class_counts(s)[k] for s in ("train", "validation", "test"))
             for k in a.label_names}
    for split in ("train", "validation", "test"):
        share = a.class_counts(split)["positive"] / len(a.data[split])
        assert abs(share - total["positive"] / 400) < 0.03, split


def test_tsv_inside_a_zip_through_the_bang_syntax(tmp_path):
    tsv = write_csv(tmp_path / "reviews.tsv", make_rows(60, seed=1), text="review", label="rating", sep="\t")
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(tsv, "reviews.tsv")
    s = load_splits(DataConfig(train=f"{archive}!reviews.tsv", text_column="review", label_column="rating"),
                    SingleLabel())
    assert sum(len(d) for d in s.data.values()) == 60


def test_pkg_paths_resolve_inside_installed_packages():
    import yaml

    assert paths.resolve("pkg://yaml/__init__.py") == yaml.__file__
    with pytest.raises(paths.PathError, match="not installed"):
        paths.resolve("pkg://no_such_package_xyz/model")


def test_missing_column_names_the_columns_found(data_dir):
    with pytest.raises(DataError, match=r"\['review'\] not found; columns found: \['text', 'label'\]"):
        load_splits(DataConfig(train=str(data_dir / "train.csv"), text_column="review"), SingleLabel())


def test_single_class_and_unseen_labels_are_errors(tmp_path, data_dir):
    one = write_csv(tmp_path / "one.csv", make_rows(30, labels=("positive",)))
    with pytest.raises(DataError, match="single class"):
        load_splits(DataConfig(train=str(one)), SingleLabel())
    two = write_csv(tmp_path / "two.csv", make_rows(60, labels=("positive", "negative")))
    with pytest.raises(DataError, match=r"labels \['neutral'\].*do not occur in the training split"):
        load_splits(DataConfig(train=str(two), test=str(data_dir / "test.csv")), SingleLabel())


def test_tokenize_once_and_reuse(data_dir, tiny_model):
    s = load_splits(DataConfig(train=str(data_dir / "train.csv"), test=str(data_dir / "test.csv")), SingleLabel())
    tok = load_tokenizer(str(tiny_model))
    first = tokenize(s, tok, 16, None, SingleLabel())
    assert tokenize(s, tok, 16, None, SingleLabel()) is first
    assert max(len(x) for x in first["train"]["input_ids"]) <= 16
    assert {"input_ids", "attention_mask", "labels"} <= set(first["train"].column_names)


def test_a_bang_in_a_local_path_is_part_of_the_name(tmp_path):
    folder = tmp_path / "we!rd"
    s = load_splits(DataConfig(train=str(write_csv(folder / "train.csv", make_rows(60)))), SingleLabel())
    assert sum(len(d) for d in s.data.values()) == 60


def test_labels_with_unicode_digits_are_labels(tmp_path):
    rows = [{"text": f"text {i}", "label": ["²", "1", "10", "x"][i % 4]} for i in range(80)]
    s = load_splits(DataConfig(train=str(write_csv(tmp_path / "u.csv", rows))), SingleLabel())
    assert s.label_names == ["1", "10", "x", "²"]  # integers in numeric order, then the rest


def test_a_first_row_with_an_unquoted_delimiter_is_an_error_not_a_shifted_column(tmp_path):
    from orchestrator.data import DataError, read_table

    path = tmp_path / "in.csv"
    path.write_text("text\nThank you so much, this is wonderful!\nplain\n")
    # pandas alone would make "Thank you so much" the row's index and the text " this is wonderful!".
    with pytest.raises(DataError, match="more fields than the header.*quoted"):
        read_table(str(path), "--input")
    path.write_text('text\n"Thank you so much, this is wonderful!"\nplain\n')
    assert read_table(str(path), "--input")["text"].tolist() == ["Thank you so much, this is wonderful!", "plain"]


def test_the_baseline_reads_chinese_as_characters_and_english_as_words():
    from orchestrator.tasks.text_features import is_cjk, vectorizer

    assert is_cjk(["这家酒店的服务很好", "房间 clean 干净"]) and not is_cjk(["great hotel", "clean room 好"])
    assert vectorizer(["这家酒店的服务很好"]).analyzer == "char"
    assert vectorizer(["great hotel"]).analyzer == "word"
