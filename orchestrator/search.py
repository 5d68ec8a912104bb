"""The study: storage, sampler, pruner, the objective around `train.train`, resume, champion.

`run_search` checks everything it can before it creates anything (config, data, model path,
tracking store), then runs an Optuna study whose trials each log a nested MLflow run, evaluates
the best trial's best-epoch model on the test split, and hands it to the registry.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from orchestrator import paths, plots, registry, space, train
from orchestrator.baseline import fit_baseline
from orchestrator.config import ConfigError, ExperimentConfig, ModelConfig
from orchestrator.data import DataError, Splits, load_splits
from orchestrator.heads import check_heads
from orchestrator.metrics import classification_metrics, report
from orchestrator.progress import StudyProgress
from orchestrator.serve import Classifier
from orchestrator.tracking import Tracker

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class TrialFailed(RuntimeError):
    """A trial that cannot produce a valid score (e.g. non-finite loss): marked FAIL, study goes on."""


@dataclass
class TrialRow:
    number: int
    state: str
    value: float | None
    params: dict
    note: str = ""


@dataclass
class Summary:
    study_name: str
    trials: list[TrialRow]
    best_trial: int | None = None
    best_params: dict = field(default_factory=dict)
    best_value: float | None = None
    metric: str = "val_macro_f1"
    champion_test: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    registration: registry.Registration | None = None
    seconds: float = 0.0
    tracking_uri: str = ""
    parent_run_id: str = ""


def resolve_model(cfg: ModelConfig) -> str:
    """Local folder (checked for safetensors weights now, not in trial 0) or a hub name as given."""
    try:
        location = paths.resolve(cfg.name_or_path)
    except paths.PathError as e:
        raise DataError(f"model.name_or_path: {e}") from None
    local = cfg.name_or_path.startswith((paths.PKG, "/", ".", "~")) or Path(location).exists()
    if local:
        folder = Path(location).expanduser()
        if not folder.is_dir():
            raise DataError(f"model.name_or_path: folder not found: {cfg.name_or_path}")
        if not any(folder.glob("*.safetensors")):
            raise DataError(f"model.name_or_path: {cfg.name_or_path} holds no *.safetensors weights "
                            f"(only safetensors are loaded; convert the checkpoint or pick another model)")
        return str(folder)
    return location


def make_storage(url: str):
    url = paths.absolute_sqlite(url)
    # Heartbeats let a restarted search see trials whose process died, mark them FAIL and
    # re-queue each once with the same parameters.
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5, and what we need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(url, heartbeat_interval=30, grace_period=90,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))


def create_study(cfg: ExperimentConfig) -> optuna.Study:
    s = cfg.search
    n = s.n_trials or 20
    if s.sampler == "tpe":
        # With a small budget, TPE's default 10 random start-up trials would be the whole study.
        sampler = optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=max(2, min(10, n // 2)))
    else:
        sampler = optuna.samplers.RandomSampler(seed=s.seed)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials,
                                          n_warmup_steps=s.pruner_warmup_epochs)
              if s.pruner == "median" else optuna.pruners.NopPruner())
    return optuna.create_study(study_name=cfg.study_name, storage=make_storage(s.storage), sampler=sampler,
                               pruner=pruner, direction=s.direction, load_if_exists=True)


class Objective:
    """One trial: sample, fine-tune, log, keep the best checkpoint so far."""

    def __init__(self, cfg: ExperimentConfig, splits: Splits, model_path: str, tracker: Tracker,
                 parent_run_id: str, progress: StudyProgress):
        self.cfg, self.splits, self.model_path = cfg, splits, model_path
        self.tracker, self.parent, self.progress = tracker, parent_run_id, progress
        self.metric = cfg.search.metric
        self.maximize = cfg.search.direction == "maximize"

    def __call__(self, trial: optuna.Trial) -> float:
        params = space.suggest(trial, self.cfg.space, self.cfg.training)
        run_id = self.tracker.start_trial(self.parent, self.cfg.study_name, trial.number,
                                          dataclasses.asdict(params))
        trial.set_user_attr("mlflow_run_id", run_id)
        steps = math.ceil(len(self.splits.data["train"]) / params.batch_size) * params.epochs
        self.progress.start_trial(trial.number, trial.params, steps, params.epochs)

        def on_step(step: int, metrics: dict) -> None:
            self.tracker.log_metrics(run_id, {k: metrics[k] for k in ("train_loss", "learning_rate")}, step)
            self.progress.step(step, metrics["epoch"], metrics["train_loss"])

        def on_evaluate(epoch: int, step: int, metrics: dict) -> bool:
            self.tracker.log_metrics(run_id, metrics, step=epoch)
            self.progress.evaluated(trial.number, epoch, self.metric, metrics[self.metric])
            trial.report(metrics[self.metric], epoch)
            return not trial.should_prune()

        try:
            result = train.train(params, self.cfg.model, self.splits, self.model_path, on_step, on_evaluate,
                                 metric=self.metric, greater_is_better=self.maximize)
        except Exception as e:
            self.tracker.finish_trial(run_id, "FAIL", f"{type(e).__name__}: {e}")
            raise
        self.tracker.log_metrics(run_id, {"best_epoch": result.best_epoch,
                                          "seconds_per_epoch": result.seconds_per_epoch,
                                          "train_samples_per_second": result.samples_per_second,
                                          "train_rows": result.train_rows,
                                          "trainable_parameters": result.trainable_parameters})
        self.tracker.set_tags(run_id, {f"train_class_count_{k}": v for k, v in result.class_counts.items()})
        if result.stopped == "pruned":
            self.tracker.finish_trial(run_id, "PRUNED", f"pruned after epoch {len(result.history)}")
            raise optuna.TrialPruned()
        if result.stopped or not result.best_metrics:
            reason = result.stopped or "no epoch finished"
            self.tracker.finish_trial(run_id, "FAIL", reason)
            raise TrialFailed(reason)
        value = result.best_metrics[self.metric]
        self._log_validation(run_id, result)
        if self._is_best(trial.study, value):
            self._keep_checkpoint(trial, result, params)
        self.tracker.finish_trial(run_id, "COMPLETE")
        return value

    def _log_validation(self, run_id: str, result: train.TrainResult) -> None:
        labels = np.asarray(self.splits.data["validation"]["label"])
        texts = list(self.splits.data["validation"]["text"])
        names = self.splits.label_names
        fig = plots.confusion_figure(labels, result.val_probs, names, f"validation, epoch {result.best_epoch}")
        self.tracker.log_figure(run_id, fig, "confusion_matrix_validation.png")
        self.tracker.log_table(run_id, plots.misclassified(texts, labels, result.val_probs, names),
                               "misclassified_validation.json")

    def _is_best(self, study: optuna.Study, value: float) -> bool:
        try:
            best = study.best_value
        except ValueError:  # no completed trial yet
            return True
        return value > best if self.maximize else value < best

    def _keep_checkpoint(self, trial: optuna.Trial, result: train.TrainResult, params) -> None:
        """Save this trial's best-epoch model; drop the previous best's to bound disk use."""
        folder = Path(self.cfg.search.checkpoint_dir) / self.cfg.study_name / f"trial-{trial.number}"
        meta = {"label_names": self.splits.label_names, "max_length": params.max_length,
                "study": self.cfg.study_name, "trial": trial.number, "params": dataclasses.asdict(params)}
        result.model.save(folder, result.tokenizer, meta)
        trial.set_user_attr("checkpoint", str(folder.resolve()))
        try:
            previous = trial.study.best_trial.user_attrs.get("checkpoint")
        except ValueError:
            previous = None
        if previous and Path(previous) != folder.resolve():
            shutil.rmtree(previous, ignore_errors=True)


def run_search(cfg: ExperimentConfig, progress: StudyProgress | None = None) -> Summary:
    started = time.perf_counter()
    # Everything that can be wrong with the input is found before a study or run exists.
    splits = load_splits(cfg.data)
    model_path = resolve_model(cfg.model)
    heads = set(cfg.space["head"].choices) if "head" in cfg.space else {cfg.training.head}
    problems = check_heads(model_path, heads, cfg.model.revision, cfg.model.trust_remote_code)
    if problems:
        raise ConfigError(cfg.source, problems)
    tracker = Tracker(cfg.tracking.uri, cfg.experiment_name, cfg.tracking.artifact_location)

    study = create_study(cfg)
    parent = tracker.study_run(cfg.study_name, study.user_attrs.get("mlflow_parent_run_id"),
                               _flatten(cfg.to_dict()))
    study.set_user_attr("mlflow_parent_run_id", parent)
    baseline = _baseline(tracker, parent, splits, cfg)
    progress = progress or StudyProgress(cfg.search.n_trials)
    progress.print(f"study {cfg.study_name!r}: {len(splits.data['train'])} train / "
                   f"{len(splits.data['validation'])} validation / {len(splits.data['test'])} test rows, "
                   f"labels {splits.label_names}; baseline (TF-IDF + logistic regression) "
                   f"val macro-F1 {baseline['baseline_val_macro_f1']:.4f}")

    objective = Objective(cfg, splits, model_path, tracker, parent, progress)
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = None if cfg.search.n_trials is None else max(0, cfg.search.n_trials - finished)
    progress.done = finished
    callbacks = [lambda s, t: progress.end_trial(t.number, t.state.name, t.value, _best_value(s))]
    if cfg.search.n_trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(cfg.search.n_trials, states=FINISHED))
    try:
        if remaining is None or remaining > 0:
            study.optimize(objective, n_trials=remaining, timeout=cfg.search.timeout, callbacks=callbacks,
                           catch=(Exception,), gc_after_trial=True)
    finally:
        progress.close()

    _log_study_plots(study, tracker, parent)
    summary = Summary(cfg.study_name, _rows(study), metric=cfg.search.metric, baseline=baseline,
                      tracking_uri=cfg.tracking.uri, parent_run_id=parent)
    best = _best_trial(study)
    if best is not None and best.user_attrs.get("checkpoint") and Path(best.user_attrs["checkpoint"]).exists():
        summary.best_trial, summary.best_params, summary.best_value = best.number, best.params, best.value
        summary.champion_test, summary.registration = _champion(cfg, splits, tracker, parent, best)
    tracker.end_run(parent)
    summary.seconds = time.perf_counter() - started
    return summary


def _baseline(tracker: Tracker, parent: str, splits: Splits, cfg: ExperimentConfig) -> dict:
    logged = tracker.run_metrics(parent)
    if "baseline_test_macro_f1" in logged:  # resumed study: same split, same numbers
        return {k: v for k, v in logged.items() if k.startswith("baseline_")}
    metrics = fit_baseline(splits, cfg.data.seed)
    tracker.log_metrics(parent, metrics)
    return metrics


def _champion(cfg: ExperimentConfig, splits: Splits, tracker: Tracker, parent: str,
              best: optuna.trial.FrozenTrial) -> tuple[dict, registry.Registration | None]:
    """Test-split evaluation of the best trial's saved model, then registration."""
    run_id = best.user_attrs["mlflow_run_id"]
    checkpoint = best.user_attrs["checkpoint"]
    classifier = Classifier(checkpoint)
    texts = list(splits.data["test"]["text"])
    labels = np.asarray(splits.data["test"]["label"])
    probs = classifier.predict_proba(texts)
    names = splits.label_names
    metrics = classification_metrics(labels, probs, names, "test")
    tracker.log_metrics(run_id, metrics)
    tracker.log_figure(run_id, plots.confusion_figure(labels, probs, names, "test"), "confusion_matrix_test.png")
    tracker.log_text(run_id, report(labels, probs.argmax(-1), names), "classification_report_test.txt")
    tracker.log_table(run_id, plots.misclassified(texts, labels, probs, names), "misclassified_test.json")
    tracker.log_metrics(parent, {"champion_test_macro_f1": metrics["test_macro_f1"],
                                 "champion_test_accuracy": metrics["test_accuracy"],
                                 f"champion_{cfg.search.metric}": best.value})
    tracker.set_tags(parent, {"best_trial": best.number, "best_trial_run_id": run_id})
    registration = None
    if cfg.registry.register:
        example = texts[:5]
        registration = registry.register(
            tracker.client, cfg.model_name, run_id, checkpoint, metrics["test_macro_f1"], example,
            classifier.predict_frame(example), tags={"orchestrator_study": cfg.study_name,
                                                     "optuna_trial_number": str(best.number)})
        tracker.set_tags(parent, {"registered_model": f"{registration.name}/{registration.version}",
                                  "registered_alias": registration.alias})
    return metrics, registration


def _log_study_plots(study: optuna.Study, tracker: Tracker, parent: str) -> None:
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


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def _best_value(study: optuna.Study) -> float | None:
    best = _best_trial(study)
    return best.value if best else None


def _rows(study: optuna.Study) -> list[TrialRow]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        note = t.system_attrs.get("fail_reason", "") if t.state == TrialState.FAIL else ""
        rows.append(TrialRow(t.number, t.state.name, t.value, dict(t.params), note))
    return rows


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
