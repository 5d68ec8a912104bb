"""`search.objectives`: quality against latency, size or parameters, searched as a Pareto front.

    search:
      objectives: [val_macro_f1, latency_ms]   # the quality metric first; then latency_ms, params, model_mb
    registry:
      latency_budget_ms: 20                    # the best model under it also gets @fast

Two Optuna studies in the study's storage:
- the study itself optimises the quality metric alone, so everything that reads one objective
  reads it as before: pruning, the best trial, confirmation, status, the report. Optuna cannot
  prune a multi-objective study (`Trial.report` refuses), so the pruner judges the quality
  objective's reports, which the search says as it starts;
- its front, `<study>.objectives`, is a multi-objective study (the quality metric's direction,
  then each extra objective minimised) whose sampler (`search.sampler`: tpe, gp, nsga2, random,
  qmc, grid) proposes every new trial's parameters (`claim`). It holds, per trial of the study,
  [quality, latency_ms, ...]: what the front is made of. Trials are paired by user attrs
  (`front_trial` on the study's, `study_trial` on the front's). A trial pruned or failed in the
  study is pruned or failed in the front, so the front's samplers see only whole trainings.

A trial measures its extra objectives on its best-epoch model (`training/objectives.py`):
latency_ms is the median of `predict_proba` on one validation text (batch 1) on the model's ONNX
export with one ONNX Runtime thread, params its parameter count, model_mb its ONNX file's size.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from orchestrator.config import ExperimentConfig
from orchestrator.data import DataError

FRONT = "front_trial"  # the study's trial -> its trial in the front
STUDY = "study_trial"  # the front's trial -> its trial in the study
MEASURED = "objectives"  # the study's trial: {"latency_ms": ..., "params": ..., "model_mb": ...}
FAST = "fast"  # the registry alias of the best model under registry.latency_budget_ms


def enabled(cfg: ExperimentConfig) -> bool:
    return bool(cfg.search.objectives)


def extras(cfg: ExperimentConfig) -> list[str]:
    return list(cfg.search.objectives[1:]) if cfg.search.objectives else []


def front_name(study_name: str) -> str:
    return f"{study_name}.objectives"


def check(study: optuna.Study, cfg: ExperimentConfig) -> None:
    """Record what the study searches (its objectives, or none), or refuse a run that adds, drops
    or changes them: a front missing some trials' measurements is no front. A study from before
    objectives had none."""
    now = list(cfg.search.objectives) if cfg.search.objectives else None
    if "objectives" not in study.user_attrs:
        study.set_user_attr("objectives", None if study.get_trials(deepcopy=False) else now)
    recorded = study.user_attrs["objectives"]
    if recorded != now:
        name = cfg.study_name
        was = f"searches {recorded}" if recorded else "has one objective (no search.objectives)"
        keep = f"search.objectives={recorded}" if recorded else "search.objectives out"
        raise DataError(f"search.objectives: study {name!r} {was}, this config "
                        f"{'searches ' + str(now) if now else 'has none'}: its trials would not all be on one front. "
                        f"Keep {keep} for this study, or start a new one (search.study_name={name}-2)")


def open_front(cfg: ExperimentConfig, storage, sampler) -> optuna.Study | None:
    """The study's front (made once, joined after), or None without `search.objectives`. A front
    made for other objectives is refused: their values would not compare."""
    if not enabled(cfg):
        return None
    directions = [cfg.search.direction, *("minimize" for _ in extras(cfg))]
    front = optuna.create_study(study_name=front_name(cfg.study_name), storage=storage, sampler=sampler,
                                directions=directions, load_if_exists=True)
    recorded = front.user_attrs.get("objectives")
    if recorded is None:
        front.set_user_attr("objectives", list(cfg.search.objectives))
    elif recorded != list(cfg.search.objectives):
        name = cfg.study_name
        raise DataError(f"search.objectives: study {name!r} searches {recorded}, this config "
                        f"{list(cfg.search.objectives)}: the front's values would not compare. Keep "
                        f"search.objectives={recorded} for this study, or start a new one (search.study_name={name}-2)")
    return front


def note(cfg: ExperimentConfig) -> str | None:
    """What the search says as it starts: which objectives, and what prunes."""
    if not enabled(cfg):
        return None
    pruned = (f"the pruner ({cfg.search.pruner}) judges {cfg.search.metric}'s reports alone (Optuna cannot prune "
              f"a multi-objective study)" if cfg.search.pruner != "none" else "no pruner")
    return (f"search.objectives: a Pareto front of {', '.join(cfg.search.objectives)} (study "
            f"{front_name(cfg.study_name)}, sampler {cfg.search.sampler}); {pruned}")


def settle(front: optuna.Study, trial: FrozenTrial, wanted: list[str]) -> None:
    """Tell the front how the study's `trial` ended: its quality and measured objectives when it
    completed with every one of them measured; pruned or failed otherwise."""
    number = trial.user_attrs.get(FRONT)
    if number is None:
        return
    measured = trial.user_attrs.get(MEASURED) or {}
    if trial.state == TrialState.COMPLETE and all(k in measured for k in wanted):
        front.tell(number, [trial.value, *(float(measured[k]) for k in wanted)], skip_if_finished=True)
    else:
        state = TrialState.PRUNED if trial.state == TrialState.PRUNED else TrialState.FAIL
        front.tell(number, state=state, skip_if_finished=True)


def reconcile(study: optuna.Study, front: optuna.Study, wanted: list[str]) -> None:
    """Settle every front trial whose study trial has ended (its driver died, or the store failed
    between the two tells)."""
    running = {t.number for t in front.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
        if t.user_attrs.get(FRONT) in running:
            settle(front, t, wanted)


def pareto(study: optuna.Study, front: optuna.Study | None) -> list[FrozenTrial]:
    """The study's trials on the front: completed, with every objective measured, none dominated."""
    if front is None:
        return []
    numbers = {t.user_attrs.get(STUDY) for t in front.best_trials}
    return [t for t in study.get_trials(deepcopy=False) if t.number in numbers]


def fast(study: optuna.Study, budget_ms: float, ranked: list[FrozenTrial] | None = None) -> FrozenTrial | None:
    """The best completed trial of the search (by quality; not a confirmation, which measures
    nothing) whose measured latency is within `budget_ms`; None when none is."""
    from orchestrator.search.confirm import searched

    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    done = ranked if ranked is not None else searched(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    under = [t for t in done if (t.user_attrs.get(MEASURED) or {}).get("latency_ms", float("inf")) <= budget_ms]
    if not under:
        return None
    return sorted(under, key=lambda t: (-t.value if maximize else t.value, t.number))[0]


def table(study: optuna.Study, front: optuna.Study | None, wanted: list[str]) -> list[dict]:
    """Every completed trial's objectives, and whether it is on the front."""
    on_front = {t.number for t in pareto(study, front)}
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        measured = t.user_attrs.get(MEASURED) or {}
        rows.append({"trial": t.number, "quality": t.value, **{k: measured.get(k) for k in wanted},
                     "pareto": t.number in on_front})
    return rows
