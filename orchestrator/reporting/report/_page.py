"""The HTML page: sections of tables and figures around one inline copy of plotly.js.

Self-contained, so that it opens anywhere without a network: the script, the figures and the
champion's images are all inside the file. Every text from a store is escaped.
"""

from __future__ import annotations

import base64
import datetime as dt
from html import escape

import plotly.offline

from orchestrator.config import ExperimentConfig
from orchestrator.config.secrets import redact
from orchestrator.reporting.report._figures import Figure
from orchestrator.reporting.report._tracked import Tracked
from orchestrator.reporting.status import PEAK_GPU
from orchestrator.search.progress import pretty
from orchestrator.search.records import StudyRecord, Trial, params_of
from orchestrator.search.study import retried_from

STATE_COLOURS = {"COMPLETE": "#1a7f37", "PRUNED": "#bc4c00", "FAIL": "#cf222e", "RUNNING": "#0969da",
                 "WAITING": "#6e7781"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #1f2328; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.state { font-weight: 600; } .note { background: #fff8c5; border: 1px solid #d4a72c; padding: 0.5em 1em; }
.missing { color: #57606a; font-style: italic; } pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; }
tr.pruned td, tr.fail td { background: #fff5f0; } .better { color: #1a7f37; } .worse { color: #cf222e; }
"""


def page(cfg: ExperimentConfig, study: StudyRecord, trials: list[Trial], tracked: Tracked,
         figures: dict[str, Figure], best: Trial | None, discarded: int) -> str:
    sections = [
        ("summary", "Study", _summary(cfg, study, trials, tracked, best, discarded)),
        ("champion", "Champion", _champion(cfg, tracked, best)),
        ("evidence", "Evidence: seeds and noise", _evidence(cfg, study, tracked)),
        *([("front", "Quality against cost: the Pareto front", _front(study, tracked))] if study.front else []),
        ("lineage", "Lineage", _lineage(tracked)),
        ("trials", "Trials", _trials(cfg, trials, tracked, best)),
        ("curves", "Learning curves", _figure(figures["validation"], "validation")
         + _figure(figures["loss"], "loss")),
        ("history", "Optimisation history", _figure(figures["history"], "history")),
        ("importances", "Parameter importances", _figure(figures["importances"], "importances")),
        ("parallel", "Parallel coordinates", _figure(figures["parallel"], "parallel")),
        ("slice", "Slice plots", _figure(figures["slice"], "slice")),
        ("runs", "MLflow runs", _runs(cfg, trials, tracked)),
    ]
    body = "\n".join(f'<section id="{key}">\n<h2>{escape(title)}</h2>\n{html}\n</section>'
                     for key, title, html in sections)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>Study {escape(cfg.study_name)}: report</title>\n<style>{STYLE}</style>\n"
            f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>\n</head>\n<body>\n'
            f"<h1>Study {escape(cfg.study_name)}</h1>\n{body}\n</body>\n</html>\n")


def _figure(figure: Figure, kind: str) -> str:
    if isinstance(figure, str):
        return f'<p class="missing">{escape(figure)}</p>'
    html = figure.to_html(full_html=False, include_plotlyjs=False, default_height="480px",
                          config={"displaylogo": False, "responsive": True})
    return f'<div class="figure" data-kind="{kind}">{html}</div>'


def _summary(cfg: ExperimentConfig, study: StudyRecord, trials: list[Trial], tracked: Tracked,
             best: Trial | None, discarded: int) -> str:
    counts = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    rows = [("task", cfg.task), ("objective", f"{study.direction} {pretty(cfg.search.metric)}"),
            ("trials", ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "none yet"),
            ("best trial", f"{best.number}: {pretty(cfg.search.metric)} {best.value:.4f}" if best else "none yet"),
            ("config", cfg.source), ("Optuna storage (search.storage)", redact(cfg.search.storage)),
            ("MLflow store (tracking.uri)", tracked.uri), ("MLflow experiment", cfg.experiment_name),
            ("written", dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))]
    if discarded:
        rows.insert(3, ("discarded samples", f"{discarded} (they repeated an earlier trial's parameters and did "
                                             f"not run; not shown)"))
    notes = "".join(f'<p class="note">{escape(p)}</p>' for p in tracked.problems)
    return notes + _table(None, [[f"<th>{escape(k)}</th>", _td(escape(str(v)))] for k, v in rows])


def _champion(cfg: ExperimentConfig, tracked: Tracked, best: Trial | None) -> str:
    tags, metrics = tracked.parent_tags, tracked.parent_metrics
    parts = []
    if "best_trial" in tags:
        parts.append(f"<p>The champion is trial {escape(tags['best_trial'])}'s best-epoch model, evaluated on the "
                     f"test split, next to the baseline fitted on the same splits.</p>")
    elif best is not None:
        parts.append(f'<p class="missing">Trial {best.number} is the best so far, but no champion has been '
                     f"evaluated on the test split yet (the search stopped before, or MLflow could not be read).</p>")
    else:
        parts.append('<p class="missing">No trial has completed: there is no champion yet.</p>')
    parts.append(_versus(cfg, metrics))
    registered = tags.get("registered_model")
    if registered and "/" in registered:
        name, _, version = registered.rpartition("/")
        link = tracked.model_link(name, version)
        shown = f'<a href="{escape(link)}">{escape(registered)}</a>' if link else escape(registered)
        alias = tags.get("registered_alias", "?")
        now = ("" if tracked.alias_holder is None else " (it still holds @champion)"
               if tracked.alias_holder == version else f" (@champion has since moved to version "
                                                      f"{escape(tracked.alias_holder)})")
        parts.append(f"<p>Registered as <code>{shown}</code> with alias <code>@{escape(alias)}</code>{now}: "
                     f"<code>models:/{escape(name)}@{escape(alias)}</code>.</p>")
    champion = tracked.champion
    if champion is not None:
        link = tracked.run_link(champion.run_id)
        if champion.metrics:
            m = champion.metrics
            rows = [[_td(escape(pretty(k))), _number(v, k), _interval(m.get(f"{k}_ci_low"), m.get(f"{k}_ci_high"))]
                    for k, v in sorted(m.items()) if not k.endswith(("_ci_low", "_ci_high"))]
            parts.append("<h3>Test metrics</h3>" + _table(["metric", "value", "95% CI (bootstrap over the test rows)"],
                                                          rows, table_id="test-metrics"))
        for name, png in champion.images:
            parts.append(f"<h3>{escape(name)}</h3><img alt=\"{escape(name)}\" style=\"max-width:100%\" "
                         f"src=\"data:image/png;base64,{base64.b64encode(png).decode()}\">")
        for name, text in champion.texts:
            parts.append(f"<h3>{escape(name)}</h3><pre>{escape(text)}</pre>")
        for name, columns, rows, total in champion.tables:
            shown = f" (the first {len(rows)} of {total} rows)" if total > len(rows) else ""
            parts.append(f"<h3>{escape(name)}{shown}</h3>" + _table(
                [escape(str(c)) for c in columns], [[_cell(v) for v in row] for row in rows]))
        if champion.skipped:
            where = f' in <a href="{escape(link)}">its run</a>' if link else " in its run"
            parts.append(f'<p class="missing">Not embedded (too large or not a table): '
                         f"{escape(', '.join(champion.skipped))}; see them{where}.</p>")
    return "\n".join(parts)


def _interval(low: float | None, high: float | None) -> str:
    return '<td class="num"></td>' if low is None or high is None else \
        f'<td class="num" data-low="{low!r}" data-high="{high!r}">{low:.4f} – {high:.4f}</td>'


def _evidence(cfg: ExperimentConfig, study: StudyRecord, tracked: Tracked) -> str:
    """Why this champion: its configuration's runs on other seeds (search.confirm), whether it
    beats the baseline beyond noise, and the paired test that decided @champion."""
    parts = []
    confirmed = study.confirmation()
    if confirmed:
        chosen = tracked.parent_tags.get("confirmed_trial")
        rows = [[_td(f"{g['trial']}{' ★' if str(g['trial']) == chosen else ''}"), _number(g["mean"]),
                 _number(g["std"]), _td(f"{g['completed']} of {g['planned']}"),
                 _td(escape(", ".join(f"{r['value']:.4f}" + (f" (seed {r['seed']})" if r["seed"] is not None else "")
                                      for r in g["runs"]))),
                 _td(str(g["best_run"])), _td(escape(", ".join(f"{k}={_param(v)}" for k, v in g["params"].items())))]
                for g in confirmed]
        parts.append(f"<p>The best configurations were trained again on new seeds; the champion is the "
                     f"configuration of best mean {escape(pretty(cfg.search.metric))} (★), its weights its best "
                     f"run's.</p>" + _table(["trial", "mean", "standard deviation", "runs", "values", "best run",
                                             "parameters"], rows, table_id="confirmation"))
    else:
        parts.append('<p class="missing">No configuration was confirmed on other seeds (search.confirm.top_k is 0, '
                     "or the trials have not finished): the champion is the single best trial.</p>")
    for tag, what in (("baseline_comparison", "Against the baseline"),
                      ("champion_comparison", "Against the champion it met (paired bootstrap on the same test rows)")):
        if tag in tracked.parent_tags:
            parts.append(f"<h3>{escape(what)}</h3><p>{escape(tracked.parent_tags[tag])}</p>")
    return "\n".join(parts)


def _front(study: StudyRecord, tracked: Tracked) -> str:
    """search.objectives: every completed trial's objectives, those on the front marked, Optuna's
    Pareto-front plot, and which trial got @fast."""
    rows = study.pareto_table()
    if not rows:
        return '<p class="missing">No trial has completed with its objectives measured yet.</p>'
    names = [k for k in rows[0] if k not in ("trial", "quality", "pareto")]
    table = _table(["trial", "quality", *map(escape, names), "on the front"],
                   [[_td(str(r["trial"])), _number(r["quality"]), *(_number(r[k]) for k in names),
                     _td("yes" if r["pareto"] else "")] for r in rows], table_id="pareto")
    fast = tracked.parent_tags.get("fast_trial")
    said = f"<p>@fast: trial {escape(fast)} ({escape(tracked.parent_tags.get('fast_model', ''))}).</p>" if fast else ""
    try:
        figure = _figure(study.pareto_figure(), "pareto")
    except (ValueError, RuntimeError) as e:  # e.g. no completed trial in the front yet
        figure = f'<p class="missing">No Pareto plot: {escape(str(e))}</p>'
    return ("<p>Latency: median of one text (batch 1) on the trial's ONNX export, one ONNX Runtime thread; "
            "params: parameter count; model_mb: the ONNX file's size.</p>" + table + said + figure)


def _lineage(tracked: Tracked) -> str:
    """What the study was made from: its data (MLflow dataset inputs), code and encoder."""
    tags = tracked.parent_tags
    rows = [[f"<th>{escape(k)}</th>", _td(escape(tags[key]))]
            for k, key in (("code", "code_version"), ("data fingerprint", "data_fingerprint"),
                           ("encoder", "encoder"), ("encoder fingerprint", "encoder_fingerprint"),
                           ("encoder version", "encoder_version"), ("encoder's pre-training run", "encoder_run_id"))
            if key in tags]
    parts = [_table(None, rows)] if rows else []
    if tracked.datasets:
        parts.append(_table(["split", "context", "rows", "digest", "source"],
                            [[_td(escape(d["name"])), _td(escape(d["context"])), _td(str(d["rows"] or "")),
                              _td(f"<code>{escape(d['digest'])}</code>"), _td(escape(str(d["source"])))]
                             for d in tracked.datasets], table_id="datasets"))
    return "\n".join(parts) or '<p class="missing">No lineage recorded on the study\'s MLflow run.</p>'


def _versus(cfg: ExperimentConfig, metrics: dict[str, float]) -> str:
    """The parent run's `baseline_<m>` and `champion_<m>` metrics side by side, by `<m>`."""
    names = sorted({k.split("_", 1)[1] for k in metrics if k.startswith(("baseline_", "champion_"))
                    and not k.endswith(("_ci_low", "_ci_high"))},  # the test metrics' table shows those
                   key=lambda m: (not m.startswith("val"), m))
    if not names:
        return '<p class="missing">No champion or baseline metrics on the study\'s MLflow run.</p>'
    rows = []
    for m in names:
        base, champ = metrics.get(f"baseline_{m}"), metrics.get(f"champion_{m}")
        diff = ""
        if base is not None and champ is not None:
            better = (champ < base) if m.endswith("loss") else (champ > base)
            diff = f'<span class="{"better" if better else "worse"}">{champ - base:+.4f}</span>'
        rows.append([_td(escape(pretty(m))), _number(base, f"baseline_{m}"), _number(champ, f"champion_{m}"),
                     _td(diff)])
    return _table(["metric", "baseline", "champion", "champion − baseline"], rows, table_id="versus")


def _trials(cfg: ExperimentConfig, trials: list[Trial], tracked: Tracked, best: Trial | None) -> str:
    if not trials:
        return '<p class="missing">The study has no trial yet.</p>'
    rows, attrs = [], []
    gpu = any(PEAK_GPU in t.user_attrs for t in trials)  # measured only on a GPU
    for t in trials:
        state = t.state.name
        link = tracked.run_link(tracked.runs.get(t.number))
        epoch = tracked.run_metrics.get(t.number, {}).get("best_epoch")
        cells = [f"{t.number}{' ★' if best is not None and t.number == best.number else ''}",
                 f'<span class="state" style="color:{STATE_COLOURS.get(state, "inherit")}">{state}</span>',
                 None, escape(", ".join(f"{k}={_param(v)}" for k, v in params_of(t).items())),
                 escape(_duration(t)), "" if epoch is None else str(int(epoch)), escape(_note(t)),
                 f'<a href="{escape(link)}">run</a>' if link else ""]
        rows.append([_number(t.value) if c is None else _td(c) for c in cells]
                    + ([_share(t.user_attrs.get(PEAK_GPU))] if gpu else []))
        attrs.append(f'class="trial {state.lower()}" data-trial="{t.number}" data-state="{state}"')
    return _table(["trial", "state", pretty(cfg.search.metric), "parameters", "duration", "best epoch", "note",
                   "MLflow", *(["peak GPU memory"] if gpu else [])], rows, table_id="trial-table", row_attrs=attrs)


def _runs(cfg: ExperimentConfig, trials: list[Trial], tracked: Tracked) -> str:
    if tracked.ui is None or tracked.experiment_id is None:
        return '<p class="missing">No MLflow runs to link to (see the notes at the top).</p>'
    parts = [f"<p>The links open the MLflow UI at {escape(tracked.ui)}: run <code>{escape(tracked.ui_command)}</code> "
             f"first.</p>"] if tracked.ui_command else []
    items = []
    if tracked.parent_run_id:
        items.append(f'<li><a href="{escape(tracked.run_link(tracked.parent_run_id))}">the study\'s run '
                     f"({escape(cfg.study_name)})</a>: baseline, champion, study plots, this report</li>")
    for number, run_id in sorted(tracked.runs.items()):
        items.append(f'<li><a href="{escape(tracked.run_link(run_id))}">trial {number}</a></li>')
    experiment = f"{tracked.ui}/#/experiments/{tracked.experiment_id}"
    parts.append(f'<p>Experiment <a href="{escape(experiment)}">{escape(cfg.experiment_name)}</a>:</p>'
                 f"<ul>{''.join(items)}</ul>")
    return "\n".join(parts)


def _note(t: Trial) -> str:
    if t.state.name == "FAIL":
        return t.user_attrs.get("fail_reason", "its driver stopped sending heartbeats (process or machine died)")
    if t.state.name == "PRUNED":
        if "prune_reason" in t.user_attrs:
            return t.user_attrs["prune_reason"]
        return f"pruned after epoch {max(t.intermediate_values)}" if t.intermediate_values else "pruned"
    original = retried_from(t)
    if original is not None:
        return f"re-run of trial {original}, whose process died"
    if "confirms" in t.user_attrs:  # search.confirm: a top configuration trained again on another seed
        return f"confirms trial {t.user_attrs['confirms']} (seed {t.user_attrs.get('confirm_seed')})"
    if "warm_start_from" in t.user_attrs:  # search.warm_start: a finished study's configuration, run first
        return f"warm start from {t.user_attrs['warm_start_from']}"
    return ""


def _duration(t: Trial) -> str:
    if t.datetime_start is None:
        return ""
    end = t.datetime_complete or dt.datetime.now()
    seconds = (end - t.datetime_start).total_seconds()
    shown = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return shown if t.datetime_complete else f"{shown} so far"


def _param(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _number(v: float | None, metric: str | None = None) -> str:
    """A number to 4 places; the exact value in `data-value`, for whoever reads the page by program."""
    if v is None:
        return '<td class="num"></td>'
    key = f' data-metric="{escape(metric)}"' if metric else ""
    return f'<td class="num"{key} data-value="{v!r}">{v:.4f}</td>'


def _share(v: float | None) -> str:
    """A share of the GPU's memory as a percentage, the exact share in `data-value`; blank where the
    trial measured none (it trained on CPU, or an error stopped it)."""
    if v is None:
        return '<td class="num"></td>'
    return f'<td class="num" data-metric="{PEAK_GPU}" data-value="{v!r}">{v:.0%}</td>'


def _cell(v) -> str:
    if isinstance(v, float):
        return _number(v)
    text = ", ".join(map(str, v)) if isinstance(v, list) else str(v)
    return _td(escape(text[:300] + ("…" if len(text) > 300 else "")))


def _td(html: str) -> str:
    return f"<td>{html}</td>"


def _table(header: list[str] | None, rows: list[list[str]], table_id: str | None = None,
           row_attrs: list[str] | None = None) -> str:
    """Rows of ready `<td>` cells under a header of ready HTML."""
    head = f"<tr>{''.join(f'<th>{h}</th>' for h in header)}</tr>" if header else ""
    attrs = row_attrs or [""] * len(rows)
    body = "".join(f"<tr{' ' + a if a else ''}>{''.join(r)}</tr>" for r, a in zip(rows, attrs))
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}>{head}{body}</table>"
