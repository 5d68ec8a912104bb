"""Compare two runs of the test suite made by `benchmarks/test_suite.sh` on one machine, in one
sitting, and keep the comparison for docs/benchmarks.md (`python benchmarks/report.py`).

    python benchmarks/test_suite.py compare BEFORE AFTER [--quick-before FILE] [--quick-after FILE]

BEFORE and AFTER name runs under benchmarks/results/perf/raw/ (NAME.xml, NAME.json). The measure
is the sum of every test's duration (setup + call + teardown, as JUnit records it): unlike the wall
time it does not depend on how pytest-xdist happened to spread the tests over the cores. A test is
matched across the runs by its node id; a test of BEFORE that AFTER lacks is listed, so a cut that
dropped a behaviour shows. `--quick-*` name files of node ids (`pytest --collect-only -q -m "not
slow and not cluster"`) to add up the quick subset's share of each run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import date
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "benchmarks" / "results" / "perf" / "raw"
OUT = ROOT / "benchmarks" / "results" / "perf" / "test_suite.json"


def durations(xml: Path) -> dict[str, dict]:
    """node id -> {"seconds", "outcome"} from a JUnit file."""
    tests = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        # xdist's loadgroup scheduler appends "@group" to a grouped test's id; the test is the same.
        name = re.sub(r"@[\w.-]+$", "", case.get("name", ""))
        outcome = ("failed" if case.find("failure") is not None or case.find("error") is not None
                   else "skipped" if case.find("skipped") is not None else "passed")
        tests[f"{module}.py::{name}"] = {"seconds": float(case.get("time", 0.0)), "outcome": outcome}
    return tests


def _quick(path: str | None) -> set[str] | None:
    if not path:
        return None
    return {re.sub(r"@[\w.-]+$", "", line.strip()) for line in Path(path).read_text().splitlines() if "::" in line}


def summary(name: str, tests: dict[str, dict], quick: set[str] | None) -> dict:
    run = json.loads((RAW / f"{name}.json").read_text())
    folders: dict[str, float] = defaultdict(float)
    for node, t in tests.items():
        folders[node.split("::")[0].rsplit("/", 1)[0]] += t["seconds"]
    outcomes = {o: sum(t["outcome"] == o for t in tests.values()) for o in ("passed", "failed", "skipped")}
    out = {"commit": run["commit"], "started": run["started"], "wall_seconds": run["wall_seconds"],
           "exit_code": run["exit_code"], "tests": len(tests), **outcomes,
           "sum_seconds": round(sum(t["seconds"] for t in tests.values()), 1),
           "folders": {k: round(v, 1) for k, v in sorted(folders.items())}}
    if quick is not None:
        out["quick_tests"] = len(quick & set(tests))
        out["quick_sum_seconds"] = round(sum(t["seconds"] for n, t in tests.items() if n in quick), 1)
    return out


def machine() -> dict:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{memory:.0f} GiB", "python": platform.python_version(),
            "versions": {p: metadata.version(p) for p in ("pytest", "pytest-xdist", "torch", "transformers",
                                                           "mlflow", "optuna")}}


def compare(before: str, after: str, quick_before: str | None, quick_after: str | None) -> dict:
    b, a = durations(RAW / f"{before}.xml"), durations(RAW / f"{after}.xml")
    rows = [{"test": n, "before": b[n]["seconds"] if n in b else None, "after": a[n]["seconds"] if n in a else None}
            for n in sorted(set(b) | set(a))]
    result = {**machine(), "before": summary(before, b, _quick(quick_before)),
              "after": summary(after, a, _quick(quick_after)),
              "only_before": sorted(set(b) - set(a)), "only_after": sorted(set(a) - set(b)), "tests": rows}
    result["ratio"] = round(result["after"]["sum_seconds"] / result["before"]["sum_seconds"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare")
    c.add_argument("before")
    c.add_argument("after")
    c.add_argument("--quick-before")
    c.add_argument("--quick-after")
    args = parser.parse_args()
    result = compare(args.before, args.after, args.quick_before, args.quick_after)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"sum of test durations: {result['before']['sum_seconds']:.0f} s -> {result['after']['sum_seconds']:.0f} s "
          f"({result['ratio']:.2f}x); wall {result['before']['wall_seconds']} s -> {result['after']['wall_seconds']} s; "
          f"tests {result['before']['tests']} -> {result['after']['tests']}; only before: {len(result['only_before'])}")


if __name__ == "__main__":
    main()
