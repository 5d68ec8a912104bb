#!/usr/bin/env bash
# Time the whole test suite of one checkout as CI runs it (a PostgreSQL server, pytest-xdist over
# the cores), keeping every test's duration, so two commits can be compared side by side on one
# machine in one sitting:
#
#   bash benchmarks/test_suite.sh CHECKOUT NAME [PORT] [PYTEST ARGS...]
#   python benchmarks/test_suite.py compare before after   # -> benchmarks/results/perf/test_suite.json
#
# CHECKOUT is a clone with its own .venv (scripts/setup.sh). Writes benchmarks/results/perf/raw/
# NAME.xml (JUnit: a test's setup + call + teardown seconds), NAME.txt (pytest's output, with
# --durations=0) and NAME.json (commit, wall seconds, exit code). Run one at a time: two suites on
# the same cores slow each other.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "${1:?usage: test_suite.sh CHECKOUT NAME [PORT] [PYTEST ARGS...]}" && pwd)
name=${2:?usage: test_suite.sh CHECKOUT NAME [PORT] [PYTEST ARGS...]}
port=${3:-55432}
shift $(( $# < 3 ? $# : 3 ))
out="$here/results/perf/raw"
mkdir -p "$out"
cd "$repo"
pg=$(mktemp -d /tmp/orchestrator-suite-pg-XXXXXX)
url=$(bash scripts/postgres.sh start "$pg" "$port")
trap 'bash scripts/postgres.sh stop "$pg" >/dev/null 2>&1 || true' EXIT
start=$(date +%s)
ORCHESTRATOR_TEST_POSTGRES=$url PYTHONUNBUFFERED=1 .venv/bin/python -m pytest -q -p no:cacheprovider \
  --durations=0 --junitxml="$out/$name.xml" "$@" > "$out/$name.txt" 2>&1
rc=$?
end=$(date +%s)
printf '{"name": "%s", "commit": "%s", "args": "%s", "wall_seconds": %d, "exit_code": %d, "started": "%s"}\n' \
  "$name" "$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes')" "$*" $((end - start)) "$rc" \
  "$(date -u -d "@$start" +%Y-%m-%dT%H:%M:%SZ)" > "$out/$name.json"
tail -3 "$out/$name.txt"
