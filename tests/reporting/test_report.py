"""`report` writes one self-contained page of a study: checked against the stores of a real
finished search, opened in a headless Chromium, and on a study with no completed trial and no
MLflow store; bad input is exit 2 with nothing created."""

import re
import shutil
import subprocess

from pathlib import Path

import optuna
import plotly.offline
import pytest
import yaml
from mlflow import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from orchestrator.cli import main

SECTIONS = ("summary", "champion", "trials", "curves", "history", "importances", "parallel", "slice", "runs")
PLOTS = ("history", "importances", "parallel", "slice", "curves")  # one section per kind of plot


@pytest.fixture(scope="module")
def report(finished_search, tmp_path_factory):
    """The finished search's report, written once for this module's tests."""
    path = tmp_path_factory.mktemp("report") / "r.html"
    assert main(["report", "--config", str(finished_search.config), "--output", str(path)]) == 0
    return path


def _section(html: str, key: str) -> str:
    assert html.count(f'<section id="{key}">') == 1, key
    return html.split(f'<section id="{key}">', 1)[1].split("</section>", 1)[0]


def test_report_of_a_finished_search(finished_search, report):
    html = report.read_text(encoding="utf-8")
    for key in SECTIONS:
        _section(html, key)
    for key in PLOTS:  # a figure, or the sentence that says why there is none
        assert 'class="figure"' in _section(html, key) or 'class="missing"' in _section(html, key), key
    assert html.count(plotly.offline.get_plotlyjs()) == 1  # plotly.js inline, once
    assert not re.search(r'<(script|link|img|iframe)[^>]*(src|href)="https?:', html)  # opens without a network

    study = optuna.load_study(study_name="done", storage=finished_search.storage)
    trials = [t for t in study.trials if "duplicate_of" not in t.user_attrs]
    table = _section(html, "trials")
    assert table.count('data-trial="') == len(trials) == 3
    for t in trials:
        assert f'data-trial="{t.number}" data-state="{t.state.name}"' in table

    client = MlflowClient(finished_search.tracking_uri, registry_uri=finished_search.tracking_uri)
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    versus = _section(html, "champion")
    shown = {k: v for k, v in parent.data.metrics.items() if k.startswith(("baseline_", "champion_"))}
    assert {"baseline_test_macro_f1", "baseline_val_macro_f1", "champion_test_macro_f1"} <= set(shown)
    for key, value in shown.items():
        if key.endswith(("_ci_low", "_ci_high")):  # beside its metric in the test metrics' table
            side = "low" if key.endswith("_low") else "high"
            assert f'data-{side}="{value!r}"' in versus, key
            continue
        assert f'data-metric="{key}" data-value="{value!r}">{value:.4f}<' in versus, key
    lineage = _section(html, "lineage")
    assert 'id="datasets"' in lineage and parent.data.tags["code_version"] in lineage
    assert "No configuration was confirmed" in _section(html, "evidence")
    assert parent.data.tags["registered_model"] in versus  # done-clf/<version>
    assert "data:image/png;base64," in versus  # the champion's confusion matrix on test
    assert "classification_report_test.txt" in versus

    run_page = f"http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
    assert run_page in _section(html, "runs")
    assert f"python -m orchestrator ui --config {finished_search.config}" in _section(html, "runs")
    assert {"report/report.html"} == {a.path for a in client.list_artifacts(parent.info.run_id, "report")}


def _chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (.ci/run installs Debian's chromium)")
def test_report_renders_in_a_browser(report, tmp_path):
    html = report.read_text(encoding="utf-8")
    figures = html.count('<div class="figure"')
    assert figures >= 5
    done = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    # Plotly marks each graph it drew and puts its SVG inside: every figure must have both.
    assert len(re.findall(r'<div [^>]*class="plotly-graph-div js-plotly-plot"', dom)) == figures
    drawn = dom.split('<div class="figure"')[1:]
    assert len(drawn) == figures and all('class="main-svg"' in part for part in drawn)
    # This Chromium logs every console message (error or not) as INFO:CONSOLE; the page logs none.
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, console


def _config(tmp_path, name: str, **search) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "data": {"train": str(tmp_path / "train.csv")}, "model": {"name_or_path": "tiny"},
        "search": {"storage": f"sqlite:///{tmp_path / 'optuna.db'}", "work_dir": str(tmp_path / "studies"),
                   **search},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}}))
    return str(path)


def test_a_study_without_a_completed_trial_or_mlflow_store_still_gets_a_page(tmp_path, capsys):
    study = optuna.create_study(study_name="early", storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                                direction="maximize")
    lr = {"learning_rate": FloatDistribution(1e-4, 1e-2, log=True)}
    running = study.ask(lr)
    running.report(0.3, 1)
    failed = study.ask(lr)
    failed.set_user_attr("fail_reason", "RuntimeError: <b>boom</b>")
    study.tell(failed, state=TrialState.FAIL)
    pruned = study.ask(lr)
    pruned.report(0.1, 1)
    pruned.report(0.12, 2)
    study.tell(pruned, state=TrialState.PRUNED)

    assert main(["report", "--config", _config(tmp_path, "early")]) == 0
    page = tmp_path / "studies" / "early" / "report.html"  # the default: the study's folder
    assert capsys.readouterr().out.strip() == f"wrote {page}"
    html = page.read_text(encoding="utf-8")
    for key in SECTIONS:
        _section(html, key)
    for state, number in (("RUNNING", 0), ("FAIL", 1), ("PRUNED", 2)):
        assert f'data-trial="{number}" data-state="{state}"' in html
    assert "RuntimeError: &lt;b&gt;boom&lt;/b&gt;" in html and "pruned after epoch 2" in html
    assert '"name":"trial 2 (pruned)"' in html and '"dash":"dash"' in html  # a pruned curve is dashed
    assert "No MLflow store at" in html and "No trial has completed yet" in _section(html, "history")
    assert not (tmp_path / "mlruns").exists()  # read only: no MLflow store was made


def test_bad_input_is_exit_2_and_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "optuna.db"
    config = _config(tmp_path, "gone", storage=f"sqlite:///{missing}")
    assert main(["report", "--config", config]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: search.storage") and "orchestrator search" in err[0]
    assert not missing.exists() and not missing.parent.exists()

    optuna.create_study(study_name="there", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert main(["report", "--config", _config(tmp_path, "there"), "search.study_name=nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no study named 'nope'" in err[0] and "'there'" in err[0]

    config = _config(tmp_path, "there")
    before = Path(config).read_text()
    # A missing folder, a folder, and a slip that names the experiment itself (or data): no page over it.
    for output in ("/nonexistent/dir/r.html", str(tmp_path), config):
        assert main(["report", "--config", config, "--output", output]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: --output {output}")
    assert Path(config).read_text() == before
    assert not (tmp_path / "studies").exists() and not (tmp_path / "mlruns").exists()


def test_the_trials_table_shows_each_trials_peak_gpu_memory_where_measured():
    """The trials table as `report` builds it. No GPU needed: the first trial carries the user attr
    a trial on a GPU sends (its peak memory as a share of the card), the second measured none."""
    from types import SimpleNamespace

    from optuna.trial import create_trial

    from orchestrator.reporting.report._page import _trials
    from orchestrator.reporting.report._tracked import Tracked

    study = optuna.create_study(direction="maximize")
    lr = FloatDistribution(1e-4, 1e-2, log=True)
    for value, attrs in ((0.5, {"peak_gpu_memory_share": 0.7341}), (0.6, {})):
        study.add_trial(create_trial(value=value, params={"learning_rate": 1e-3}, distributions={"learning_rate": lr},
                                     user_attrs=attrs))
    cfg, tracked = SimpleNamespace(search=SimpleNamespace(metric="val_macro_f1")), Tracked(uri="m")
    trials = study.trials
    html = _trials(cfg, trials, tracked, trials[1])
    assert html.count("<th>peak GPU memory</th>") == 1
    first, second = (row.split("</tr>")[0] for row in html.split('data-trial="')[1:])
    assert first.endswith('<td class="num" data-metric="peak_gpu_memory_share" data-value="0.7341">73%</td>')
    assert second.endswith('<td></td><td class="num"></td>')  # no MLflow link, no peak
    assert "peak GPU memory" not in _trials(cfg, trials[1:], tracked, trials[1])  # nothing measured: no column
