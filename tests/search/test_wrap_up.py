"""Checkpoints in the artifact store (a real embedded MLflow store): only the best
`keep_checkpoints` trials keep theirs, and the champion's is fetched by a process that never had it."""

import optuna
import pytest

from orchestrator.search.wrap_up import drop_stored_checkpoints, fetch_checkpoint
from orchestrator.tracking.client import CHECKPOINT_ARTIFACT, Tracker


@pytest.fixture
def stored(tmp_path):
    """A study of 4 finished trials and 1 failed, each finished one with a checkpoint in its run."""
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "ckpt", str(tmp_path / "artifacts"))
    study = optuna.create_study(direction="maximize")
    for number, value in enumerate([0.5, 0.9, 0.7, 0.6, None]):
        trial = study.ask()
        run = tracker.client.create_run(tracker.experiment_id).info.run_id
        folder = tmp_path / "trained" / f"trial-{number}"
        folder.mkdir(parents=True)
        (folder / "classifier.json").write_text(f'{{"trial": {number}}}')
        tracker.log_artifacts(run, folder, CHECKPOINT_ARTIFACT)
        trial.set_user_attr("checkpoint_run", run)
        study.tell(trial, value, state=optuna.trial.TrialState.FAIL if value is None else None)
    return tracker, study


def _kept(tracker, study) -> set[int]:
    return {t.number for t in study.trials
            if tracker.has_artifacts(t.user_attrs["checkpoint_run"], CHECKPOINT_ARTIFACT)}


def test_only_the_best_trials_keep_their_stored_checkpoints(stored):
    tracker, study = stored
    drop_stored_checkpoints(study, tracker, keep=2)
    assert _kept(tracker, study) == {1, 2}  # the two best (0.9, 0.7); a failed trial's upload is not needed
    drop_stored_checkpoints(study, tracker, keep=2)  # again (another process finishing): nothing more goes
    assert _kept(tracker, study) == {1, 2}
    drop_stored_checkpoints(study, tracker, keep=1)
    assert _kept(tracker, study) == {1}


def test_the_champion_is_fetched_from_the_store_once(stored, tmp_path):
    tracker, study = stored
    best = study.best_trial
    folder = fetch_checkpoint(best, tracker, tmp_path / "study")
    run_id = best.user_attrs["checkpoint_run"]
    assert folder == str(tmp_path / "study" / "checkpoints" / f"trial-1-{run_id[:12]}")
    assert (tmp_path / "study" / "checkpoints" / f"trial-1-{run_id[:12]}" / "classifier.json").read_text() \
        == '{"trial": 1}'
    tracker.delete_artifacts(best.user_attrs["checkpoint_run"], CHECKPOINT_ARTIFACT)
    assert fetch_checkpoint(best, tracker, tmp_path / "study") == folder  # fetched before: not fetched again
    assert [p.name for p in (tmp_path / "study" / "checkpoints").iterdir()] == [f"trial-1-{run_id[:12]}"]
