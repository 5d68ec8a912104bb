"""When a new model takes @champion: better beyond noise on the same test rows.

A test split of a few hundred rows cannot tell models apart that differ by a point or two: which
of them scores higher moves with the rows that happened to be drawn. So the search compares the
new version (the challenger) with the current champion by a **paired bootstrap** over the test
rows (`tasks.bootstrap.paired_bootstrap`: the same resampled rows score both models' kept
predictions), and @champion moves only when the challenger is better in at least
`registry.min_confidence` of the resamples (default 0.95), or better by at least
`registry.min_improvement` in the metric's own units when that is set. Otherwise the new version
gets @challenger, and its tag `challenger_reason` says by how much and with what confidence the
two differed. The comparison is recorded on the version (tag `champion_comparison`, JSON), whichever
way it went.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

COMPARISON_TAG = "champion_comparison"


@dataclass(frozen=True)
class Comparison:
    """The challenger against the champion on the same test rows."""

    metric: str
    challenger: float  # its score on the whole test split
    champion: float
    difference: float  # challenger - champion, in the metric's units
    ci: tuple[float, float]  # 95% interval of the difference over the resamples
    p_better: float  # share of resamples where the challenger is better (in the metric's direction)
    rounds: int
    maximize: bool = True
    rows: int = 0

    @property
    def improvement(self) -> float:
        """How much better the challenger is, in the metric's direction (negative: worse)."""
        return self.difference if self.maximize else -self.difference

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ci": list(self.ci)}, separators=(",", ":"))

    def said(self) -> str:
        return (f"{self.metric} {self.challenger:.4f} vs champion's {self.champion:.4f} on the same {self.rows} test "
                f"rows: {self.difference:+.4f} (95% CI {self.ci[0]:+.4f} to {self.ci[1]:+.4f}); better in "
                f"{self.p_better:.1%} of {self.rounds} paired resamples")


def decide(comparison: Comparison, min_confidence: float, min_improvement: float | None) -> tuple[bool, str]:
    """(whether @champion moves to the challenger, why, in a sentence)."""
    said = comparison.said()
    if comparison.improvement > 0 and comparison.p_better >= min_confidence:
        return True, f"{said} >= the {min_confidence:.0%} required"
    if min_improvement is not None and comparison.improvement >= min_improvement:
        return True, f"{said}; better by at least registry.min_improvement {min_improvement:g}"
    if comparison.improvement <= 0:
        return False, f"{said}: not better; @champion stays"
    needed = f"the {min_confidence:.0%} required (registry.min_confidence)"
    if min_improvement is not None:
        needed += f", nor better by registry.min_improvement {min_improvement:g}"
    return False, f"{said}: not {needed}; better maybe, but not beyond noise, so @champion stays"
