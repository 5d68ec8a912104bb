"""The driver's side of a running trial: it alone calls Optuna. Events from the trial are
written to its Optuna trial, and the trial's questions ("prune now?", "keep my checkpoint?") are
answered from the study, with the experiment's pruner. Driven directly with `study.ask()` /
`study.tell()` on a real SQLite storage, no trial process."""

import pytest
from optuna.trial import TrialState

from orchestrator.config import from_dict
from orchestrator.execution.job import TrialOutcome
from orchestrator.search.launcher import TrialLauncher
from orchestrator.search.progress import StudyProgress
from orchestrator.search.study import PROBE_PREFIX, create_study, make_storage


def _launcher(tmp_path, pruner: str, keep: int = 3, direction: str = "maximize"):
    cfg = from_dict({"name": "driver", "data": {"train": "train.csv"}, "model": {"name_or_path": "m"},
                     "search": {"storage": f"sqlite:///{tmp_path / 'optuna.db'}", "pruner": pruner,
                                "keep_checkpoints": keep, "direction": direction,
                                "metric": "val_accuracy" if direction == "maximize" else "val_loss"}})
    study = create_study(cfg, make_storage(cfg.search))
    better = 1.0 if direction == "maximize" else 0.0
    for _ in range(6):  # finished trials that did far better at every epoch
        other = study.ask()
        for epoch in (1, 2, 3):
            other.report(better, epoch)
            other.should_prune()  # as the driver asks at each evaluation (successive halving records its rungs)
        study.tell(other, better)
    launcher = TrialLauncher(cfg, tmp_path, tmp_path, "m", "fp", "parent", _Executor(), StudyProgress(None),
                             10, None, None, None)
    trial = study.ask()
    launcher.running[trial.number] = trial
    return launcher, study, trial


class _Executor:
    slots = ["cpu0"]
    keeps_local_checkpoints = True


def _eval(launcher, trial, epoch, value=0.1):
    return launcher.on_event({"type": "eval", "trial": trial.number, "epoch": epoch, "value": value, "ask": True})


@pytest.mark.parametrize("pruner", ["none", "median"])
def test_the_driver_prunes_by_the_experiments_pruner(tmp_path, pruner):
    launcher, study, trial = _launcher(tmp_path, pruner)
    answers = [bool(_eval(launcher, trial, epoch)["prune"]) for epoch in (1, 2, 3)]
    # median: epochs before its warm-up (search.pruner_warmup_epochs) are never pruned.
    warmup = launcher.cfg.search.pruner_warmup_epochs
    assert answers == ([False, False, False] if pruner == "none" else [epoch >= warmup for epoch in (1, 2, 3)])
    assert pruner == "none" or answers[0] is False
    assert study.trials[trial.number].intermediate_values == {1: 0.1, 2: 0.1, 3: 0.1}


def test_evaluations_inside_epochs_are_the_pruners_steps(tmp_path):
    launcher, study, trial = _launcher(tmp_path, "successive_halving")
    answers = [launcher.on_event({"type": "eval", "trial": trial.number, "epoch": epoch, "evaluation": number,
                                  "value": 0.1, "ask": True})["prune"] for number, epoch in ((1, 0.5), (2, 1), (3, 1.5))]
    assert study.trials[trial.number].intermediate_values == {1: 0.1, 2: 0.1, 3: 0.1}
    # Far below the six finished trials at every rung (evaluations 1, 3, 9: reduction factor 3),
    # but rung 1 falls in the warm-up of 2 evaluations, so the next rung (3) is the first to stop it.
    assert answers == [False, False, True]


def test_the_trials_facts_and_probes_reach_the_study(tmp_path):
    launcher, study, trial = _launcher(tmp_path, "none")
    launcher.on_event({"type": "attrs", "trial": trial.number, "attrs": {"mlflow_run_id": "r1", "pid": 7}})
    launcher.on_event({"type": "probe", "trial": trial.number, "key": f"{PROBE_PREFIX}abc", "entry": {"batch_size": 64}})
    launcher.on_event({"type": "probe", "trial": trial.number, "key": "not-a-probe", "entry": {}})  # refused
    assert study.trials[trial.number].user_attrs == {"mlflow_run_id": "r1", "pid": 7}
    assert study.user_attrs[f"{PROBE_PREFIX}abc"] == {"batch_size": 64} and "not-a-probe" not in study.user_attrs
    # The next trial's job brings the cached probe: no trial needs the study to find it.
    assert launcher.job(study.ask()).probes == {f"{PROBE_PREFIX}abc": {"batch_size": 64}}
    launcher._record(trial, TrialOutcome("COMPLETE", 0.5, run_id="r1", checkpoint="/c", checkpoint_run="r1",
                                         timings={"train_seconds": 3.0, "eval_seconds": 1.0},
                                         attrs={"threshold_note": "n"}), 8.0)
    attrs = study.trials[trial.number].user_attrs
    assert (attrs["checkpoint"], attrs["checkpoint_run"], attrs["threshold_note"]) == ("/c", "r1", "n")
    assert attrs["wall_seconds"] == 8.0 and attrs["overhead_share"] == 0.5


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_checkpoint_is_kept_only_while_it_ranks_among_the_best(tmp_path, direction):
    launcher, study, trial = _launcher(tmp_path, "none", keep=2, direction=direction)
    keep = launcher.on_event({"type": "keep", "trial": trial.number, "value": 0.5, "ask": True})["keep"]
    assert keep is False  # six finished trials did better, in the study's direction
    study.tell(study.ask(), 0.5)
    launcher2, _, _ = launcher, None, None
    best = 2.0 if direction == "maximize" else -1.0
    assert launcher2.on_event({"type": "keep", "trial": trial.number, "value": best, "ask": True})["keep"] is True


def test_events_of_a_trial_that_is_not_running_here_are_progress_only(tmp_path):
    launcher, study, trial = _launcher(tmp_path, "median")
    assert launcher.on_event({"type": "eval", "trial": 999, "epoch": 1, "value": 0.0, "ask": True}) is None
    assert study.trials[trial.number].state == TrialState.RUNNING


def test_a_study_refuses_a_config_that_optimises_something_else(tmp_path):
    from orchestrator.data import DataError
    from orchestrator.search.study import check_objective

    _, study, _ = _launcher(tmp_path, "none")
    check_objective(study, "val_accuracy", "maximize")  # records what it optimises
    check_objective(study, "val_accuracy", "maximize")
    for metric, direction in (("val_loss", "minimize"), ("val_macro_f1", "maximize")):
        with pytest.raises(DataError, match="would not rank"):
            check_objective(study, metric, direction)
