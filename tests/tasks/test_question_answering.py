"""question_answering: reading SQuAD JSON and flat files, answer checks, windows, merging, metrics
against hand-computed numbers, the no-answer threshold, bootstrap counts, the paragraph split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from orchestrator.config.schema import DataConfig
from orchestrator.data import DataError
from orchestrator.tasks import experiment_from_dict, get_task
from orchestrator.tasks.question_answering import metrics, windows
from orchestrator.tasks.question_answering.task import FEATURES, by_context

PARIS = "The Eiffel Tower is in Paris. It was built in 1889 for the world fair."
ROME = "Rome is the capital of Italy. The Colosseum stands in Rome."


def squad(paragraphs: list[tuple[str, list[dict]]]) -> dict:
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": c, "qas": qas}
                                                                     for c, qas in paragraphs]}]}


def qa(qid: str, question: str, context: str, answer: str | None) -> dict:
    answers = [] if answer is None else [{"text": answer, "answer_start": context.index(answer)}]
    return {"id": qid, "question": question, "answers": answers}


def write(path: Path, obj) -> str:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


def examples(rows: list[dict]) -> Dataset:
    """Rows of (id, question, context, answer text or None) as the task's examples."""
    return Dataset.from_dict({
        "question": [r["question"] for r in rows], "context": [r["context"] for r in rows],
        "id": [r["id"] for r in rows],
        "answers": [{"text": [] if r["answer"] is None else [r["answer"]],
                     "answer_start": [] if r["answer"] is None else [r["context"].index(r["answer"])]} for r in rows]},
        features=FEATURES)


@pytest.fixture
def task():
    return get_task("question_answering")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A fast BERT WordPiece tokenizer over the words these tests use."""
    from conftest import train_tiny_bert

    out = train_tiny_bert([PARIS, ROME, "where when what who is the in"] * 5, tmp_path_factory.mktemp("qa-bert"), 300)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(out))


# ---------------------------------------------------------------- reading

def test_squad_json_and_flat_files_read_alike(tmp_path, task):
    paragraphs = [(PARIS, [qa("p1", "Where is the tower?", PARIS, "Paris"), qa("p2", "When?", PARIS, "1889")]),
                  (ROME, [qa("r1", "What stands in Rome?", ROME, "The Colosseum")])]
    rows = [{"id": q["id"], "question": q["question"], "context": c,
             "answers": {"text": [a["text"] for a in q["answers"]],
                         "answer_start": [a["answer_start"] for a in q["answers"]]}}
            for c, qas in paragraphs for q in qas]
    (tmp_path / "flat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # A csv cell holds the answers as JSON, in the list-of-answers form.
    import csv

    with open(tmp_path / "flat.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "context", "answers"])
        for c, qas in paragraphs:
            for q in qas:
                w.writerow([q["id"], q["question"], c, json.dumps(q["answers"])])
    read = {}
    for name, location in (("squad", write(tmp_path / "squad.json", squad(paragraphs))),
                           ("jsonl", str(tmp_path / "flat.jsonl")), ("csv", str(tmp_path / "flat.csv"))):
        splits = task.load_splits(DataConfig(train=location, validation=location, test=location))
        read[name] = splits.data["validation"].to_dict()
    assert read["squad"] == read["jsonl"] == read["csv"]
    assert read["squad"]["id"] == ["p1", "p2", "r1"]
    assert read["squad"]["answers"][2] == {"text": ["The Colosseum"], "answer_start": [30]}
    assert splits.label_names == []


def test_an_answer_away_from_its_answer_start_is_refused_naming_the_question(tmp_path, task):
    bad = qa("q-17", "Where is the tower?", PARIS, "Paris")
    bad["answers"][0]["answer_start"] += 2
    location = write(tmp_path / "bad.json", squad([(PARIS, [qa("q-1", "When?", PARIS, "1889"), bad])]))
    with pytest.raises(DataError) as e:
        task.load_splits(DataConfig(train=location, validation=location, test=location))
    message = str(e.value)
    assert "bad.json" in message and "'q-17'" in message and "'Paris'" in message
    assert f"occurs at {PARIS.index('Paris')}" in message and "Fix answer_start" in message


def test_a_missing_answers_list_or_a_string_is_impossible_is_refused_not_read_as_unanswerable(tmp_path, task):
    """Was: a question without its `answers` key was trained as unanswerable, and SQuAD 2.0's
    is_impossible: "false" (a string) counted as true."""
    no_key = qa("q-9", "When?", PARIS, "1889")
    del no_key["answers"]
    location = write(tmp_path / "nokey.json", squad([(PARIS, [qa("q-1", "Where?", PARIS, "Paris"), no_key])]))
    with pytest.raises(DataError, match=r"nokey.json: question 'q-9' has no 'answers' list"):
        task.load_splits(DataConfig(train=location, validation=location, test=location))
    flagged = {**qa("q-3", "When?", PARIS, "1889"), "is_impossible": "false"}
    location = write(tmp_path / "flag.json", squad([(PARIS, [flagged])]))
    with pytest.raises(DataError, match=r"question 'q-3': is_impossible is 'false', not true or false"):
        task.load_splits(DataConfig(train=location, validation=location, test=location))


def test_unanswerable_questions_read_with_no_answer_and_label_cls(tmp_path, task, tokenizer):
    impossible = {"id": "u1", "question": "Who painted it?", "is_impossible": True,
                  "answers": [], "plausible_answers": [{"text": "Paris", "answer_start": 23}]}
    location = write(tmp_path / "v2.json", squad([(PARIS, [qa("a1", "Where?", PARIS, "Paris"), impossible,
                                                          {"id": "u2", "question": "Why?", "answers": []}])]))
    data = task.load_splits(DataConfig(train=location, validation=location, test=location)).data["test"]
    assert [a["text"] for a in data["answers"]] == [["Paris"], [], []]
    encoded = task.encode(data, tokenizer, 64)
    assert encoded["labels"][1] == [0, 0] and encoded["labels"][2] == [0, 0]
    s, e = encoded["labels"][0]
    assert s > 0 and PARIS[encoded["offsets"][0][s][0]:encoded["offsets"][0][e][1]].lower() == "paris"


def test_empty_questions_are_dropped_when_few_and_refused_when_many(tmp_path, task):
    qas = [qa(f"q{i}", "Where is it?", PARIS, "Paris") for i in range(12)]
    qas[3]["question"] = "  "
    location = write(tmp_path / "few.json", squad([(PARIS, qas)]))
    assert len(task.load_splits(DataConfig(train=location, validation=location, test=location)).data["test"]) == 11
    for q in qas[:5]:
        q["question"] = ""
    location = write(tmp_path / "many.json", squad([(PARIS, qas)]))
    with pytest.raises(DataError, match="no question or no context"):
        task.load_splits(DataConfig(train=location, validation=location, test=location))


# ---------------------------------------------------------------- windows and merging

def test_a_long_context_is_cut_into_windows_and_its_answer_labelled_in_a_later_one(tokenizer):
    context = " ".join(["the tower is in the city"] * 12) + " it was built in 1889."
    answer = "1889"
    encoded = windows.encode(["When was it built?"], [context], ["q"], tokenizer, max_length=32, doc_stride=8,
                             answers=[{"text": [answer], "answer_start": [context.index(answer)]}])
    assert len(encoded["input_ids"]) > 2 and set(encoded["example"]) == {0}
    assert all(len(ids) <= 32 for ids in encoded["input_ids"])
    labels = encoded["labels"]
    assert labels[0] == [0, 0]  # the answer is not in the first window: [CLS]
    holding = [w for w, (s, _) in enumerate(labels) if s > 0]
    assert holding and holding[-1] == len(labels) - 1
    w = holding[-1]
    s, e = labels[w]
    offsets = encoded["offsets"][w]
    assert context[offsets[s][0]:offsets[e][1]] == answer
    # Question tokens and special tokens can never be an answer; neighbouring windows share 8 tokens.
    assert offsets[0] == [-1, -1] and offsets[-1] == [-1, -1]
    context_tokens = [[tuple(o) for o in offs if o[0] >= 0] for offs in encoded["offsets"]]
    assert context_tokens[0][-8:] == context_tokens[1][:8]


def test_merge_picks_the_best_valid_span_over_windows():
    # Two windows of one question: position 0 is [CLS], 1 a question token, 2.. context tokens.
    offsets_a = [[-1, -1], [-1, -1], [0, 3], [4, 8], [9, 12], [-1, -1]]
    offsets_b = [[-1, -1], [-1, -1], [9, 12], [13, 17], [18, 22], [23, 27], [-1, -1]]
    a = np.full((6, 2), -5.0)
    a[4, 0], a[2, 1] = 9.0, 9.0  # its best start is after its best end: no span there
    a[1, 0], a[1, 1] = 20.0, 20.0  # the question token scores highest, and is never an answer
    a[2, 0], a[3, 1] = 3.0, 3.0
    b = np.full((7, 2), -5.0)
    b[3, 0], b[4, 1] = 6.0, 6.0  # a sure span: window a's probabilities are spread, b's are not
    out = windows.merge([a, b], [0, 0], [offsets_a, offsets_b], max_answer_length=3)
    assert out.shape == (1, 4)
    start, end, span, null = out[0]
    assert (start, end) == (13, 22)
    ls = windows.log_softmax(np.where(np.array([1, 0, 1, 1, 1, 1, 0], bool), b[:, 0], -np.inf))
    le = windows.log_softmax(np.where(np.array([1, 0, 1, 1, 1, 1, 0], bool), b[:, 1], -np.inf))
    assert span == pytest.approx(ls[3] + le[4])
    allowed_a = np.array([1, 0, 1, 1, 1, 0], bool)
    null_a = (windows.log_softmax(np.where(allowed_a, a[:, 0], -np.inf))[0]
              + windows.log_softmax(np.where(allowed_a, a[:, 1], -np.inf))[0])
    assert null == pytest.approx(min(null_a, ls[0] + le[0]))  # the window surest the answer is inside it
    alone = windows.merge([a], [0], [offsets_a], max_answer_length=3)[0]
    assert (alone[0], alone[1]) == (0, 3)  # within window a: (2, 2), start 3 + end 9, beats (2, 3) and (4, 4)
    c = np.full((7, 2), -5.0)
    c[2, 0], c[5, 1] = 8.0, 8.0  # a four-token span
    assert tuple(windows.merge([c], [0], [offsets_b], max_answer_length=4)[0, :2]) == (9, 27)
    assert tuple(windows.merge([c], [0], [offsets_b], max_answer_length=3)[0, :2]) == (9, 12)  # too long: cut


def test_a_question_too_long_for_a_window_is_named_in_data_and_cut_in_prediction(tokenizer):
    question = "where " * 30 + "is the tower?"
    with pytest.raises(windows.WindowError, match="'q-long'.*raise training.max_length"):
        windows.encode([question], [PARIS], ["q-long"], tokenizer, max_length=32, doc_stride=8,
                       answers=[{"text": ["Paris"], "answer_start": [PARIS.index("Paris")]}])
    encoded = windows.encode([question], [PARIS], ["q-long"], tokenizer, max_length=32, doc_stride=8, strict=False)
    assert all(len(ids) <= 32 for ids in encoded["input_ids"])
    assert sum(o[0] >= 0 for o in encoded["offsets"][0]) > 8


# ---------------------------------------------------------------- metrics

def test_squad_metrics_against_hand_computed_numbers():
    assert metrics.normalize("The  Eiffel Tower!") == "eiffel tower"
    assert metrics.squad_scores("the Eiffel Tower!", ["Eiffel tower"]) == (1.0, 1.0)
    # pred [eiffel, tower, in, paris], gold [eiffel, tower]: P 2/4, R 1, F1 2/3
    em, f1 = metrics.squad_scores("Eiffel Tower in Paris", ["The Eiffel Tower"])
    assert em == 0.0 and f1 == pytest.approx(2 / 3)
    # The best of the references: [paris] against [in, paris] is P 1, R 1/2, F1 2/3; against [paris] 1.
    assert metrics.squad_scores("Paris", ["in Paris", "paris."]) == (1.0, 1.0)
    assert metrics.squad_scores("", []) == (1.0, 1.0)  # no answer, rightly
    assert metrics.squad_scores("Paris", []) == (0.0, 0.0)
    counts = metrics.per_row(["Eiffel Tower in Paris", "1889", ""], [["The Eiffel Tower"], ["in 1889"], ["Rome"]], "en")
    # F1s 2/3, 2/3 ([1889] vs [in, 1889]), 0; EMs 0, 0, 0
    assert metrics.score(counts.sum(0)) == {"exact_match": 0.0, "f1": pytest.approx((2 / 3 + 2 / 3) / 3)}


def test_cmrc_metrics_against_hand_computed_numbers():
    assert metrics.language([ROME]) == "en" and metrics.language(["北京国安足球俱乐部在北京。"]) == "zh"
    assert metrics.segments("北京国安，在2006年") == ["北", "京", "国", "安", "在", "2006", "年"]
    # pred 7 tokens, gold 4, longest common substring 4: P 4/7, R 1, F1 8/11
    em, f1 = metrics.cmrc_scores("北京国安，在2006年", ["北京国安"])
    assert em == 0.0 and f1 == pytest.approx(8 / 11)
    assert metrics.cmrc_scores("《光荣和ω-force》", ["光荣和ω-force"]) == (1.0, 1.0)  # punctuation removed
    # Common characters that are not contiguous count only as the longest run: 国安 (2 of 3 and 2 of 4).
    em, f1 = metrics.cmrc_scores("国安队", ["北京国安"])
    assert f1 == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))


# ---------------------------------------------------------------- evaluate, post-processing, bootstrap

def _outputs(rows: list[dict], spans: list[tuple[str | None, float, float]]) -> np.ndarray:
    """Per row (answer text or None, span log-prob, no-answer log-prob) as `gather` gives them."""
    out = []
    for r, (text, span, null) in zip(rows, spans):
        s = r["context"].index(text) if text else -1
        out.append([s, s + len(text) if text else -1, span if text else windows.NO_SPAN, null])
    return np.array(out, dtype=np.float64)


ROWS = [{"id": "1", "question": "Where?", "context": PARIS, "answer": "Paris"},
        {"id": "2", "question": "When?", "context": PARIS, "answer": "1889"},
        {"id": "3", "question": "Who?", "context": ROME, "answer": None},
        {"id": "4", "question": "What?", "context": ROME, "answer": "The Colosseum"}]


def test_evaluate_fits_a_no_answer_threshold_where_validation_has_unanswerable_questions(task):
    data = examples(ROWS)
    outputs = _outputs(ROWS, [("Paris", -0.1, -5.0), ("in 1889", -0.5, -4.0), ("Rome", -2.0, -0.2),
                              ("Colosseum", -0.3, -6.0)])
    val = task.evaluate(outputs, data, [], "val")
    assert val.predictions == ["Paris", "in 1889", "", "Colosseum"]  # margin 1.8 > threshold, the others far below
    threshold = val.post["null_threshold"]
    assert -3.7 <= threshold < 1.8
    # EM 1, 0, 1, 1 (colosseum and the colosseum: articles go); F1 1, 2/3 ([in, 1889] vs [1889]), 1, 1
    assert val.metrics == {"val_exact_match": 0.75, "val_f1": pytest.approx((3 + 2 / 3) / 4)}
    # The fitted post-processing applies as it is to other data; without unanswerable questions none is fitted.
    assert task.evaluate(outputs, data, [], "test", val.post).predictions == val.predictions
    answered = [r for r in ROWS if r["answer"]]
    plain = task.evaluate(_outputs(answered, [(r["answer"], -0.1, 0.0) for r in answered]), examples(answered), [],
                          "val")
    assert plain.post == {}


def test_row_stats_reproduce_evaluate_exactly(task):
    from orchestrator.tasks.bootstrap import confidence_intervals

    rng = np.random.default_rng(0)
    rows = ROWS * 13
    spans = [(r["answer"] if rng.random() < 0.6 else None, float(-rng.random()), float(-3 * rng.random()))
             for r in rows]
    spans = [(s if s is not None else "Eiffel Tower", a, b) if r["context"] == PARIS and s is None else (s, a, b)
             for r, (s, a, b) in zip(rows, spans)]
    data = examples(rows)
    evaluation = task.evaluate(_outputs(rows, spans), data, [], "test", {})
    stats = task.row_stats(evaluation, data, [])
    assert stats.counts.shape == (len(rows), 3)
    assert {f"test_{k}": v for k, v in stats.point().items()} == evaluation.metrics
    low, high = confidence_intervals(stats, 200, seed=0)["f1"]
    assert low <= evaluation.metrics["test_f1"] <= high


def test_output_frame_gives_answer_offsets_and_score(task):
    rows = ROWS[:3]
    outputs = _outputs(rows, [("Paris", np.log(0.8), np.log(0.01)), ("1889", np.log(0.5), np.log(0.1)),
                              (None, 0.0, np.log(0.9))])
    frame = task.output_frame(outputs, [(r["question"], r["context"]) for r in rows], [], {}, {})
    assert list(frame.columns) == ["answer", "start", "end", "score"]
    assert frame["answer"].tolist() == ["Paris", "1889", ""]
    assert frame["start"].tolist() == [PARIS.index("Paris"), PARIS.index("1889"), -1]
    assert PARIS[frame["start"][0]:frame["end"][0]] == "Paris"
    assert frame["score"].tolist() == pytest.approx([0.8, 0.5, 0.9])
    assert task.input_columns({}) == ("question", "context")
    assert task.inputs(examples(rows), {})[0] == ("Where?", PARIS)


def test_the_model_answers_through_encode_and_gather(task, tokenizer):
    """Untrained, through the real path: encode, a span model's logits, gather, evaluate, output."""
    import torch
    from transformers import AutoModel

    from orchestrator.training.loop import collect_logits, model_inputs
    from orchestrator.tasks.question_answering.heads import SpanExtractor

    task.restore({"doc_stride": 4, "max_answer_length": 5})
    model = SpanExtractor(AutoModel.from_pretrained(tokenizer.name_or_path), num_labels=0)
    data = examples(ROWS)
    encoded = task.encode(data, tokenizer, 16)
    assert len(encoded) > len(ROWS)  # contexts longer than a window
    loader = torch.utils.data.DataLoader(model_inputs(encoded), batch_size=3, collate_fn=task.collator(tokenizer))
    batch = next(iter(torch.utils.data.DataLoader(model_inputs(encoded), batch_size=3,
                                                  collate_fn=task.collator(tokenizer))))
    assert task.loss(model(**{k: v for k, v in batch.items() if k != "labels"}), batch["labels"]).ndim == 0
    outputs = task.gather(collect_logits(model, iter(loader)), encoded)
    assert outputs.shape == (len(ROWS), 4)
    evaluation = task.evaluate(outputs, data, [], "val")
    assert set(evaluation.metrics) == {"val_exact_match", "val_f1"}
    frame = task.output_frame(outputs, task.inputs(data, {}), [], evaluation.post, {})
    for (question, context), row in zip(task.inputs(data, {}), frame.itertuples()):
        assert row.answer == (context[row.start:row.end] if row.start >= 0 else "")


def test_a_request_whose_every_row_misses_an_input_gets_no_answer(tmp_path, tokenizer):
    """Was: the tokenizer failed on the empty batch (IndexError), so a one-row request with no
    context crashed `predict` and `serve` instead of answering None."""
    from transformers import AutoModel

    from orchestrator.tasks.question_answering.heads import SpanExtractor
    from orchestrator.training.saved_model import Classifier

    folder = SpanExtractor(AutoModel.from_pretrained(tokenizer.name_or_path), num_labels=0).save(
        tmp_path / "reader", tokenizer, {"task": "question_answering", "label_names": [], "max_length": 32,
                                         "saved": {"doc_stride": 8, "max_answer_length": 5}})
    reader = Classifier(folder, device="cpu")
    assert reader.input_columns == ("question", "context")
    for question, context in (("When?", None), (None, PARIS), ("   ", "")):
        frame = reader.predict_frame({"question": [question], "context": [context]})
        assert frame["answer"].tolist() == [None]
    with pytest.raises(ValueError, match="takes 2 inputs per row"):
        reader.predict_frame(["When was it built?"])


# ---------------------------------------------------------------- split, baseline, config

def test_carved_splits_keep_paragraphs_together(tmp_path, task):
    paragraphs = []
    for p in range(30):
        context = f"Paragraph {p} says the tower is in Paris. It was built in {1800 + p}."
        paragraphs.append((context, [qa(f"{p}-{q}", f"Question {q}?", context, "Paris") for q in range(1 + p % 4)]))
    location = write(tmp_path / "train.json", squad(paragraphs))
    splits = task.load_splits(DataConfig(train=location, max_train_rows=20))
    seen = {split: set(splits.data[split]["context"]) for split in ("train", "validation", "test")}
    assert not (seen["train"] & seen["validation"] or seen["train"] & seen["test"] or seen["validation"] & seen["test"])
    assert len(splits.data["train"]) <= 20
    for split, contexts in seen.items():  # every paragraph's questions all in its split
        count = {c: sum(1 for x in splits.data[split]["context"] if x == c) for c in contexts}
        assert all(count[c] == len(dict(paragraphs)[c]) for c in contexts)
    again = task.load_splits(DataConfig(train=location, max_train_rows=20))
    assert again.data["test"]["id"] == splits.data["test"]["id"]  # seeded by data.seed
    one = Dataset.from_dict({"context": [PARIS] * 4})
    with pytest.raises(DataError, match="one context"):
        by_context(one, 0.5, 0, "train.json")


def test_baseline_answers_from_the_context(tmp_path, task):
    paragraphs = [(PARIS, [qa("p1", "Where is the Eiffel Tower?", PARIS, "Paris"),
                           qa("p2", "When was it built?", PARIS, "1889")]),
                  (ROME, [qa("r1", "What stands in Rome?", ROME, "The Colosseum")])]
    location = write(tmp_path / "s.json", squad(paragraphs))
    splits = task.load_splits(DataConfig(train=location, validation=location, test=location))
    scores, test = task.baseline_run(splits, 0)
    assert set(scores) == {"baseline_val_f1", "baseline_test_f1", "baseline_val_exact_match",
                           "baseline_test_exact_match"}
    assert len(test.predictions) == 3 and all(p in PARIS or p in ROME for p in test.predictions)
    stats = task.row_stats(test, splits.data["test"], [])
    assert stats.point()["f1"] == pytest.approx(scores["baseline_test_f1"])


def test_config_problems_name_the_keys():
    def problems(**sections):
        from orchestrator.config import ConfigError

        try:
            experiment_from_dict({"task": "question_answering", "data": {"train": "t.json"}, **sections})
        except ConfigError as e:
            return str(e)
        return ""

    assert problems(training={"max_length": 384}) == ""
    found = problems()  # doc_stride 128 and max_length 128 by default
    assert "training.doc_stride (128)" in found and "training.max_length (128)" in found
    found = problems(training={"max_length": 256}, space={"doc_stride": {"choices": [64, 96]}})
    assert "space.doc_stride" in found
    assert "training.eval_subsample" in problems(training={"max_length": 256, "eval_subsample": 10})
    assert "search.metric" in problems(training={"max_length": 256}, search={"metric": "val_macro_f1"})
    cfg = experiment_from_dict({"task": "question_answering", "data": {"train": "t.json"},
                                "training": {"max_length": 256}})
    assert (cfg.search.metric, cfg.search.direction, cfg.training.head) == ("val_f1", "maximize", "linear")
