"""After the trials: MLflow made to agree with Optuna, the study's plots, and the champion.

The best trial's saved best-epoch model is evaluated on the held-out test split, logged on its
trial run and handed to the registry. Run under the study lock, so that with several processes
on one study it happens once.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from orchestrator import paths, plots, registry
from orchestrator.config import ExperimentConfig
from orchestrator.data import Splits
from orchestrator.metrics import classification_metrics, report
from orchestrator.serve import Classifier
from orchestrator.study import DIED, FINISHED
from orchestrator.tracking import Tracker

log = logging.getLogger(__name__)


def drop_other_checkpoints(study_dir: Path, study: optuna.Study, best: optuna.trial.FrozenTrial | None) -> None:
    """Keep the best trial's checkpoint, and those of trials still running in other processes."""
    folder = paths.inside(study_dir, study_dir / "checkpoints")
    keep = {f"trial-{t.number}" for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if best is not None:
        keep.add(f"trial-{best.number}")
    for path in folder.glob("trial-*") if folder.exists() else ():
        if path.name not in keep:
            shutil.rmtree(paths.inside(folder, path), ignore_errors=True)


def reconcile_runs(study: optuna.Study, tracker: Tracker, parent: str, cfg: ExperimentConfig) -> dict[int, str]:
    """Make MLflow agree with Optuna after an outage: every ended trial gets a closed run.

    A trial that started while the store was down has no run: it gets one now (tag `backfilled`)
    with its parameters, value and state. A run left RUNNING because the store went down before
    the trial could close it is closed with the trial's state. Returns run ids by trial number.
    """
    runs, run_ids = tracker.trial_runs(cfg.study_name), {}
    for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL)):
        if "duplicate_of" in t.user_attrs:  # a discarded sample: it never ran
            continue
        info = runs.get(t.number)
        if info is not None and info.status != "RUNNING":
            run_ids[t.number] = info.run_id
            continue
        if info is not None:
            run_id = info.run_id
        else:
            run_id = tracker.start_trial(parent, cfg.study_name, t.number, t.params)
            tracker.set_tags(run_id, {"backfilled": "true"})
        if t.value is not None:
            tracker.log_metrics(run_id, {cfg.search.metric: t.value})
        died = t.state == TrialState.FAIL and (t.user_attrs.get("died") or "fail_reason" not in t.user_attrs)
        reason = t.user_attrs.get("fail_reason", DIED if died else None)
        tracker.finish_trial(run_id, t.state.name, reason, status="KILLED" if died else None)
        run_ids[t.number] = run_id
    return run_ids


def evaluate(cfg: ExperimentConfig, splits: Splits, tracker: Tracker, parent: str,
             best: optuna.trial.FrozenTrial, run_id: str) -> dict:
    """Test-split metrics of the best trial's saved model, logged on its run and the parent run.

    The metrics are logged last, in one batch: their presence says the evaluation and its
    artifacts are complete, so an evaluation cut short by an interrupt is redone, not reused.
    """
    logged = tracker.run_metrics(run_id)
    if "test_macro_f1" in logged:  # evaluated by an earlier run or another process on the study
        metrics = {k: v for k, v in logged.items() if k.startswith("test_")}
    else:
        texts = list(splits.data["test"]["text"])
        labels = np.asarray(splits.data["test"]["label"])
        probs = Classifier(best.user_attrs["checkpoint"]).predict_proba(texts)
        names = splits.label_names
        metrics = classification_metrics(labels, probs, names, "test")
        tracker.log_figure(run_id, plots.confusion_figure(labels, probs, names, "test"), "confusion_matrix_test.png")
        tracker.log_text(run_id, report(labels, probs.argmax(-1), names), "classification_report_test.txt")
        tracker.log_table(run_id, plots.misclassified(texts, labels, probs, names), "misclassified_test.json")
        tracker.log_metrics(run_id, metrics)
    tracker.log_metrics(parent, {"champion_test_macro_f1": metrics["test_macro_f1"],
                                 "champion_test_accuracy": metrics["test_accuracy"],
                                 f"champion_{cfg.search.metric}": best.value})
    tracker.set_tags(parent, {"best_trial": best.number, "best_trial_run_id": run_id})
    return metrics


def register(cfg: ExperimentConfig, splits: Splits, tracker: Tracker, parent: str, best: optuna.trial.FrozenTrial,
             run_id: str, metrics: dict) -> registry.Registration:
    """The best trial's model into the registry, with an alias (see `registry.register`)."""
    checkpoint = best.user_attrs["checkpoint"]
    example = list(splits.data["test"]["text"][:5])
    registration = registry.register(
        tracker.client, cfg.model_name, run_id, checkpoint, metrics["test_macro_f1"], example,
        Classifier(checkpoint).predict_frame(example),
        tags={"orchestrator_study": cfg.study_name, "optuna_trial_number": str(best.number)})
    tracker.set_tags(parent, {"registered_model": f"{registration.name}/{registration.version}",
                              "registered_alias": registration.alias})
    return registration


def log_study_plots(study: optuna.Study, tracker: Tracker, parent: str) -> None:
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return
    ax = ovm.plot_optimization_history(study)
    tracker.log_figure(parent, ax.figure, "optimization_history.png")
    if len(completed) >= 2:
        try:
            ax = ovm.plot_param_importances(study)
            tracker.log_figure(parent, ax.figure, "param_importances.png")
        except (ValueError, RuntimeError) as e:  # e.g. every searched value identical so far
            log.info("parameter importances skipped: %s", e)
    plt.close("all")
