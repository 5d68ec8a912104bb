"""Progress for a study: rich bars on a terminal (trials done / total with best so far, and the
running trial's epoch, step and loss); plain log lines otherwise (CI, files, pipes)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def terminal() -> Console:
    """A console for this command's output: the terminal's width on a terminal; 160 columns in
    a log file or pipe, where rich would otherwise fold tables into 80."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=160)


class StudyProgress:
    """Thread-safe: trials in several slots report at once (rich's Progress has its own lock)."""

    def __init__(self, total_trials: int | None, console: Console | None = None):
        self.console = console or terminal()
        self.live = self.console.is_terminal
        self.done = 0
        self.total = total_trials
        self.trials: dict[int, dict] = {}  # number -> {"task": id, "epochs": n}
        if self.live:
            self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console)
            self.study_task = self.bars.add_task("study", total=total_trials, info="")
            self.bars.start()

    def print(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def phase(self, name: str) -> None:
        """A new phase of the search begins (checking the input, preparing the data...)."""
        self.print(f"-- {name}")

    def start_trial(self, number: int, params: dict, total_steps: int, epochs: int, slot: str = "") -> None:
        task = None
        if self.live:
            task = self.bars.add_task(f"trial {number} [{slot}]", total=total_steps, info="")
        self.trials[number] = {"task": task, "epochs": epochs}
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
        self.print(f"trial {number} started on {slot}: {shown}" if slot else f"trial {number} started: {shown}")

    def event(self, event: dict) -> None:
        """A progress event from a trial process (see `execution.job.emit`)."""
        info = self.trials.get(event["trial"])
        if info is None:
            return
        if event["type"] == "step" and self.live:
            self.bars.update(info["task"], completed=event["step"],
                             info=f"epoch {event['epoch']}/{info['epochs']} loss {event['loss']:.4f}")
        elif event["type"] == "eval":
            self.print(f"  trial {event['trial']} epoch {event['epoch']:g}/{info['epochs']}: {event['value']:.4f}")

    def end_trial(self, number: int, state: str, value: float | None, best: float | None) -> None:
        self.done += 1
        best_text = f"best {best:.4f}" if best is not None else ""
        info = self.trials.pop(number, None)
        if self.live:
            self.bars.update(self.study_task, completed=self.done, info=best_text)
            if info and info["task"] is not None:
                self.bars.remove_task(info["task"])
        val = f" value={value:.4f}" if value is not None else ""
        self.print(f"trial {number} {state}{val} ({self.done}/{self.total or '?'} done"
                   f"{', ' + best_text if best_text else ''})")

    def close(self) -> None:
        if self.live:
            self.bars.stop()


def print_summary(summary, console: Console, config_path: str) -> None:
    """The study's outcome: trials, best hyperparameters, champion vs baseline, where to look."""
    from rich.table import Table

    p = console.print
    if summary.interrupted and not summary.trials:
        p(f"interrupted while {summary.phase or 'starting'}: no trial had started; "
          f"run the same command to start again.")
        p(f"took {summary.seconds:.0f} s")
        return
    table = Table(title=f"study {summary.study_name}: {len(summary.trials)} trial(s)")
    for col in ("trial", "state", summary.metric, "params", "note"):
        table.add_column(col, overflow="fold")
    for t in summary.trials:
        mark = " *" if t.number == summary.best_trial else ""
        table.add_row(f"{t.number}{mark}", t.state, "" if t.value is None else f"{t.value:.4f}",
                      ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items()), _short(t.note))
    console.print(table)
    if summary.discarded_samples:
        p(f"{summary.discarded_samples} sample(s) repeated an earlier trial's parameters and were drawn again")
    if summary.tracking_error:
        p(f"the MLflow store failed after the trials ({summary.tracking_error}); every trial is kept in the "
          f"Optuna storage. Run the same command again when the store is back to log the plots and register.")
    if summary.registry_error:
        p(f"MLflow refused a write after the trials, so the champion is not (fully) registered: "
          f"{summary.registry_error}")
    if summary.interrupted:
        registered = ("the champion was registered before it stopped" if summary.registration
                      else "nothing was registered")
        p(f"interrupted while {summary.interrupted_in or summary.phase}: the summary so far; {registered}. "
          f"Run the same command to continue.")
    if summary.best_trial is None:
        p("No trial completed, so nothing was evaluated on test or registered. See the FAIL notes above.")
    else:
        lower = "" if summary.maximize else " (lower is better)"
        p(f"best trial: {summary.best_trial}  best {summary.metric}: {summary.best_value:.4f}{lower}")
        p("best hyperparameters: " + ", ".join(f"{k}={_fmt(v)}" for k, v in summary.best_params.items()))
        if summary.threshold_note:
            p(summary.threshold_note)
        _print_confirmation(summary, p)
        if summary.champion_elsewhere:
            p(f"the best trial's checkpoint is not on this machine but on {summary.champion_elsewhere!r}: "
              f"the search process there evaluates it on test and registers it (re-run it there if it has ended)")
        test = summary.champion_test
        if summary.test_metric in test:
            extra = f"  (accuracy {test['test_accuracy']:.4f})" if "test_accuracy" in test else ""
            low, high = test.get(f"{summary.test_metric}_ci_low"), test.get(f"{summary.test_metric}_ci_high")
            ci = "" if low is None else f", 95% CI {low:.4f} to {high:.4f} (bootstrap over the test rows)"
            p(f"champion {pretty(summary.test_metric)}: {test[summary.test_metric]:.4f}{ci}{extra}")
    baseline = summary.baseline.get(f"baseline_{summary.test_metric}")
    if baseline is not None:
        p(f"baseline ({summary.baseline_name}) {pretty(summary.test_metric)}: {baseline:.4f}")
        champion = summary.champion_test.get(summary.test_metric)
        if champion is not None:  # who wins, in the metric's own direction
            gap = champion - baseline if summary.test_maximize else baseline - champion
            verdict = "beats" if gap > 0 else "TRAILS" if gap < 0 else "ties"
            by = f" by {abs(gap):.4f}" if gap else ""
            p(f"champion {verdict} the baseline{by} "
              f"({'higher' if summary.test_maximize else 'lower'} {pretty(summary.test_metric)} is better)")
        if summary.baseline_comparison:
            p(summary.baseline_comparison)
    r = summary.registration
    if r is not None:
        state = "already registered" if r.reused else f"registered as version {r.version}"
        prev = "" if r.previous_champion is None else f"; previous champion {r.previous_champion:.4f}"
        p(f"model {r.name!r} {state} -> alias @{r.alias}{prev}")
        if r.note:
            p(f"  {r.note}")
        elif r.comparison is not None:
            p(f"  {r.reason}")
        p(f"load it: mlflow.pyfunc.load_model('models:/{r.name}@{r.alias}') "
          f"with tracking URI {summary.tracking_uri}")
    for note in summary.notes:  # settings the search did not use, and why
        p(note)
    p(f"took {summary.seconds:.0f} s ({summary.seconds / 60:.1f} min)")
    p(f"open the MLflow UI: python -m orchestrator ui --config {config_path}")


def _print_confirmation(summary, p) -> None:
    """The confirmed configurations: mean ± sd of their runs, the champion's marked, and the
    confirmations' own budget."""
    if summary.confirm_budget is not None:
        done, planned = summary.confirm_budget
        p(f"confirmation budget (beside the trials'): {done} of {planned} run(s) finished")
    if not summary.confirmation:
        return
    p(f"confirmed configurations ({summary.metric}, mean ± standard deviation over the trial and its new seeds):")
    for g in summary.confirmation:
        mark = "  <- champion" if g["trial"] == summary.confirmed_trial else ""
        values = ", ".join(f"{r['value']:.4f}" for r in g["runs"])
        p(f"  trial {g['trial']}: {g['mean']:.4f} ± {g['std']:.4f} ({g['completed']} of {g['planned']} runs: "
          f"{values}){mark}")
    chosen = next((g for g in summary.confirmation if g["trial"] == summary.confirmed_trial), None)
    if chosen is not None:
        spread = max(r["value"] for r in chosen["runs"]) - min(r["value"] for r in chosen["runs"])
        p(f"champion: the configuration of trial {chosen['trial']} (best mean); its runs span {spread:.4f}; the "
          f"registered weights are its best run's, trial {chosen['best_run']}")


def pretty(metric: str) -> str:
    """A metric's name as people write it: test_macro_f1 -> test macro-F1, val_f1 -> val F1."""
    words = metric.split("_")
    if words[-1] == "f1":
        words = words[:-2] + [f"{words[-2]}-F1"] if len(words) > 2 else [words[0], "F1"]
    return " ".join(words)


def _short(note: str, most: int = 160) -> str:
    """A note that fits the table, keeping its end: a failure's note ends with the log to open."""
    if len(note) <= most:
        return note
    at = note.rfind("full log: ")
    tail = note[at:] if at >= 0 else note[-60:]
    return note[:max(40, most - len(tail) - 5)] + " … " + tail


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
