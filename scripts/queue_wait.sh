#!/usr/bin/env bash
# Wait until the DVC experiment queue has nothing queued or running, then say if a task failed.
#
#   bash scripts/queue_wait.sh [poll_seconds] [jobs]   # defaults 30 and 1
#
# Done after two polls in a row in which `dvc queue status` succeeded and listed no Queued or
# Running task: right after `dvc queue start`, a single poll once found neither and a report
# ran before any experiment had finished.
# DVC's queue workers exit once the queue is empty for a few seconds, so a task queued after
# that (the next seed's, queued while the first ran) waits with no worker: when tasks are Queued
# and no worker is active, this starts `jobs` workers again (`dvc queue start -j JOBS` starts
# only the missing ones).
set -uo pipefail
poll=${1:-30}
jobs=${2:-1}
idle=0
while [ "$idle" -lt 2 ]; do
  sleep "$poll"
  if status=$(dvc queue status 2>&1) && ! grep -qE 'Queued|Running' <<<"$status"; then
    idle=$((idle + 1))
  else
    idle=0
    if grep -q Queued <<<"$status" && grep -q 'Worker status: 0 active' <<<"$status"; then
      echo "queue_wait: tasks queued and no worker active: dvc queue start -j $jobs" >&2
      dvc queue start -j "$jobs" >/dev/null 2>&1 </dev/null
    fi
  fi
done
if grep -q Failed <<<"$status"; then
  echo "some experiments failed: dvc queue logs NAME" >&2
fi
exit 0
