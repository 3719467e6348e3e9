#!/usr/bin/env bash
# One command: set everything up, then run the test suite (lint + pytest).
# Extra arguments go to pytest, in one process (e.g. `bash scripts/test.sh -m "not e2e"`).
# Without arguments the suite runs as two pytest processes side by side, one per core, of
# about equal CPU time: tests/test_e2e.py (its tests share one DVC pipeline run, so it stays in
# one process) with the torchrun stage test, and everything else; the second prints as it goes,
# the first when both are done. KDLAB_TEST_JOBS=1 runs the whole suite in one process instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ruff check src tests benchmarks
ruff format --check src tests benchmarks
if [ $# -gt 0 ] || [ "${KDLAB_TEST_JOBS:-2}" = 1 ]; then
  exec python -m pytest -p no:cacheprovider "$@"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
first=(tests/test_e2e.py tests/test_distributed_stage.py)
python -m pytest -p no:cacheprovider --basetemp "$tmp/e2e" "${first[@]}" >"$tmp/e2e.log" 2>&1 &
e2e=$!
status=0
python -m pytest -p no:cacheprovider --basetemp "$tmp/rest" "${first[@]/#/--ignore=}" tests ||
  status=$?
wait "$e2e" || status=$?
echo "----- ${first[*]} (run alongside the above) -----"
cat "$tmp/e2e.log"
exit "$status"
