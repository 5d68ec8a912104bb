"""After the trials: MLflow made to agree with Optuna, the study's plots, and the champion.

The best trial's saved best-epoch model is evaluated on the held-out test split (the task's
metrics and error analysis), logged on its trial run and handed to the registry. Run under the
study lock, so that with several processes on one study it happens once.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from orchestrator.config import paths
from orchestrator.registry import versions as registry
from orchestrator.registry.lookup import load_classifier
from orchestrator.config import ExperimentConfig
from orchestrator.data import Splits
from orchestrator.training.saved_model import Classifier
from orchestrator.search import evidence, objectives, serving_formats
from orchestrator.search.study import DIED, FINISHED
from orchestrator.search.warm_start import FROM
from orchestrator.tasks import Task
from orchestrator.tracking.client import CHECKPOINT_ARTIFACT, Tracker
from orchestrator.tracking.lineage import code_version

log = logging.getLogger(__name__)


def drop_other_checkpoints(study_dir: Path, study: optuna.Study, best: optuna.trial.FrozenTrial | None,
                           *others: optuna.trial.FrozenTrial | None) -> None:
    """Keep the best trial's checkpoint (and `others`', e.g. @fast's), and those of trials still
    running in other processes."""
    folder = paths.inside(study_dir, study_dir / "checkpoints")
    keep = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    keep |= {t.number for t in (best, *others) if t is not None}
    for path in folder.glob("trial-*") if folder.exists() else ():
        number = path.name.split("-")[1]
        if number.isdigit() and int(number) not in keep:
            shutil.rmtree(paths.inside(folder, path), ignore_errors=True)


def drop_stored_checkpoints(study: optuna.Study, tracker: Tracker, keep: int,
                            champion: optuna.trial.FrozenTrial | None = None,
                            fast: optuna.trial.FrozenTrial | None = None) -> None:
    """Delete the stored checkpoints that are not needed, so a long study does not fill the
    artifact store: those of finished trials ranked below the `keep` best (the champion's run's,
    by default the best trial's, is always kept), and those of trials that uploaded one and then
    failed. Each trial uploaded its own while it ranked among the best (a confirmation always);
    running trials are left alone."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(done, key=lambda t: (-t.value if maximize else t.value, t.number))
    best = champion.number if champion is not None else (study.best_trial.number if done else None)
    ended = study.get_trials(deepcopy=False, states=(TrialState.FAIL, TrialState.PRUNED))
    for t in [*ranked[keep:], *ended]:
        run_id = t.user_attrs.get("checkpoint_run")
        if run_id and t.number not in (best, fast.number if fast else None) \
                and tracker.has_artifacts(run_id, CHECKPOINT_ARTIFACT):
            tracker.delete_artifacts(run_id, CHECKPOINT_ARTIFACT)


def fetch_checkpoint(best: optuna.trial.FrozenTrial, tracker: Tracker, study_dir: Path) -> str:
    """The best trial's checkpoint folder on this disk: where its trial saved it, if that was here,
    else downloaded (once) from its run's artifacts into the study's folder."""
    local = best.user_attrs.get("checkpoint")
    if local and Path(local).exists():
        return local
    run_id = best.user_attrs["checkpoint_run"]
    folders = paths.inside(study_dir, study_dir / "checkpoints")
    # Named by the run too: a study deleted and made again under its name numbers its trials anew.
    target = folders / f"trial-{best.number}-{run_id[:12]}"
    if (target / "classifier.json").exists():  # fetched by an earlier run: a run's checkpoint never changes
        return str(target)
    tmp = paths.inside(folders, folders / f".fetch-{best.number}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    fetched = tracker.download_artifacts(run_id, CHECKPOINT_ARTIFACT, tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(fetched, target)
    shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def reconcile_runs(study: optuna.Study, tracker: Tracker, parent: str, cfg: ExperimentConfig) -> dict[int, str]:
    """Make MLflow agree with Optuna after an outage: every ended trial gets a closed run.

    A trial that started while the store was down has no run: it gets one now (tag `backfilled`)
    with its parameters, value and state. A run left RUNNING because the store went down before
    the trial could close it is closed with the trial's state. A trial queued by a warm start
    gets its source as a tag (`warm_start_from`), which the trial process itself does not know.
    Returns run ids by trial number.
    """
    runs, run_ids = tracker.trial_runs(cfg.study_name), {}
    for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL)):
        if "duplicate_of" in t.user_attrs:  # a discarded sample: it never ran
            continue
        warm = {FROM: t.user_attrs[FROM]} if FROM in t.user_attrs else {}
        info = runs.get(t.number)
        if info is not None:
            tracker.set_tags(info.run_id, warm)
        if info is not None and info.status != "RUNNING":
            run_ids[t.number] = info.run_id
            continue
        if info is not None:
            run_id = info.run_id
        else:
            run_id = tracker.start_trial(parent, cfg.study_name, t.number, t.params)
            tracker.set_tags(run_id, {"backfilled": "true", **warm})
        if t.value is not None:
            tracker.log_metrics(run_id, {cfg.search.metric: t.value})
        died = t.state == TrialState.FAIL and (t.user_attrs.get("died") or "fail_reason" not in t.user_attrs)
        reason = t.user_attrs.get("fail_reason", DIED if died else None)
        tracker.finish_trial(run_id, t.state.name, reason, status="KILLED" if died else None)
        run_ids[t.number] = run_id
    return run_ids


def log_confirmation(tracker: Tracker, parent: str, groups: list[dict], group, metric: str) -> None:
    """On the study's run: the confirmed configurations (table `confirmation.json`: each one's
    runs, mean and standard deviation), and the champion's mean, spread and run count as metrics."""
    rows = [{"trial": g["trial"], "mean": g["mean"], "std": g["std"], "completed": g["completed"],
             "planned": g["planned"], "best_run": g["best_run"],
             "values": " ".join(f"{r['value']:.4f}" for r in g["runs"]),
             "seeds": " ".join("search" if r["seed"] is None else str(r["seed"]) for r in g["runs"]),
             **{f"param_{k}": v for k, v in g["params"].items()}} for g in groups]
    tracker.log_table(parent, pd.DataFrame(rows), "confirmation.json")
    tracker.log_metrics(parent, {f"confirmed_mean_{metric}": group.mean, f"confirmed_std_{metric}": group.std,
                                 "confirmed_runs": len(group.runs)})
    tracker.set_tags(parent, {"confirmed_trial": group.trial.number})


def evaluate(cfg: ExperimentConfig, splits: Splits, tracker: Tracker, parent: str,
             best: optuna.trial.FrozenTrial, run_id: str, task: Task, checkpoint: str) -> dict:
    """Test-split metrics of the best trial's saved model (with the post-processing validation
    chose), logged with the task's error analysis on its run, and on the parent run.

    The metrics are logged last, in one batch: their presence says the evaluation and its
    artifacts are complete, so an evaluation cut short by an interrupt is redone, not reused.
    """
    main = f"test_{task.main_metric}"
    logged = tracker.run_metrics(run_id)
    evaluation = evidence.saved_evaluation(tracker, run_id, splits.split_digest("test")) if main in logged else None
    if evaluation is not None:  # evaluated by an earlier run or another process on the study
        metrics = {k: v for k, v in logged.items() if k.startswith("test_")}
    else:
        examples = splits.data["test"]
        evaluation, outputs = Classifier(checkpoint).evaluate(examples, "test")
        for artifact in task.artifacts(evaluation, outputs, examples, splits.label_names, "test"):
            getattr(tracker, f"log_{artifact.kind}")(run_id, artifact.value, artifact.name)
        tracker.log_text(run_id, evidence.predictions_text(evaluation, splits.split_digest("test")),
                         evidence.PREDICTIONS)
        metrics = {**evaluation.metrics, **evidence.intervals(task, evaluation, splits)}
        tracker.log_metrics(run_id, metrics)
    shown = {f"champion_{k}": metrics[k] for k in (main, f"{main}_ci_low", f"{main}_ci_high", "test_accuracy",
                                                     "test_micro_f1") if k in metrics}
    tracker.log_metrics(parent, {**shown, f"champion_{cfg.search.metric}": best.value})
    # The champion's decision threshold(s), and whether a target was missed, where the study is read.
    tracker.set_tags(parent, {"best_trial": best.number, "best_trial_run_id": run_id,
                              **best.user_attrs.get("threshold_tags", {})})
    return metrics, evaluation


def against_baseline(cfg: ExperimentConfig, checked, tracker: Tracker, parent: str, evaluation) -> str | None:
    """Whether the champion beats the baseline beyond noise (a paired bootstrap on the test rows,
    with the baseline's predictions the study's run kept), in a line also set as the study run's
    tag `baseline_comparison`; None where the task's metric or the baseline has no per-row form."""
    splits, task = checked.splits, checked.task
    main = f"test_{task.main_metric}"
    baseline = evidence.saved_evaluation(tracker, parent, splits.split_digest("test"), evidence.BASELINE_PREDICTIONS)
    comparison = evidence.Evidence(task, splits, tracker, main).against_baseline(evaluation, baseline)
    if comparison is None:
        return None
    line = evidence.baseline_verdict(comparison, cfg.registry.min_confidence)
    tracker.set_tags(parent, {"baseline_comparison": line[:500]})
    return line


def register(cfg: ExperimentConfig, splits: Splits, tracker: Tracker, parent: str, best: optuna.trial.FrozenTrial,
             run_id: str, metrics: dict, task: Task, checkpoint: str, evaluation=None,
             confirmed: dict | None = None, notes: list[str] | None = None) -> registry.Registration:
    """The best trial's model into the registry, with an alias (see `registry.register`): it
    becomes champion if it beats the current one on this study's test split beyond noise (a
    paired bootstrap on the same rows, `registry/gate.py`). `confirmed`: the confirmation of its
    configuration (`confirm.Group.to_dict`), recorded on the version. With `registry.export`, the
    ONNX and int8 formats are made and measured first (`serving_formats.py`); the line saying how
    they did is appended to `notes`."""
    notes = notes if notes is not None else []
    main = f"test_{task.main_metric}"
    classifier = Classifier(checkpoint)
    example = classifier.example_frame(splits.data["test"])
    baseline, test_data = tracker.run_metrics(parent).get(f"baseline_{main}"), splits.split_digest("test")
    gate = None
    if evaluation is not None:
        gate = evidence.Evidence(task, splits, tracker, main).gate(
            evaluation, run_id, cfg.registry.min_confidence, cfg.registry.min_improvement, cfg.study_name)
    intervals = {f"{main}_ci": f"{metrics[f'{main}_ci_low']:.6f} {metrics[f'{main}_ci_high']:.6f}"} \
        if f"{main}_ci_low" in metrics else {}
    spread = {"confirmed_mean": f"{confirmed['mean']:.6f}", "confirmed_std": f"{confirmed['std']:.6f}",
              "confirmed_runs": str(confirmed["completed"])} if confirmed else {}
    formats = _serving_formats(cfg, tracker, run_id, checkpoint, splits, task, main, notes)
    registration = registry.register(
        tracker.client, cfg.model_name, run_id, checkpoint, metrics[main], example,
        classifier.predict_frame(example),
        tags={"orchestrator_study": cfg.study_name, "optuna_trial_number": str(best.number)},
        metric=main, test_data=test_data, rescore=_rescorer(splits, main), maximize=task.maximize(main),
        description=describe(cfg, splits, best, run_id, metrics, task, baseline, test_data),
        gate=gate, extra_tags={**intervals, **spread, **formats, **code_version(), "data_fingerprint": splits.digest,
                               **objective_tags(cfg, best)})
    tags = {"registered_model": f"{registration.name}/{registration.version}", "registered_alias": registration.alias}
    if registration.comparison is not None:
        tags["champion_comparison"] = registration.comparison.to_json()
    tracker.set_tags(parent, tags)
    return registration


def _serving_formats(cfg: ExperimentConfig, tracker: Tracker, run_id: str, checkpoint: str, splits: Splits,
                     task: Task, metric: str, notes: list[str]) -> dict[str, str]:
    """With registry.export: ONNX and int8 beside PyTorch (files in the checkpoint the pyfunc
    carries), measured; the run gets the table, the version the tags returned, `notes` a line."""
    if not cfg.registry.export:
        return {}
    rows, error = serving_formats.measure(checkpoint, splits, task, metric)
    tracker.log_table(run_id, pd.DataFrame(rows), "serving_formats.json")
    tracker.log_metrics(run_id, serving_formats.metrics(rows, metric))
    notes.append(serving_formats.said(rows, error, metric))
    return serving_formats.tags(rows, error, metric)


def objective_tags(cfg: ExperimentConfig, trial: optuna.trial.FrozenTrial) -> dict[str, str]:
    """A version's search objectives as tags: its validation quality and what it was measured at."""
    if not cfg.search.objectives:
        return {}
    measured = trial.user_attrs.get(objectives.MEASURED) or {}
    return {f"objective_{cfg.search.metric}": f"{trial.value:.6f}",
            **{f"objective_{k}": f"{v:g}" for k, v in measured.items()}}


def register_fast(cfg: ExperimentConfig, splits: Splits, tracker: Tracker, parent: str, study: optuna.Study,
                  study_dir: Path, task: Task, run_ids: dict[int, str],
                  champion: int | None = None) -> tuple[registry.Registration | None, str]:
    """@fast: the best trial (by validation quality) whose measured latency is within
    `registry.latency_budget_ms`, evaluated on test and registered with that alias (the same
    version as @champion's when the champion is within it). Returns it and a line for the summary."""
    budget = cfg.registry.latency_budget_ms
    fast = objectives.fast(study, budget)
    if fast is None:
        return None, (f"@fast: no completed trial's latency is within registry.latency_budget_ms {budget:g} ms "
                      f"(batch 1, one thread); nothing got @fast")
    if not (Path(fast.user_attrs.get("checkpoint") or "/nonexistent").exists() or "checkpoint_run" in fast.user_attrs):
        return None, f"@fast: trial {fast.number} is within the budget, but its checkpoint was not kept"
    main = f"test_{task.main_metric}"
    run_id = run_ids[fast.number]
    checkpoint = fetch_checkpoint(fast, tracker, study_dir)
    logged = tracker.run_metrics(run_id)
    if main not in logged:
        evaluation, _ = Classifier(checkpoint).evaluate(splits.data["test"], "test")
        logged = {**evaluation.metrics, **evidence.intervals(task, evaluation, splits)}
        tracker.log_metrics(run_id, logged)
    classifier = Classifier(checkpoint)
    example = classifier.example_frame(splits.data["test"])
    # The champion's own trial: its version exists, formats and all; @fast is added to it.
    formats = {} if fast.number == champion else _serving_formats(cfg, tracker, run_id, checkpoint, splits, task,
                                                                   main, [])
    registration = registry.register(
        tracker.client, cfg.model_name, run_id, checkpoint, logged[main], example,
        classifier.predict_frame(example),
        tags={"orchestrator_study": cfg.study_name, "optuna_trial_number": str(fast.number)},
        metric=main, test_data=splits.split_digest("test"), maximize=task.maximize(main),
        extra_tags={**objective_tags(cfg, fast), **formats, **code_version(), "data_fingerprint": splits.digest},
        fixed_alias=objectives.FAST)
    latency = (fast.user_attrs.get(objectives.MEASURED) or {}).get("latency_ms")
    tracker.set_tags(parent, {"fast_model": f"{registration.name}/{registration.version}", "fast_trial": fast.number})
    return registration, (f"@fast: trial {fast.number}, {cfg.search.metric} {fast.value:.4f}, {main} "
                          f"{logged[main]:.4f}, latency {latency:.2f} ms (batch 1, one thread; budget {budget:g} ms) "
                          f"-> {registration.name} version {registration.version}")


def log_front(tracker: Tracker, parent: str, study: optuna.Study, front: optuna.Study, cfg: ExperimentConfig) -> None:
    """The study's run: every completed trial's objectives and whether it is on the Pareto front
    (`pareto_front.json`), and the front's plot."""
    rows = objectives.table(study, front, objectives.extras(cfg))
    if not rows:
        return
    tracker.log_table(parent, pd.DataFrame(rows), "pareto_front.json")
    tracker.set_tags(parent, {"pareto_trials": " ".join(str(r["trial"]) for r in rows if r["pareto"])})


def describe(cfg: ExperimentConfig, splits: Splits, best: optuna.trial.FrozenTrial, run_id: str, metrics: dict,
             task: Task, baseline: float | None, test_data: str, most: int = 12) -> str:
    """The registered version's description (markdown, shown on its registry page): what the model
    is, how it scored on test against the baseline, the trial that made it, the data it saw."""
    from orchestrator.config.secrets import scrub

    main = f"test_{task.main_metric}"
    labels = ", ".join(splits.label_names[:20]) + (f" and {len(splits.label_names) - 20} more"
                                                   if len(splits.label_names) > 20 else "")
    others = sorted(k for k in metrics if k != main and not evidence.is_interval(k))
    shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in others[:most])
    if len(others) > most:
        shown += f" and {len(others) - most} more on run {run_id}"
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(best.params.items()))
    gap = metrics[main] - baseline if baseline is not None else 0.0
    better = gap >= 0 if task.maximize(main) else gap <= 0  # in the metric's own direction
    compared = (f"{main} {baseline:.6f}; the model is {abs(gap):.4f} {'better' if better else 'worse'} "
                f"({'higher' if task.maximize(main) else 'lower'} is better)"
                if baseline is not None else "not recorded on the study's run")
    return "\n\n".join([
        f"**{task.name}** model of study `{cfg.study_name}` (experiment `{cfg.experiment_name}`), fine-tuned from "
        f"`{scrub(cfg.model.name_or_path)}`" + (f"; labels: {labels}" if labels else "") +
        f". Input: {' and '.join(f'a `{c}`' for c in task.input_columns(task.saved_settings(splits)))} column.",
        f"**Test** ({len(splits.data['test'])} rows): {main} **{metrics[main]:.6f}**" + (f"; {shown}" if shown else ""),
        f"**Baseline** ({task.baseline_name}) on the same test split: {compared}.",
        f"**Best trial** {best.number} (run {run_id}): {cfg.search.metric} {best.value:.4f} with "
        f"{params or 'the defaults (nothing searched)'}.",
        f"**Data**: test split fingerprint `{test_data}` (tag test_data: the split every "
        f"champion comparison uses); data fingerprint `{splits.digest}` (the files and settings the splits came "
        f"from, param data.fingerprint of the study's run).",
    ])


def _rescorer(splits: Splits, metric: str):
    """Scores a registered version on this study's test split, when it predicts the same labels."""
    def rescore(version) -> float:
        try:
            classifier = load_classifier(version.source)
        except Exception as e:  # noqa: BLE001 - any failure to load means: cannot compare
            raise registry.ScoreUnreadable(f"version {version.version} (the current champion) could not be loaded "
                                           f"to re-score it on this test split ({type(e).__name__}: {e})") from e
        if classifier.label_names != splits.label_names:
            raise registry.ScoreUnreadable(
                f"version {version.version} (the current champion) predicts labels {classifier.label_names[:10]}, "
                f"this study {splits.label_names[:10]}; they cannot be compared on one test split")
        evaluation, _ = classifier.evaluate(splits.data["test"], "test")
        if metric not in evaluation.metrics:
            raise registry.ScoreUnreadable(f"version {version.version} (the current champion) is a "
                                           f"{classifier.task.name} model without {metric}")
        return evaluation.metrics[metric]
    return rescore


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
            with warnings.catch_warnings():  # "importances will be equal" when trials tie: the plot shows it
                warnings.simplefilter("ignore", UserWarning)
                ax = ovm.plot_param_importances(study)
            tracker.log_figure(parent, ax.figure, "param_importances.png")
        except (ValueError, RuntimeError) as e:  # e.g. every searched value identical so far
            log.info("parameter importances skipped: %s", e)
    plt.close("all")
