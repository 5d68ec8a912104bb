"""The package's shape: the README's layout tree is the code's, and the import contracts hold."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import layout  # noqa: E402 - scripts/ is not a package


def test_the_readme_shows_the_layout_the_package_has():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert layout.block() in readme, "README's layout is out of date: run `python scripts/layout.py --write`"
    for init in (ROOT / "orchestrator").rglob("__init__.py"):
        assert layout.summary(init), f"{init}: a package needs a docstring whose first line says what it is for"


def test_imports_point_down_the_layers_and_optuna_and_mlflow_stay_in_their_packages():
    """The contracts in .importlinter (also run by the test command): a violation names the import."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
