#!/usr/bin/env bash
# Wait until the DVC experiment queue has nothing queued or running, then say if a task failed.
#
#   bash scripts/queue_wait.sh [poll_seconds]   # default 30
#
# Done after two polls in a row in which `dvc queue status` succeeded and listed no Queued or
# Running task: right after `dvc queue start`, a single poll once found neither and a report
# ran before any experiment had finished.
set -uo pipefail
poll=${1:-30}
idle=0
while [ "$idle" -lt 2 ]; do
  sleep "$poll"
  if status=$(dvc queue status 2>&1) && ! grep -qE 'Queued|Running' <<<"$status"; then
    idle=$((idle + 1))
  else
    idle=0
  fi
done
if grep -q Failed <<<"$status"; then
  echo "some experiments failed: dvc queue logs NAME" >&2
fi
exit 0
