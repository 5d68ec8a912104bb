"""The page's plotly figures: Optuna's views of the study and each trial's learning curves.

Each function returns a figure, or the sentence the page shows in its place: a study with no
completed trial, or too few for an importance estimate, still gets every section.
"""

from __future__ import annotations

import warnings

import plotly.graph_objects as go

from orchestrator.reporting.report._tracked import Tracked
from orchestrator.search.progress import pretty
from orchestrator.search.records import StudyRecord, Trial, epoch_values

# A trial's state as a line style: a pruned or failed curve must not pass for a finished one.
DASH = {"COMPLETE": "solid", "PRUNED": "dash", "FAIL": "dot", "RUNNING": "dashdot", "WAITING": "dot"}

Figure = go.Figure | str  # a figure, or why there is none


def completed(trials: list[Trial]) -> list[Trial]:
    return [t for t in trials if t.state.name == "COMPLETE"]


def optuna_figures(study: StudyRecord, trials: list[Trial]) -> dict[str, Figure]:
    """Optuna's history, importances, parallel coordinates and slices, by section id."""
    done = len(completed(trials))
    if done == 0:
        none = "No trial has completed yet: Optuna plots only completed trials."
        return dict.fromkeys(("history", "importances", "parallel", "slice"), none)
    figures: dict[str, Figure] = {"history": study.figure("history")}
    if done < 2:
        figures["importances"] = f"Parameter importances need at least 2 completed trials; this study has {done}."
    elif not any(t.distributions for t in completed(trials)):
        figures["importances"] = "The study searched no parameter: there is no importance to estimate."
    else:
        try:
            with warnings.catch_warnings():  # fANOVA's forest warns on a handful of trials
                warnings.simplefilter("ignore")
                figures["importances"] = study.figure("importances")
        except (ValueError, RuntimeError) as e:  # e.g. every completed trial scored the same
            figures["importances"] = f"Parameter importances could not be estimated: {e}"
    if any(t.distributions for t in completed(trials)):
        figures["parallel"] = study.figure("parallel")
        figures["slice"] = study.figure("slice")
    else:
        figures["parallel"] = figures["slice"] = "The study searched no parameter."
    return figures


def validation_curves(trials: list[Trial], tracked: Tracked, metric: str, best: int | None,
                      evals_per_epoch: int = 1) -> Figure:
    """The search metric at each evaluation, by epoch (2.5: half way through the third), per
    trial: Optuna's intermediate values, else the trial run's history in MLflow."""
    curves = {t.number: epoch_values(t, evals_per_epoch) or tracked.val_curves.get(t.number, [])
              for t in trials}
    if not any(curves.values()):
        return "No trial has reported an epoch yet."
    figure = _curves(trials, curves, best, "epoch", pretty(metric), "lines+markers")
    if evals_per_epoch > 1 and not isinstance(figure, str):
        figure.update_xaxes(dtick=None)  # points inside epochs: let plotly place the ticks
    return figure


def loss_curves(trials: list[Trial], tracked: Tracked, best: int | None) -> Figure:
    if not tracked.train_loss:
        return ("No train loss: it is in the trials' MLflow runs, which could not be read." if tracked.problems
                else "No trial has logged a training step yet.")
    return _curves(trials, {t.number: tracked.train_loss.get(t.number, []) for t in trials}, best, "step",
                   "train loss", "lines")


def _curves(trials: list[Trial], curves: dict[int, list[tuple[int, float]]], best: int | None,
            x_title: str, y_title: str, mode: str) -> go.Figure:
    fig = go.Figure()
    for t in trials:
        points = curves.get(t.number)
        if not points:
            continue
        state = t.state.name
        fig.add_trace(go.Scatter(
            x=[p[0] for p in points], y=[p[1] for p in points], mode=mode,
            name=f"trial {t.number}{' ★' if t.number == best else ''} ({state.lower()})",
            line={"dash": DASH.get(state, "solid"), "width": 3 if t.number == best else 1.5},
            hovertemplate=f"trial {t.number} ({state.lower()})<br>{x_title} %{{x}}<br>{y_title} %{{y:.4f}}"
                          "<extra></extra>"))
    fig.update_layout(xaxis_title=x_title, yaxis_title=y_title, legend_title="trial (state)",
                      margin={"t": 30})
    if x_title == "epoch":  # whole epochs only: no tick at 1.5
        fig.update_xaxes(dtick=1)
    return fig
