"""Shared fixtures: a tiny BERT built from a config and a WordPiece tokenizer trained on the fly.

Nothing is downloaded: the model folder is written with `save_pretrained` into a temp dir and
loaded through the same code path as a real local model.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

# Costly fixtures built once per test process (session scope) or module: under pytest-xdist each
# worker that runs one of their tests would build its own, so their tests run on one worker
# (`--dist loadgroup`). fixture name -> group.
SHARED_FIXTURE_GROUPS = {
    "finished_search": "finished-search",  # a whole search (status, report, promote, ...)
    "ray_cluster": "cluster", "mlflow_server": "cluster", "s3": "cluster",  # tests/cluster's servers
    "server": "scoring-server",  # test_scoring: a `serve` process
    "two_versions": "promotion",  # test_promotion: a registry with two versions
    "evidence_search": "evidence-search",  # test_search_confirm: a confirmed, multi-objective search
}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        group = next((g for f, g in SHARED_FIXTURE_GROUPS.items() if f in getattr(item, "fixturenames", ())), None)
        if group and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))


WORDS = {
    "positive": "great excellent love wonderful happy best amazing good fantastic perfect".split(),
    "negative": "awful terrible hate horrible sad worst bad poor disgusting broken".split(),
    "neutral": "okay average fine normal plain usual moderate standard regular medium".split(),
}
FILLER = "the a this it was is product movie day service and but very really so".split()


def make_rows(n: int, seed: int = 0, labels=("positive", "negative", "neutral"), weights=None) -> list[dict]:
    """Synthetic reviews whose label is learnable from their words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choices(labels, weights=weights)[0]
        words = rng.choices(WORDS[label], k=3) + rng.choices(FILLER, k=rng.randint(3, 8))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_csv(path: Path, rows: list[dict], text="text", label="label", sep=",") -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow([text, label])
        for r in rows:
            w.writerow([r["text"], r["label"]])
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with a WordPiece tokenizer trained here, saved as safetensors."""
    return train_tiny_bert([r["text"] for r in make_rows(400, seed=1)], tmp_path_factory.mktemp("tiny-bert"), 200)


def train_tiny_bert(texts, out: Path, vocab_size: int = 400, segments: bool = False) -> Path:
    """`save_tiny_bert` over a WordPiece vocabulary learned here from `texts` (lower-cased; CJK
    characters one token each, as BERT's normalizer spaces them)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    Path(out).mkdir(parents=True, exist_ok=True)
    return save_tiny_bert(tok, Path(out), segments=segments)


def save_tiny_bert(tok, out: Path, segments: bool = False) -> Path:
    """A BERT-style fast tokenizer around `tok` and a 2-layer, 32-wide BertModel over its vocabulary,
    both saved into `out` like a real local model. `segments`: the tokenizer also returns
    `token_type_ids` (segment 1 for a pair's second text), as BERT's own does."""
    from tokenizers import processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=128,
                                   **({"model_input_names": ["input_ids", "token_type_ids", "attention_mask"]}
                                      if segments else {}))
    fast.save_pretrained(out)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(out)
    return out


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """train / validation / test CSVs of learnable synthetic reviews."""
    d = tmp_path / "data"
    write_csv(d / "train.csv", make_rows(120, seed=2))
    write_csv(d / "validation.csv", make_rows(45, seed=3))
    write_csv(d / "test.csv", make_rows(45, seed=4))
    return d


def tiny_experiment(path: Path, model: Path, data: Path, name: str, **sections) -> Path:
    """Write an experiment YAML over the tiny model and the `data_dir` CSVs; `sections` are merged
    into the defaults section by section (e.g. search={"n_trials": 3}); None removes a section."""
    import yaml

    cfg = {
        "name": name,
        "data": {"train": str(data / "train.csv"), "validation": str(data / "validation.csv"),
                 "test": str(data / "test.csv")},
        "model": {"name_or_path": str(model)},
        "training": {"epochs": 2, "learning_rate": 2e-3, "batch_size": 16},
        "space": {"learning_rate": {"low": 5e-4, "high": 5e-3, "log": True}},
        "search": {"pruner": "none"},
        # No ONNX exports unless a test asks (registry.export: true): they add seconds to every
        # registering search, and tests/search/test_search_confirm.py covers them.
        "registry": {"model_name": f"{name}-clf", "export": False},
    }
    for key, values in sections.items():
        if values is None:
            cfg.pop(key, None)
        else:
            cfg[key] = {**cfg.get(key, {}), **values}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, made once per test process. Making one runs every one of
    MLflow's schema migrations (about 8 s of a 2-core machine); a copy of this one opens at once.
    Tests of store creation itself (the first search on a fresh machine) do not use it."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("migrated-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


def seed_store(folder: Path, template: Path) -> str:
    """`folder/mlruns/mlflow.db` as a copy of the empty migrated store `template` (the
    `migrated_store` fixture), where a search run from `folder` keeps its runs by default.
    Returns its absolute URI."""
    target = folder / "mlruns" / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def store(tmp_path, migrated_store) -> str:
    """A real, empty MLflow store at `tmp_path/mlruns/mlflow.db` (the default for a search run
    from `tmp_path`), copied from `migrated_store`. Returns its absolute URI."""
    return seed_store(tmp_path, migrated_store)


POSTGRES_SCRIPT = Path(__file__).parents[1] / "scripts" / "postgres.sh"


def new_database(url: str, prefix: str) -> str:
    """The URL of a new, empty database on the server at `url`."""
    import secrets

    import sqlalchemy

    database = f"{prefix}_{secrets.token_hex(4)}"
    admin = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1),
                                     isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
    admin.dispose()
    return sqlalchemy.make_url(url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server: the one `.ci/run` starts (ORCHESTRATOR_TEST_POSTGRES), else one
    started here from the machine's PostgreSQL binaries. Under pytest-xdist each worker gets a
    database of its own, so two tests running at once never share a study name."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if os.environ.get("ORCHESTRATOR_TEST_POSTGRES"):
        url = os.environ["ORCHESTRATOR_TEST_POSTGRES"]
        yield new_database(url, f"optuna_{worker}") if worker else url
        return
    folder = tempfile.mkdtemp(prefix="orchestrator-pg-")  # under /tmp: the server's user must reach it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = subprocess.run(["bash", str(POSTGRES_SCRIPT), "start", folder, str(port)], capture_output=True,
                             text=True, env={**os.environ, "POSTGRES_NO_INSTALL": "1"})
    if started.returncode:
        pytest.skip(f"no PostgreSQL server could be started here (.ci/run starts one): {started.stderr[-300:]}")
    yield new_database(started.stdout.strip(), f"optuna_{worker}") if worker else started.stdout.strip()
    subprocess.run(["bash", str(POSTGRES_SCRIPT), "stop", folder], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def registered_model(tmp_path_factory, tiny_model, migrated_store):
    """A real SQLite MLflow store holding `tiny-clf` version 1 @champion: the tiny encoder with an
    untrained 3-class head, registered the way a search registers its champion.
    Returns (tracking URI, checkpoint folder)."""
    from orchestrator.registry import versions as registry
    from orchestrator.models.heads import TextClassifier, load_encoder, load_tokenizer
    from orchestrator.training.saved_model import Classifier
    from orchestrator.tracking.client import Tracker

    root = tmp_path_factory.mktemp("registry")
    checkpoint = TextClassifier(load_encoder(str(tiny_model)), 3).save(
        root / "checkpoint", load_tokenizer(str(tiny_model)),
        {"label_names": ["negative", "neutral", "positive"], "max_length": 32})
    uri = f"sqlite:///{root / 'mlflow.db'}"
    shutil.copyfile(migrated_store, root / "mlflow.db")
    tracker = Tracker(uri, "registered", str(root / "artifacts"))
    run = tracker.start_trial(tracker.study_run("registered", None, {}), "registered", 0, {})
    example = ["great product", "awful"]
    registry.register(tracker.client, "tiny-clf", run, checkpoint, 0.5, example,
                      Classifier(checkpoint).predict_frame(example), tags={"orchestrator_study": "registered"})
    return uri, checkpoint


@pytest.fixture
def trial_job(tmp_path, tiny_model, data_dir, monkeypatch, store):
    """(job, study): what the driver hands a trial process, for one claimed trial of a real study.
    The study's storage is not in the trial's environment: the trial never opens it."""
    import optuna

    from orchestrator.data import load_splits, save_splits
    from orchestrator.tasks import get_task
    from orchestrator.execution.job import TrialJob
    from orchestrator.tasks import experiment_from_dict
    from orchestrator.config.paths import absolute_sqlite
    from orchestrator.config.space import suggest
    from orchestrator.tracking.client import Tracker

    monkeypatch.chdir(tmp_path)
    cfg = experiment_from_dict({"name": "oom",
                                "data": {"train": str(data_dir / "train.csv"), "test": str(data_dir / "test.csv")},
                                "model": {"name_or_path": str(tiny_model)}, "training": {"epochs": 1, "batch_size": 16},
                                "space": {"learning_rate": {"low": 1e-4, "high": 1e-3, "log": True}}})
    storage = absolute_sqlite("sqlite:///mlruns/optuna.db")
    study = optuna.create_study(study_name="oom", storage=storage)
    trial = study.ask()
    suggest(trial, cfg.space, cfg.training)
    tracker = Tracker(cfg.tracking.uri, cfg.experiment_name, cfg.tracking.artifact_location)
    parent = tracker.study_run("oom", None, {})
    data = save_splits(load_splits(cfg.data, get_task(cfg.task, cfg)), tmp_path / "data")
    return TrialJob(number=trial.number, params=dict(trial.params), config=cfg.to_dict(),
                    source="test", model_path=str(tiny_model), model_fingerprint="tiny", parent_run_id=parent,
                    data_dir=str(data), checkpoint_dir=str(tmp_path / "ckpt")), study


@dataclass
class FinishedSearch:
    """A search that ran to the end: its experiment file, stores and folder."""
    config: Path
    folder: Path
    tracking_uri: str
    storage: str
    model_name: str = "done-clf"
    study_name: str = "done"


@pytest.fixture(scope="session")
def finished_search(tmp_path_factory, tiny_model, migrated_store) -> FinishedSearch:
    """One real `python -m orchestrator search` (tiny model, 3 trials of 2 epochs, median pruner),
    run once per test process and shared by the tests that read a study after it ran (status,
    report, serve, promote). Its stores are absolute paths, so tests may run from any folder; a
    test that changes the stores must make its own search."""
    from orchestrator.cli import main

    folder = tmp_path_factory.mktemp("finished")
    data = folder / "data"
    write_csv(data / "train.csv", make_rows(120, seed=2))
    write_csv(data / "validation.csv", make_rows(45, seed=3))
    write_csv(data / "test.csv", make_rows(45, seed=4))
    tracking, storage = seed_store(folder, migrated_store), f"sqlite:///{folder / 'mlruns' / 'optuna.db'}"
    config = tiny_experiment(folder / "done.yaml", tiny_model, data, "done",
                             training={"epochs": 2}, space={"head": ["cls", "mean"]},
                             search={"n_trials": 3, "seed": 1, "pruner": "median", "storage": storage,
                                     "work_dir": str(folder / "mlruns" / "studies")},
                             tracking={"uri": tracking, "artifact_location": str(folder / "mlruns" / "artifacts")})
    previous = os.getcwd()
    os.chdir(folder)
    try:
        assert main(["search", "--config", str(config)]) == 0
    finally:
        os.chdir(previous)
    return FinishedSearch(config, folder, tracking, storage)
