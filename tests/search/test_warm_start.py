"""`search.warm_start` on real SQLite Optuna storages: a finished study's best configurations are
queued first in a new study, in this space's terms, once; a source that cannot be used is refused
naming the key, with nothing created."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import make_rows, write_csv
from mlflow import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from orchestrator import cli
from orchestrator.config import ConfigError
from orchestrator.data import DataError
from orchestrator.search.preflight import preflight
from orchestrator.search.study import Sampling, StudyLock, claim, create_study, make_storage
from orchestrator.search.warm_start import DONE, FROM, enqueue, note, read_warm_start, record, tags
from orchestrator.tasks import experiment_from_dict

SPACE = {"learning_rate": {"low": 5e-4, "high": 5e-3, "log": True}, "batch_size": [8, 16]}
DISTRIBUTIONS = {"learning_rate": FloatDistribution(1e-4, 1e-1, log=True),
                 "batch_size": CategoricalDistribution([8, 16, 32, 64]),
                 "weight_decay": FloatDistribution(0.0, 0.1), "dropout": FloatDistribution(0.0, 0.5)}
# The source's trials, by number. Best first by value: 1, 2, 3, 4, 0.
FINISHED = [
    ({"learning_rate": 1e-3, "batch_size": 16, "weight_decay": 0.01}, 0.70),
    ({"learning_rate": 2e-3, "batch_size": 8, "weight_decay": 0.0}, 0.90),
    ({"learning_rate": 1e-2, "batch_size": 16, "weight_decay": 0.0}, 0.85),  # learning_rate outside this space
    ({"learning_rate": 2e-3, "batch_size": 8, "weight_decay": 0.1}, 0.80),  # trial 1 again, once wd is left out
    ({"learning_rate": 3e-3, "batch_size": 64, "weight_decay": 0.0}, 0.75),  # batch_size not among the choices
]


def _source(url: str, name: str, trials=FINISHED, direction: str = "maximize", failed: int = 1) -> None:
    study = optuna.create_study(study_name=name, storage=url, direction=direction)
    for params, value in trials:
        study.add_trial(create_trial(params=params, value=value,
                                     distributions={k: DISTRIBUTIONS[k] for k in params}))
    for _ in range(failed):
        study.add_trial(create_trial(state=TrialState.FAIL, params=FINISHED[0][0],
                                     distributions={k: DISTRIBUTIONS[k] for k in FINISHED[0][0]}))


def _experiment(tmp_path: Path, **search):
    return experiment_from_dict({"name": "new", "data": {"train": "a.csv"}, "space": SPACE,
                                 "search": {"storage": f"sqlite:///{tmp_path / 'optuna.db'}", **search}})


def _files(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def test_the_best_configurations_run_first_in_this_spaces_terms(tmp_path):
    cfg = _experiment(tmp_path, warm_start="old", warm_start_trials=3)
    _source(cfg.search.storage, "old")
    plan = read_warm_start(cfg)
    # Best first; a value this space cannot take drops that parameter only; trial 3 repeats trial 1.
    assert plan.source == "old"
    assert plan.configurations == [(1, {"learning_rate": 2e-3, "batch_size": 8}), (2, {"batch_size": 16}),
                                   (4, {"learning_rate": 3e-3})]
    assert plan.left_out[0] == "weight_decay (not searched here)"
    assert "learning_rate=0.01 (trial 2)" in plan.left_out[1] and "batch_size=64 (trial 4)" in plan.left_out[1]

    study, lock = create_study(cfg, make_storage(cfg.search)), StudyLock(cfg.search.storage, cfg.study_name)
    with lock():
        done = enqueue(study, plan)
    assert done == record(study) == study.user_attrs[DONE]
    assert done["trials"] == [[0, 1], [1, 2], [2, 4]]
    assert tags(done) == {"warm_start": "old", "warm_start_trials": "0,1,2"}
    assert note(done).startswith("warm start: 3 configuration(s) from old (its trials 1, 2, 4) queued first as "
                                 "trials 0, 1, 2; left out: weight_decay (not searched here)")

    # The claim loop takes them before sampling anything; what they leave out is sampled.
    sampling = Sampling(cfg.space, cfg.training, cfg.search)
    claimed = [claim(study, 10, lock, sampling) for _ in range(4)]
    assert [t.number for t in claimed] == [0, 1, 2, 3]
    assert claimed[0].params == {"learning_rate": 2e-3, "batch_size": 8}
    assert claimed[1].params["batch_size"] == 16 and 5e-4 <= claimed[1].params["learning_rate"] <= 5e-3
    assert claimed[2].params["learning_rate"] == 3e-3 and claimed[2].params["batch_size"] in (8, 16)
    attrs = [study.trials[n].user_attrs.get(FROM) for n in range(4)]
    assert attrs == ["old#1", "old#2", "old#4", None]


def test_a_minimised_study_gives_its_lowest_values_and_a_url_names_its_study(tmp_path):
    other = f"sqlite:///{tmp_path / 'other.db'}"
    _source(other, "losses", direction="minimize")
    _source(other, "unrelated", trials=FINISHED[:1])
    cfg = _experiment(tmp_path, warm_start=f"{other}#losses", warm_start_trials=2)
    plan = read_warm_start(cfg)
    assert plan.source == f"{other}#losses"
    assert plan.configurations == [(0, {"learning_rate": 1e-3, "batch_size": 16}), (4, {"learning_rate": 3e-3})]
    # A storage holding one study needs no #name.
    _source(f"sqlite:///{tmp_path / 'one.db'}", "only")
    assert read_warm_start(_experiment(tmp_path, warm_start=f"sqlite:///{tmp_path / 'one.db'}")).source.endswith(
        "one.db#only")


def test_a_resumed_study_or_a_second_process_queues_nothing_again(tmp_path):
    cfg = _experiment(tmp_path, warm_start="old", warm_start_trials=2)
    _source(cfg.search.storage, "old")
    plan = read_warm_start(cfg)
    study, lock = create_study(cfg, make_storage(cfg.search)), StudyLock(cfg.search.storage, cfg.study_name)
    with lock():
        assert enqueue(study, plan) is not None
    with lock():  # another process that read the source before the first one queued
        assert enqueue(study, plan) is None
    sampling = Sampling(cfg.space, cfg.training, cfg.search)
    for _ in range(3):
        trial = claim(study, 10, lock, sampling)
        study.tell(trial, 0.5)
    # Resumed: the source is not read again (it may be gone by now), and nothing more is queued.
    optuna.delete_study(study_name="old", storage=cfg.search.storage)
    assert read_warm_start(cfg) is None
    study = create_study(cfg, make_storage(cfg.search))
    ran = [t for t in study.trials if "duplicate_of" not in t.user_attrs]  # a discarded sample never ran
    assert [t.user_attrs.get(FROM) for t in ran] == ["old#1", "old#2", None]
    assert not study.get_trials(states=(TrialState.WAITING,))
    # The seed of a sample is its trial's own number: nothing after the warm start was discarded.
    assert not [t for t in study.trials if "duplicate_of" in t.user_attrs]
    # A study takes one warm start: resuming it with another source is refused, naming both.
    with pytest.raises(DataError, match=r"search.warm_start: study 'new' took its warm start from old already"):
        read_warm_start(_experiment(tmp_path, warm_start="older", warm_start_trials=2))


def test_a_configuration_the_study_ran_already_is_not_queued(tmp_path):
    cfg = _experiment(tmp_path, warm_start="old", warm_start_trials=1)
    _source(cfg.search.storage, "old")
    study = create_study(cfg, make_storage(cfg.search))
    study.enqueue_trial({"learning_rate": 2e-3, "batch_size": 8})  # this study's own trial, before warm start
    with StudyLock(cfg.search.storage, cfg.study_name)():
        done = enqueue(study, read_warm_start(cfg))
    assert done["trials"] == [] and len(study.trials) == 1
    assert note(done).startswith("warm start: 0 configuration(s) from old")


BAD = {
    "no such study": ("old", None, "search.warm_start: sqlite:///{db} holds no study named 'old' (it holds 'else', 'new')"),
    "this study": ("new", None, "search.warm_start: 'new' is this study itself (search.study_name=new)"),
    "no storage": ("sqlite:///{tmp}/missing.db#old", None,
                   "search.warm_start: no Optuna storage at sqlite:///{tmp}/missing.db (the file"),
    "not a database": ("sqlite:///{tmp}/notes.txt", None, "search.warm_start: cannot read the Optuna storage"),
    "no Optuna tables": ("sqlite:///{tmp}/other.db", None, "search.warm_start: sqlite:///{tmp}/other.db holds no "
                                                           "Optuna study at all; set search.warm_start to"),
    "several studies": ("sqlite:///{db}", None, "search.warm_start: sqlite:///{db} holds 2 studies ('else', "
                                                "'new'); name one after a #: sqlite:///{db}#else"),
    "nothing complete": ("sqlite:///{tmp}/src.db", [], "search.warm_start: sqlite:///{tmp}/src.db#src has no "
                                                       "COMPLETE trial to start from (its trials: 1 FAIL)"),
    "other parameters": ("sqlite:///{tmp}/src.db", [({"weight_decay": 0.0, "dropout": 0.1}, 0.9)],
                         "search.warm_start: none of sqlite:///{tmp}/src.db#src's parameters (dropout, weight_decay) "
                         "is searched in this experiment's space (learning_rate, batch_size)"),
    "nothing fits": ("sqlite:///{tmp}/src.db", [({"learning_rate": 0.05, "batch_size": 32}, 0.9)],
                     "search.warm_start: none of sqlite:///{tmp}/src.db#src's COMPLETE trials has a configuration "
                     "this space can take: batch_size=32 (trial 0), learning_rate=0.05 (trial 0) (outside this space)"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_source_that_cannot_be_used_is_refused_naming_the_key_and_nothing_is_created(tmp_path, case):
    source, trials, message = BAD[case]
    db = tmp_path / "optuna.db"
    optuna.create_study(study_name="new", storage=f"sqlite:///{db}", direction="maximize")  # this study, not warm
    optuna.create_study(study_name="else", storage=f"sqlite:///{db}")
    (tmp_path / "notes.txt").write_text("not a database\n")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE notes (text)").connection.commit()
    if trials is not None:
        _source(f"sqlite:///{tmp_path / 'src.db'}", "src", trials=trials)
    fill = {"db": db, "tmp": tmp_path}
    cfg = _experiment(tmp_path, warm_start=source.format(**fill))
    before, studies = _files(tmp_path), optuna.get_all_study_names(f"sqlite:///{db}")
    with pytest.raises(DataError) as e:
        read_warm_start(cfg)
    assert str(e.value).startswith(message.format(**fill))
    assert _files(tmp_path) == before and optuna.get_all_study_names(f"sqlite:///{db}") == studies


def test_preflight_reports_it_with_the_configs_other_problems_before_reading_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default stores and work folder are relative to here
    cfg = _experiment(tmp_path, warm_start="old")  # no storage yet; data a.csv does not exist either
    with pytest.raises(ConfigError) as e:
        preflight(cfg, None, 1)
    assert e.value.problems == [f"search.warm_start: no Optuna storage at sqlite:///{tmp_path / 'optuna.db'} (the "
                                f"file {tmp_path / 'optuna.db'} does not exist); set search.warm_start to a finished "
                                f"study: its name in search.storage, or its storage's URL (sqlite:///path.db, with "
                                f"#study_name where it holds several); or remove search.warm_start"]
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_search_runs_the_warm_start_first_and_says_so(tmp_path, monkeypatch, tiny_model, store, capsys):
    """The one real search here: two trials of one epoch on the tiny model, both from the source."""
    monkeypatch.chdir(tmp_path)
    source = f"sqlite:///{tmp_path / 'earlier.db'}"
    _source(source, "earlier")
    data = tmp_path / "data"
    for split, rows, seed in (("train", 60, 2), ("validation", 30, 3), ("test", 30, 4)):
        write_csv(data / f"{split}.csv", make_rows(rows, seed=seed))
    config = tmp_path / "warm.yaml"
    config.write_text(yaml.safe_dump({
        "name": "warm", "model": {"name_or_path": str(tiny_model)},
        "data": {split: str(data / f"{split}.csv") for split in ("train", "validation", "test")},
        "training": {"epochs": 1, "learning_rate": 2e-3, "batch_size": 16}, "space": SPACE,
        "search": {"n_trials": 2, "pruner": "none", "warm_start": source, "warm_start_trials": 2},
        "registry": {"register": False}}))
    assert cli.main(["search", "--config", str(config)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "warm start: 2 configuration(s) from" in out and "(its trials 1, 2) queued first as trials 0, 1" in out

    study = optuna.load_study(study_name="warm", storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")
    assert [(t.state, t.user_attrs[FROM]) for t in study.trials] == [
        (TrialState.COMPLETE, f"{source}#earlier#1"), (TrialState.COMPLETE, f"{source}#earlier#2")]
    assert study.trials[0].params == {"learning_rate": 2e-3, "batch_size": 8}
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("warm").experiment_id])
    parent = next(r for r in runs if "warm_start" in r.data.tags)
    assert parent.data.tags["warm_start"] == f"{source}#earlier" and parent.data.tags["warm_start_trials"] == "0,1"
    assert sorted(r.data.tags[FROM] for r in runs if FROM in r.data.tags) == [f"{source}#earlier#1",
                                                                            f"{source}#earlier#2"]
