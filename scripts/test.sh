#!/usr/bin/env bash
# One command: set everything up, then run the test suite (lint + pytest).
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not e2e"`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ruff check src tests benchmarks
ruff format --check src tests benchmarks
python -m pytest -p no:cacheprovider "$@"
