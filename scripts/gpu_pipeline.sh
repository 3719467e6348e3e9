#!/usr/bin/env bash
# Run the pipeline's stages on one GPU without DVC, the independent branches concurrently:
#
#   teacher -> teacher logits -> distill@<each method that reads data/teacher>
#   CAE     -> soft labels    -> distill@<each method that reads data/soft_labels>
#   CE student
#
# `dvc repro` runs one stage at a time; on a GPU with a tight time budget (the lent machines
# this project sees: minutes, no DVC installed) the three branches share the card instead.
# The commands are the stages' own (`python -m kdlab <stage>`: the functions dvc.yaml runs from
# kdlab.stages.<module>, after the check stage's validation) on the params.yaml in place, so
# outputs land where DVC would put them. Every training stage
# checkpoints each epoch: rerunning this script after a deadline resumes each unfinished stage
# and skips the finished ones (their output exists).
#
#   bash scripts/gpu_pipeline.sh [deadline_seconds]   # default 3600; logs in logs/gpu_pipeline/
#
# It is not a substitute for `dvc repro` (no lock file, no cache): use it to produce numbers on
# a borrowed GPU, then commit them labelled as such (README, "Paper-scale runs").
set -euo pipefail
cd "$(dirname "$0")/.."
deadline=$(( $(date +%s) + ${1:-3600} ))
logs=logs/gpu_pipeline
mkdir -p "$logs"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}

# stage NAME OUTPUT ARGS...: run `kdlab ARGS` unless OUTPUT exists, logging to logs/NAME.log,
# killed (SIGTERM) at the deadline; a killed stage resumes from its checkpoint on the next run.
stage() {
  local name=$1 out=$2
  shift 2
  if [[ -e $out ]]; then
    echo "[$name] done already ($out)"
    return 0
  fi
  local left=$(( deadline - $(date +%s) ))
  if (( left <= 0 )); then
    echo "[$name] not started: deadline passed"
    return 1
  fi
  echo "[$name] start ($(date +%T), ${left}s left)"
  local t0=$SECONDS rc=0
  timeout "$left" "$py" -m kdlab "$@" >"$logs/$name.log" 2>&1 || rc=$?
  echo "[$name] exit $rc after $(( SECONDS - t0 ))s: $(tail -n 1 "$logs/$name.log")"
  return "$rc"
}

# methods NAME: the methods that read knowledge NAME (teacher | soft_labels), from params.yaml.
methods() {
  "$py" -c 'import sys, yaml
m = yaml.safe_load(open("params.yaml"))["methods"]
print(" ".join(k for k, v in m.items() if v == sys.argv[1]))' "$1"
}

# distill_all KNOWLEDGE: every method reading KNOWLEDGE, concurrently.
distill_all() {
  local pids=() m rc=0
  for m in $(methods "$1"); do
    stage "distill_$m" "data/models/distill/$m.pt" distill "$m" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return "$rc"
}

"$py" -m kdlab check --write data/params.ok   # validates params.yaml before anything runs
stage split data/split.json split

rc=0
(stage train_teacher data/teacher/model.pt train teacher &&
  stage teacher_logits data/teacher/logits.pt teacher-logits &&
  distill_all teacher) & a=$!
(stage train_cae data/models/cae.pt train cae &&
  stage soft_labels data/soft_labels/matrix.csv soft-labels &&
  distill_all soft_labels) & b=$!
stage train_student data/models/student.pt train student & c=$!
for p in $a $b $c; do wait "$p" || rc=1; done
echo "gpu_pipeline: exit $rc"
exit "$rc"
