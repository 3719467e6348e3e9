#!/usr/bin/env bash
# One command: set everything up, then run the default pipeline (`dvc repro`).
# Extra arguments go to `dvc repro` (e.g. `bash scripts/run.sh train_teacher`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
if [ ! -d .git ]; then
  echo "kdlab: dvc needs a git repository; clone the repository instead of copying it" >&2
  exit 1
fi
time dvc repro "$@"
dvc metrics show
echo "Tables: tables/*.md (see README.md, 'Results')"
