"""`python -m orchestrator report`: one self-contained HTML page about a study.

It reads the study's two stores and writes to neither, except that the finished page is logged
on the study's MLflow run (`report/report.html`; a failure there is a warning). The pieces, in
the order `write_report` uses them:
- `orchestrator.search.records.read_study`: the study, from its Optuna storage (`StorageError`
  when it is not there);
- `_tracked.py`: what MLflow holds about it (trial runs, train loss, baseline, champion), read
  through `orchestrator.tracking.study_runs`, as far as the store can be read;
- `_figures.py`: the plotly figures (Optuna's views and each trial's learning curves);
- `_page.py`: the HTML, with plotly.js inline, so the file opens without a network.
"""

from orchestrator.reporting.report._write import write_report

__all__ = ["write_report"]
