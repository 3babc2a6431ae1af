#!/usr/bin/env bash
# A 2 x 2 hyperparameter sweep through a real Slurm cluster: slurm/sweep.sh --grid lr=... --grid
# nesterov=on,off --max-parallel 2 --wait on a tiny synthetic MNIST, then check that the array
# ran all four runs, each with its own settings (from its hparams.json), and that
# slurm/sweep_report.py ranked them in sweep.md. Also checks --dry-run and that bad grids are
# refused with exit 2. Skips (exit 77) where there is no cluster: start one with
#   eval "$(bash scripts/slurm-local.sh start)"
# With MLAI_REQUIRE_SLURM=1 (CI sets it) a missing cluster is a failure, not a skip.
# Run by ctest as slurm.sweep, or by hand: bash test/slurm/sweep_test.sh build/bin/mlai_train
set -euo pipefail

# shellcheck source=test/slurm/common.sh
. "$(dirname "$0")/common.sh"
test_setup sweep "$@"
sweep=$repo/slurm/sweep.sh
study=$work/study
flags=(--dataset mnist --data-dir "$work/data" --epochs 2 --batch-size 32 --device cpu
  --workers 0 --no-progress --optimizer sgd)
# shellcheck disable=SC2054  # the commas are the grid's values
opts=(--grid lr=0.05,0.0001 --grid nesterov=on,off --max-parallel 2 --gpus-per-node 0
  --cpus-per-task 1 --time 5 --study sweep-test --study-dir "$study" --train "$train")

# --dry-run needs no cluster: one array of 4 tasks, 2 at a time, the first flag varying slowest.
dry=$(bash "$sweep" "${opts[@]}" --dry-run -- "${flags[@]}")
grep -q '^#SBATCH --array=0-3%2$' <<< "$dry" || fail "--dry-run: no '--array=0-3%2' line"
trials=$(grep -E "^  '--lr" <<< "$dry" || true)
expected="  '--lr 0.05 --nesterov'  # 0
  '--lr 0.05'  # 1
  '--lr 0.0001 --nesterov'  # 2
  '--lr 0.0001'  # 3"
[ "$trials" = "$expected" ] || fail "--dry-run: the trials are
$trials"
[ ! -e "$study" ] || fail "--dry-run created $study"
# Bad grids: exit 2 and a line naming what is wrong.
for bad in lr lr=0.1,,0.2 log-dir=a,b; do
  rc=0
  msg=$(bash "$sweep" --grid "$bad" --dry-run -- --device cpu 2>&1) || rc=$?
  if [ "$rc" != 2 ] || ! grep -q '^sweep.sh: --grid' <<< "$msg"; then
    fail "--grid $bad: expected exit 2 and a '--grid' message, got $rc: $msg"
  fi
done
# --random: N runs, each setting drawn on its own within its range or list; the same seed
# draws the same runs, another seed others; a distribution without --random is refused.
draw() {
  bash "$sweep" --random 8 --seed "$1" --grid lr=log:1e-4:1e-1 --grid batch-size=32,64 \
    --grid dropout=range:0:0.5 --grid workers=int:1:3 --gpus-per-node 0 --dry-run \
    -- --device cpu 2> /dev/null | grep -E "^  '--lr"
}
d1=$(draw 1)
[ "$(wc -l <<< "$d1")" = 8 ] || fail "--random 8: expected 8 runs, got: $d1"
[ "$d1" = "$(draw 1)" ] || fail "--random: the same seed drew other runs"
[ "$d1" != "$(draw 2)" ] || fail "--random: seeds 1 and 2 drew the same runs"
while read -r _ lr _ bs _ dropout _ workers _; do
  awk -v lr="$lr" -v d="$dropout" 'BEGIN { exit !(lr >= 1e-4 && lr <= 0.1 && d >= 0 && d <= 0.5) }' ||
    fail "--random: lr $lr or dropout $dropout out of its range"
  case "$bs" in 32 | 64) ;; *) fail "--random: batch size $bs not in the list" ;; esac
  case "${workers%\'}" in 1 | 2 | 3) ;; *) fail "--random: workers $workers not in int:1:3" ;; esac
done <<< "$d1"
rc=0
bash "$sweep" --grid lr=log:1e-4:1e-1 --dry-run > /dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "a distribution without --random: expected exit 2, got $rc"
rc=0
msg=$(bash "$sweep" --grid lr=0.1,0.2 --dry-run -- --lr 0.3 2>&1) || rc=$?
[ "$rc" = 2 ] || fail "a flag both swept and given: expected exit 2, got $rc: $msg"

require_cluster

python3 "$(dirname "$0")/../make_synthetic_mnist.py" "$work/data" > /dev/null

# Submit from the scratch folder. The timeout keeps an array stuck in the queue from hanging
# ctest; it is cancelled then.
rc=0
(cd "$work" && timeout 240 bash "$sweep" "${opts[@]}" --wait -- "${flags[@]}") \
  > "$work/sweep.log" 2>&1 || rc=$?
job=$(cat "$study/array_job_id" 2> /dev/null || true)
echo "sweep.sh exit code $rc; job array ${job:-none}"
if [ "$rc" = 124 ]; then
  [ -z "$job" ] || scancel "$job" 2> /dev/null || true
  fail "the sweep did not finish within 240 s"
elif [ "$rc" != 0 ]; then
  fail "sweep.sh exited with code $rc"
fi

# Each run trained with its own combination (its hparams.json holds the settings it ran with).
for k in 0 1 2 3; do
  hp=$(ls "$study"/sweep-test-$k/version_*/hparams.json 2> /dev/null | head -1)
  if [ -z "$hp" ]; then
    fail "run $k: no hparams.json"
    continue
  fi
  got=$(python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["config"]; print(c["lr"], c["nesterov"])' "$hp")
  case $k in
    0) want="0.05 True" ;; 1) want="0.05 False" ;; 2) want="0.0001 True" ;; 3) want="0.0001 False" ;;
  esac
  [ "$got" = "$want" ] || fail "run $k ran with lr, nesterov = $got, not $want"
done

md=$study/sweep.md
if [ ! -f "$md" ]; then
  fail "no $md"
else
  rows=$(grep -cE '^\| [0-9]+ \| [0-9] \|' "$md" || true)
  [ "$rows" = 4 ] || fail "sweep.md: expected 4 ranked rows, found $rows"
  grep -q '4 run(s), 4 finished' "$md" || fail "sweep.md: not all four runs finished"
  # lr 0.05 learns the synthetic set; lr 1e-4 for 2 epochs barely moves: the first two ranks
  # are the lr 0.05 runs, and the best values fall down the table.
  lrs=$(grep -E '^\| [0-9]+ \| [0-9] \|' "$md" | awk -F'|' '{ gsub(/ /, "", $4); printf "%s ", $4 }')
  case "$lrs" in
    "0.05 0.05 0.0001 0.0001 ") ;;
    *) fail "sweep.md: expected the lr 0.05 runs first, found lr order '$lrs'" ;;
  esac
  vals=$(grep -E '^\| [0-9]+ \| [0-9] \|' "$md" | awk -F'|' '{ gsub(/ /, "", $6); print $6 }')
  sort -rn -c <<< "$vals" 2> /dev/null || fail "sweep.md: best val_accuracy not in falling order: $vals"
  grep -q '^Best: task [01] (--lr 0.05' "$md" || fail "sweep.md: no 'Best:' line for an lr 0.05 run"
fi
[ -s "$study/sweep.csv" ] || fail "no sweep.csv"

# Submitted again, the sweep finishes what is unfinished: run 3 made to look stopped (its test
# row gone) resumes from its last.h5 and tests; the finished runs are left alone.
m3=$(ls "$study"/sweep-test-3/version_*/metrics.csv 2> /dev/null | head -1)
if [ "$failed" = 0 ] && [ -n "$m3" ]; then
  sed -i '/^test,/d' "$m3"
  again=$(cd "$work" && sbatch --parsable "$study/sweep.sbatch")
  again=${again%%;*}
  for _ in $(seq 120); do
    [ -n "$(squeue -h -j "$again" -o %i 2> /dev/null)" ] || break
    sleep 1
  done
  for k in 0 1 2; do
    grep -q "run sweep-test-$k finished already" "$study/sweep-test-$k-$again.out" 2> /dev/null ||
      fail "resubmitted: run $k (finished) was not skipped"
  done
  grep -q "resuming from $study/sweep-test-3/" "$study/sweep-test-3-$again.out" 2> /dev/null ||
    fail "resubmitted: run 3 (unfinished) did not resume from its last.h5"
  # The resumed run continues in a folder of its own (version_<new job id>); the report joins
  # both parts: finished, with the epochs of the first.
  python3 "$repo/slurm/sweep_report.py" "$study" > /dev/null || fail "sweep_report.py failed"
  grep -q '4 run(s), 4 finished' "$md" || fail "resubmitted: not all four runs finished"
  row3=$(grep -E '^\| [0-9]+ \| 3 \|' "$md" || true)
  epochs3=$(awk -F'|' '{ gsub(/ /, "", $8); print $8 }' <<< "$row3")
  [ "$epochs3" = 2 ] || fail "resubmitted: run 3's row should count 2 epochs: $row3"
  old3=$(basename "$(dirname "$m3")")
  if ! grep -q "sweep-test-3/version_" <<< "$row3" || grep -q "sweep-test-3/$old3 " <<< "$row3"; then
    fail "resubmitted: run 3's row should name the resumed run, not $old3: $row3"
  fi
fi

[ "$failed" = 0 ] || finish_failed "$work/sweep.log" "$study"
cat "$md"
echo "PASS: a 4-run sweep (job array $job) and its report"
