"""The README's layout tree, from the package itself: one line per folder, its package docstring's
first line. `python scripts/layout.py` prints it; `tests/test_layout.py` fails when the README's
copy differs, so the README cannot drift from the code.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "orchestrator"
# Folders beside the package, described here (they hold no package docstring).
OTHERS = {
    "benchmarks/": "side-by-side comparisons with what a user would pick instead; results as JSON",
    "docker/": "the team stack (PostgreSQL, MLflow server, S3, Ray) as containers",
    "docs/": "benchmarks.md, rendered from benchmarks/results",
    "experiments/": "YAML experiments; each starts with the command that runs it",
    "scripts/": "setup, PostgreSQL for the tests, this layout",
    "tests/": "mirrors the package; e2e/ whole commands, reliability/ the promises, cluster/ the team stack",
}
BEGIN, END = "<!-- layout:begin -->", "<!-- layout:end -->"


def summary(init: Path) -> str:
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return first.rstrip(".")


def tree() -> str:
    lines = [f"{'orchestrator/':<36}the package: `python -m orchestrator <command>`"]
    modules = sorted(p for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    for module in modules:
        lines.append(f"  {module.name:<34}{summary(module)}")
    for init in sorted(PACKAGE.rglob("__init__.py")):
        folder = init.parent.relative_to(PACKAGE)
        if str(folder) == ".":
            continue
        depth = len(folder.parts)
        name = f"{'  ' * depth}{folder.parts[-1]}/"
        lines.append(f"{name:<36}{summary(init)}")
    for folder, text in OTHERS.items():
        lines.append(f"{folder:<36}{text}")
    return "\n".join(lines)


def block() -> str:
    return f"{BEGIN}\n```\n{tree()}\n```\n{END}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        readme = ROOT / "README.md"
        text = readme.read_text(encoding="utf-8")
        start, end = text.index(BEGIN), text.index(END) + len(END)
        readme.write_text(text[:start] + block() + text[end:], encoding="utf-8")
    else:
        print(tree())
