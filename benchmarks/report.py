"""Write the tasks table of docs/benchmarks.md from benchmarks/results/*.json (`benchmarks/tasks.py`).

    python benchmarks/report.py

Replaces what stands between the `<!-- tasks:begin -->` and `<!-- tasks:end -->` markers, so the
figures there are the result files' figures, never typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- tasks:begin -->", "<!-- tasks:end -->"


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def table(results: list[dict]) -> str:
    lines = ["| study | task | test metric | champion | baseline | champion − baseline | best validation "
             "| trials | wall time | machine, date, commit |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        gap = r["champion"] - r["baseline"] if r["champion"] is not None and r["baseline"] is not None else None
        states = ", ".join(f"{r['trials'].count(s)} {s}" for s in dict.fromkeys(r["trials"]))
        command = " ".join(["python benchmarks/tasks.py", r["name"], *r["overrides"]])
        lines.append(f"| `{command}` | {r['task']} | {r['metric']} | {_fmt(r['champion'])} | {_fmt(r['baseline'])} "
                     f"| {'' if gap is None else f'{gap:+.4f}'} | {_fmt(r['best_validation'])} ({r['search_metric']}) "
                     f"| {states} | {r['wall_seconds'] / 60:.1f} min{'*' if r.get('note') else ''} "
                     f"| {r['machine']}, {r['date']}, {r['commit']} |")
    lines += ["", *(f"\\* {r['name']}: {r['note']}" for r in results if r.get("note"))]
    return "\n".join(lines)


def main() -> None:
    results = [json.loads(p.read_text()) for p in sorted((ROOT / "benchmarks" / "results").glob("*.json"))]
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + table(results) + "\n" + text[end:])
    print(table(results))


if __name__ == "__main__":
    main()
