#!/usr/bin/env bash
# Reduced-scale Fashion-MNIST direction checks of the SimKD student study (paper 001) and SRRL's
# Table 1 (paper 003): preset `fmnist_direction`, every setting at seeds 0 1 2, two experiments at
# a time (one thread each), then `kdlab report simkd_study_fmnist` / `srrl_table1_fmnist`.
#
#   bash scripts/direction_checks.sh [simkd|srrl|both] [--grid] [--dry-run]
#
# --grid: each seed's settings train together as the cells of one `distill_grid` experiment
# (one teacher forward per batch for all of them; docs/scaling.md section 4) instead of one
# experiment per setting; the reports read grid cells and single runs alike.
#
# Why per-seed baseline commits: DVC skips its run-cache for any stage with a `cache: false`
# output (treeverse/dvc#8738), and every training stage here writes its metrics uncached (they
# are committed to git), so queued experiments would each retrain the seed's teacher and CE
# student. Instead each seed gets a branch `direction-seedN` whose dvc.lock holds that seed's
# teacher and CE student, trained once here, and the seed's experiments are queued on it. The
# queue starts after each seed, so it runs while the next seeds' teachers train.
# Run it on a clean checkout of the branch you start from; it commits nothing there (a commit
# that only switched the preset would carry the old run's metrics under the new params).
# --dry-run prints the commands instead of running them.
set -euo pipefail
which=both
run=()
grid=0
for arg in "$@"; do
  case "$arg" in
    simkd | srrl | both) which=$arg ;;
    --grid) grid=1 ;;
    --dry-run) run=(echo) ;;
    *) echo "direction_checks.sh: unknown argument '$arg'; allowed: simkd, srrl, both, --grid, --dry-run" >&2; exit 2 ;;
  esac
done
seeds=(0 1 2)
cd "$(dirname "$0")/.."
if [ ${#run[@]} -eq 0 ]; then
  source scripts/setup.sh
fi

# Every setting once: "cell-name method alpha key=value,..." (alpha '-': the preset's). Each
# becomes a queued single experiment (-S overrides) or, with --grid, a cell of the seed's grid.
rows=()
if [ "$which" != srrl ]; then  # SimKD: feature loss alone (alpha 1), 3 projector variants x L2/KL
  # plain SimKD (end,0 with L2) first: the study's baseline every variant is compared with
  rows+=("simkd_end_l2 simkd 1 projectors=end,label_gated=0,loss=l2")
  for v in two_thirds,0 all,0 end,1; do
    for l in l2 kl; do
      rows+=("simkd_${v%,*}_g${v#*,}_$l simkd 1 projectors=${v%,*},label_gated=${v#*,},loss=$l")
    done
  done
fi
if [ "$which" != simkd ]; then  # SRRL Table 1: L_FM alone, L_SR alone, both at conv4 / 2 / 3 / all
  rows+=("srrl_fm srrl - sr_weight=0" "srrl_sr srrl - fm_weight=0" "srrl_conv4 srrl - stage=-1"
         "srrl_conv2 srrl - stage=0" "srrl_conv3 srrl - stage=1" "srrl_all srrl - all_stages=1")
fi

settings=()  # the -S overrides of each row's single experiment
cells=()     # the same rows as grid cells: name -> method, alpha, method params (JSON = YAML)
for row in "${rows[@]}"; do
  read -r name method alpha kvs <<<"$row"
  other=simkd; [ "$method" = simkd ] && other=srrl  # the preset lists both; drop the other
  s="" params=()
  [ "$alpha" != - ] && s="-S alpha=$alpha "
  s+="-S ~methods.$other"
  IFS=, read -r -a pairs <<<"$kvs"
  for kv in "${pairs[@]}"; do
    s+=" -S method_params.$method.$kv"
    value=${kv#*=}
    [[ "$value" =~ ^-?[0-9.]+$ ]] || value="\"$value\""
    params+=("\"${kv%%=*}\": $value")
  done
  settings+=("$s distill@$method train_student")
  a=""
  [ "$alpha" != - ] && a=" \"alpha\": $alpha.0,"
  cells+=("\"$name\": {\"method\": \"$method\",$a \"params\": {$(IFS=,; echo "${params[*]}" | sed 's/,"/, "/g')}}")
done
cells_json="{$(IFS=,; echo "${cells[*]}")}"

start=$(git rev-parse --abbrev-ref HEAD)
for s in "${seeds[@]}"; do
  "${run[@]}" git checkout -q -B "direction-seed$s" "$start"
  "${run[@]}" kdlab preset fmnist_direction
  "${run[@]}" sed -i "s/^seed: [0-9]* /seed: $s /" params.yaml
  "${run[@]}" dvc repro train_student teacher_logits  # the seed's teacher and CE student, once
  "${run[@]}" git add params.yaml dvc.lock metrics plots
  "${run[@]}" git commit -qm "fmnist_direction seed $s: its teacher and CE student"
  if [ "$grid" = 1 ]; then  # one experiment: every setting a cell of the seed's grid
    "${run[@]}" sed -i "s|^  cells: .*|  cells: $cells_json|" params.yaml
    "${run[@]}" dvc exp run --queue distill_grid
    "${run[@]}" git checkout params.yaml
  else
    for setting in "${settings[@]}"; do
      # shellcheck disable=SC2086  # a setting is several words
      "${run[@]}" dvc exp run --queue -S "seed=$s" $setting
    done
  fi
  # after every seed: DVC's workers exit when the queue empties, and it may have emptied while
  # this seed's teacher trained (`queue start` starts only the workers not running)
  "${run[@]}" dvc queue start -j 2
done
"${run[@]}" git checkout -q "$start"
if [ ${#run[@]} -eq 0 ]; then
  bash scripts/queue_wait.sh 30 2
fi
[ "$which" != srrl ] && "${run[@]}" kdlab report simkd_study_fmnist --all-commits
[ "$which" != simkd ] && "${run[@]}" kdlab report srrl_table1_fmnist --all-commits
exit 0
