"""Bootstrap confidence intervals of test metrics, and a paired bootstrap of two models on one test set.

Calling `Task.evaluate` once per resample is far too slow (seqeval reads every sentence again on
every call). Every metric covered here is instead a function of a few counts summed over the
rows (true positives, predicted and true counts per label, correct rows, ...): a task writes those
counts once per row (`Task.row_stats` -> `RowStats`), and a resample's metrics are its `score` of
the resample's summed counts. Resampling the rows with replacement is a weights matrix W (rounds,
rows) of multinomial counts (how often each row was drawn), so all resamples' sums are one matrix
product W @ counts. Rows with identical counts are drawn as one group (`distinct_rows`): W is then
(rounds, groups), multinomial with the groups' sizes, the same distribution of sums at a fraction
of the cost (a single-label test set has at most classes^2 distinct rows, however large).

  confidence_intervals(stats)    percentile bootstrap CI of every metric `stats.score` returns
  paired_bootstrap(a, b, metric) the difference b - a of one metric, its CI and how often b is better,
                                 both models scored on the same resamples (the same W): "paired"

Zero denominators follow the tasks' own rule (scikit-learn's and seqeval's zero_division=0): a ratio
with nothing to divide by is 0, in the full set and in every resample alike (`ratio`).

Pure numpy; nothing here knows a task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["PairedResult", "RowStats", "confidence_intervals", "distinct_rows", "f1_of_counts", "f1_of_rates",
           "paired_bootstrap", "ratio", "resample_weights"]

MAX_CELLS = 1 << 21  # entries of one chunk of W (16 MiB of float64): bounds memory on 100k-row test sets


@dataclass
class RowStats:
    """Per-row sufficient statistics of a set of metrics.

    counts: (rows, k) float; a column is a count of one row (its true positives of a label, ...).
    score:  summed counts -> {metric name: value}. Takes (k,) (the full set: floats or 0-d arrays)
            or (B, k) (B resamples: (B,) arrays), so that every resample is scored in one call.
    """

    counts: np.ndarray
    score: Callable[[np.ndarray], dict[str, float]]

    def __post_init__(self):
        counts = np.asarray(self.counts, dtype=np.float64)
        if counts.ndim != 2:
            raise ValueError(f"RowStats.counts must be (rows, k), got shape {counts.shape}")
        self.counts = counts

    @property
    def rows(self) -> int:
        return self.counts.shape[0]

    def point(self) -> dict[str, float]:
        """The metrics of the full set (what the task's `evaluate` reports, without the prefix)."""
        return {name: float(value) for name, value in self.score(self.counts.sum(0)).items()}


@dataclass
class PairedResult:
    difference: float  # b - a on the full set, in the metric's own units
    ci: tuple[float, float]  # the bootstrap CI of the difference
    p_better: float  # share of resamples where b beats a in the metric's direction (ties count half)
    rounds: int


def ratio(num, den):
    """num / den elementwise, 0 where den is 0 (zero_division=0), exactly as scikit-learn and seqeval
    divide: the zero denominators are replaced by 1 and the result there set to 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    zero = den == 0
    return np.where(zero, 0.0, num / np.where(zero, 1.0, den))


def f1_of_counts(tp, pred, true):
    """F1 as scikit-learn computes it: 2 tp / (true + pred), 0 when both are 0."""
    tp, pred, true = (np.asarray(x, dtype=np.float64) for x in (tp, pred, true))
    return ratio(2.0 * tp, 1.0 * true + pred)


def f1_of_rates(precision, recall):
    """F1 as seqeval (and the SIGHAN word scores) compute it: 2 P R / (P + R), 0 when P + R is 0."""
    precision, recall = np.asarray(precision, dtype=np.float64), np.asarray(recall, dtype=np.float64)
    return ratio(2.0 * precision * recall, 1.0 * precision + recall)


def distinct_rows(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct rows of `counts` (G, k), how many rows each stands for (G,)). A single-label test set
    of 100k rows has at most classes^2 distinct count rows (true class, predicted class)."""
    counts = np.ascontiguousarray(counts, dtype=np.float64)
    if counts.shape[1] == 0:
        return counts[:1], np.array([len(counts)])
    keys = counts.view(np.dtype((np.void, counts.itemsize * counts.shape[1]))).ravel()
    _, first, multiplicity = np.unique(keys, return_index=True, return_counts=True)
    return counts[first], multiplicity


def resample_weights(multiplicity, rounds: int, seed: int = 0, max_cells: int = MAX_CELLS):
    """Yields W in chunks of r rounds (r, G) float64, `rounds` rows in all: W[i, g] is how many of
    resample i's draws (as many as there are rows, with replacement) hit group g.

    `multiplicity`: a number of rows (each its own group: W[i, j] is how often row j was drawn), or
    how many identical rows each of G groups stands for (`distinct_rows`); W is then the row-level W
    summed within groups, drawn directly as multinomial(rows, multiplicity / rows), which costs
    rounds x G instead of rounds x rows. The same arguments give the same W."""
    multiplicity = (np.ones(multiplicity, dtype=np.int64) if np.ndim(multiplicity) == 0
                    else np.asarray(multiplicity, dtype=np.int64))
    groups, rows = len(multiplicity), int(multiplicity.sum())
    rng = np.random.default_rng(seed)
    chunk = max(1, min(rounds, max_cells // max(groups, 1)))
    singles = groups == rows  # every group one row: counting drawn indices is the cheaper draw
    done = 0
    while done < rounds:
        r = min(chunk, rounds - done)
        if singles:
            drawn = rng.integers(0, rows, size=(r, rows)) + (np.arange(r) * rows)[:, None]
            w = np.bincount(drawn.ravel(), minlength=r * rows).reshape(r, rows)
        else:
            w = rng.multinomial(rows, multiplicity / rows, size=r)
        yield w.astype(np.float64)
        done += r


def _resampled(stats: list[RowStats], rounds: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Each stats' metrics on the same `rounds` resamples of the rows: {name: (rounds,) array} per
    stats. The rows are grouped by their counts in all stats together, so one W serves them all."""
    unique, multiplicity = distinct_rows(np.hstack([s.counts for s in stats]))
    edges = np.cumsum([0] + [s.counts.shape[1] for s in stats])
    columns = [unique[:, lo:hi] for lo, hi in zip(edges[:-1], edges[1:])]
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in stats]
    for w in resample_weights(multiplicity, rounds, seed):
        for s, counts, out in zip(stats, columns, parts):
            out.append({k: np.broadcast_to(np.asarray(v, dtype=np.float64), (len(w),))
                        for k, v in s.score(w @ counts).items()})
    return [{k: np.concatenate([chunk[k] for chunk in out]) for k in out[0]} for out in parts]


def _check(rounds: int, level: float) -> None:
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def confidence_intervals(stats: RowStats, rounds: int = 1000, level: float = 0.95,
                         seed: int = 0) -> dict[str, tuple[float, float]]:
    """{metric: (low, high)}: the percentile bootstrap CI of every metric `stats.score` returns, from
    `rounds` resamples of the rows with replacement. No rows: {} (there is nothing to resample)."""
    _check(rounds, level)
    if stats.rows == 0:
        return {}
    (values,) = _resampled([stats], rounds, seed)
    return {name: _interval(v, level) for name, v in values.items()}


def paired_bootstrap(a: RowStats, b: RowStats, metric: str, rounds: int = 1000, seed: int = 0,
                     maximize: bool = True, level: float = 0.95) -> PairedResult:
    """How much better b is than a on `metric` (a name `score` returns, e.g. "macro_f1"), resampling
    the same test rows for both. a and b must hold the same rows in the same order (the champion's and
    the challenger's `row_stats` on one test set). `maximize`: whether higher is better (`Task.maximize`)."""
    _check(rounds, level)
    if a.rows != b.rows:
        raise ValueError(f"paired bootstrap needs both models scored on the same test rows, in the same order; "
                         f"got {a.rows} and {b.rows} rows")
    if a.rows == 0:
        raise ValueError("paired bootstrap of an empty test set (0 rows): there is nothing to compare")
    full_a, full_b = a.score(a.counts.sum(0)), b.score(b.counts.sum(0))
    missing = [side for side, full in (("a", full_a), ("b", full_b)) if metric not in full]
    if missing:
        known = sorted(set(full_a) & set(full_b))
        raise ValueError(f"metric {metric!r} has no per-row form in {' and '.join(missing)}; "
                         f"known: {', '.join(known)}")
    values_a, values_b = _resampled([a, b], rounds, seed)
    diffs = values_b[metric] - values_a[metric]
    better = diffs > 0 if maximize else diffs < 0
    p_better = float((better.sum() + 0.5 * (diffs == 0).sum()) / rounds)
    return PairedResult(difference=float(full_b[metric]) - float(full_a[metric]), ci=_interval(diffs, level),
                        p_better=p_better, rounds=rounds)
