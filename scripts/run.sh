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
# The comparison of this run's methods (ours beside the paper where it has the setting);
# every table is under tables/, per-stage records under metrics/ (README.md, 'Results').
for t in tables/comparison.md tables/accuracy.md; do
  if [ -f "$t" ]; then echo; cat "$t"; fi
done
echo
echo "All tables: $(ls tables/*.md | tr '\n' ' ')"
echo "Compare experiments: dvc exp show --only-changed --drop '.*' --keep 'Experiment|alpha|temperature|.*test_acc'"
