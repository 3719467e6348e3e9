#!/usr/bin/env bash
# Hao et al.'s Figure 3 (paper 002): one 1,000-epoch KD student per alpha on the `hao` preset,
# its epochs 100/300/500/1000 read from the run's test-epoch record, then
# `kdlab report hao_figure3 --all-commits`.
#
#   bash scripts/hao_figure3.sh [--dry-run] [OUR_ALPHA ...]   # default: 1.0 0.9 ... 0.1
#
# The teacher is trained once, on a branch `hao-figure3` whose dvc.lock holds it (threads 1, as
# every run here uses), and the alphas are queued on that branch, two at a time with one thread
# each. A commit, not a first experiment: DVC skips its run-cache for stages with a
# `cache: false` output (treeverse/dvc#8738), so experiments queued on a commit without the
# teacher would each retrain it. Measured on a 2-core CPU: teacher ~19 min, then each pair of
# runs ~20 min (10 alphas: 1 h 38 min).
# Our alpha weighs the KD term: paper alpha a is ours 1 - a. Run it on a clean checkout; it
# reuses the branch when its dvc.lock already holds the teacher (a later session adds alphas).
# --dry-run prints the commands instead of running them.
set -euo pipefail
run=()
alphas=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) run=(echo) ;;
    0 | 0.* | 1 | 1.0) alphas+=("$arg") ;;
    *) echo "hao_figure3.sh: unknown argument '$arg'; allowed: --dry-run, alphas in [0, 1]" >&2; exit 2 ;;
  esac
done
[ ${#alphas[@]} -eq 0 ] && alphas=(1.0 0.9 0.8 0.7 0.6 0.5 0.4 0.3 0.2 0.1)
cd "$(dirname "$0")/.."
if [ ${#run[@]} -eq 0 ]; then
  source scripts/setup.sh
fi

start=$(git rev-parse --abbrev-ref HEAD)
if git rev-parse -q --verify refs/heads/hao-figure3 >/dev/null; then
  "${run[@]}" git checkout -q hao-figure3  # its dvc.lock holds the teacher already
else
  "${run[@]}" git checkout -q -b hao-figure3
  "${run[@]}" kdlab preset hao
  "${run[@]}" sed -i "s/^threads: [0-9]* /threads: 1 /" params.yaml
  "${run[@]}" dvc repro teacher_logits  # the teacher, once
  "${run[@]}" git add params.yaml dvc.lock metrics plots
  "${run[@]}" git commit -qm "hao preset, threads 1: the Figure 3 teacher"
fi
for a in "${alphas[@]}"; do
  "${run[@]}" dvc exp run --queue -S alpha="$a" -S student.train.epochs=1000 -S '~methods.reffakd' distill@kd
done
"${run[@]}" dvc queue start -j 2
if [ ${#run[@]} -eq 0 ]; then
  bash scripts/queue_wait.sh 30 2
fi
"${run[@]}" kdlab report hao_figure3 --all-commits
[ "$start" != hao-figure3 ] && "${run[@]}" git checkout -q "$start"
exit 0
