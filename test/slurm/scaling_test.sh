#!/usr/bin/env bash
# A two-point scaling study through a real Slurm cluster: slurm/scaling.sh --ranks 1,2 --wait on a
# tiny synthetic MNIST, then check that both jobs finished, that jobs.tsv lists them, and that
# slurm/scaling_report.py wrote scaling.md with one row per point (and scaling.png where
# matplotlib is installed), and that it compares two studies side by side. Also checks that
# --dry-run prints the two job scripts. Skips (exit 77)
# where there is no cluster: start one with
#   eval "$(bash scripts/slurm-local.sh start)"
# With MLAI_REQUIRE_SLURM=1 (CI sets it) a missing cluster is a failure, not a skip.
# Run by ctest as slurm.scaling_study, or by hand: bash test/slurm/scaling_test.sh build/bin/mlai_train
set -euo pipefail

# shellcheck source=test/slurm/common.sh
. "$(dirname "$0")/common.sh"
test_setup scaling "$@"
scaling=$repo/slurm/scaling.sh
study=$work/study
flags=(--dataset mnist --data-dir "$work/data" --epochs 2 --batch-size 32 --device cpu
  --workers 0 --no-progress)
opts=(--ranks "1,2" --gpus-per-node 0 --cpus-per-task 1 --time 5 --study scaling-test
  --study-dir "$study" --train "$train")

# --dry-run needs no cluster: one job script per point, with the point's resources.
dry=$(bash "$scaling" "${opts[@]}" --dry-run -- "${flags[@]}")
n=$(grep -c '^#SBATCH --ntasks-per-node=' <<< "$dry" || true)
[ "$n" = 2 ] || fail "--dry-run: expected 2 job scripts, found $n"
grep -q -- '--experiment-name scaling-test-r2 --batch-size 32' <<< "$dry" ||
  fail "--dry-run: no srun line for the 2-rank point"
[ ! -e "$study" ] || fail "--dry-run created $study"

require_cluster

# A small learnable MNIST-format data set.
python3 "$(dirname "$0")/../make_synthetic_mnist.py" "$work/data"

# Submit from the scratch folder (the jobs' working directory). The timeout keeps jobs stuck in
# the queue from hanging ctest; they are cancelled then.
rc=0
(cd "$work" && timeout 240 bash "$scaling" "${opts[@]}" --wait -- "${flags[@]}") \
  > "$work/scaling.log" 2>&1 || rc=$?
job_ids=()
[ -f "$study/jobs.tsv" ] && mapfile -t job_ids < <(awk -F'\t' 'NR > 1 { print $10 }' "$study/jobs.tsv")
ids=$(IFS=,; echo "${job_ids[*]}")
echo "scaling.sh exit code $rc; jobs ${ids:-none}"
if [ "$rc" = 124 ]; then
  [ ${#job_ids[@]} = 0 ] || scancel "${job_ids[@]}" 2> /dev/null || true
  fail "the study did not finish within 240 s"
elif [ "$rc" != 0 ]; then
  fail "scaling.sh exited with code $rc"
fi

[ ${#job_ids[@]} = 2 ] || fail "jobs.tsv: expected 2 jobs, found ${#job_ids[@]}"
md=$study/scaling.md
if [ ! -f "$md" ]; then
  fail "no $md"
else
  # Data rows start with the node count: "|     1 |     2 | ...".
  rows=$(grep -cE '^\| +[0-9]+ \|' "$md" || true)
  [ "$rows" = 2 ] || fail "scaling.md: expected 2 table rows, found $rows"
  ranks=$(grep -E '^\| +[0-9]+ \|' "$md" | awk -F'|' '{ gsub(/ /, "", $3); printf "%s ", $3 }')
  [ "$ranks" = "1 2 " ] || fail "scaling.md: expected ranks 1 and 2, found '$ranks'"
  # From each run's profile.json: the 2-rank point waited for gradient allreduces (a share in
  # (0, 1)); the 1-rank point has none to wait for.
  col=$(grep -m1 '^| nodes' "$md" | awk -F'|' '{ for (i = 2; i <= NF; i++) { c = $i; gsub(/^ +| +$/, "", c); if (c == "grad sync") print i } }')
  if [ -z "$col" ]; then
    fail "scaling.md: no grad sync column"
  else
    sync=$(grep -E '^\| +[0-9]+ \|' "$md" | awk -F'|' -v c="$col" '{ gsub(/ /, "", $c); printf "%s ", $c }')
    read -r sync1 sync2 <<< "$sync"
    [ "$sync1" = "0.000" ] || fail "scaling.md: grad sync of 1 rank should be 0.000, is '$sync1'"
    awk -v v="$sync2" 'BEGIN { exit !(v + 0 > 0 && v + 0 < 1) }' ||
      fail "scaling.md: grad sync of 2 ranks should be in (0, 1), is '$sync2'"
  fi
fi
if python3 -c 'import matplotlib' 2> /dev/null; then
  [ -s "$study/scaling.png" ] || fail "matplotlib is installed but there is no scaling.png"
else
  grep -q 'no matplotlib: skipped the plot' "$work/scaling.log" ||
    fail "no matplotlib, and the report did not say it skipped the plot"
fi

# Several studies side by side (here the same one twice): one row per study and point, each
# point's images/s against the first study's at the same ranks (so 1.00 throughout).
python3 "$repo/slurm/scaling_report.py" "$study" "$study" --out "$work/compare" --no-plot \
  > "$work/compare.log" 2>&1 || fail "scaling_report.py with two studies failed"
cmp_md=$work/compare/comparison.md
if [ -f "$cmp_md" ]; then
  rows=$(grep -cE '^\| +scaling-test \|' "$cmp_md" || true)
  [ "$rows" = 4 ] || fail "comparison.md: expected 4 rows (2 studies x 2 points), found $rows"
  col=$(grep -m1 -E '^\| +study \|' "$cmp_md" | awk -F'|' '{ for (i = 2; i <= NF; i++) { c = $i; gsub(/^ +| +$/, "", c); if (c ~ /^vs /) print i } }')
  vs=$(grep -E '^\| +scaling-test \|' "$cmp_md" | awk -F'|' -v c="${col:-0}" '{ gsub(/ /, "", $c); printf "%s ", $c }')
  [ "$vs" = "1.00 1.00 1.00 1.00 " ] || fail "comparison.md: the vs column should be 1.00 four times, is '$vs'"
else
  fail "no $cmp_md"
fi

# --strategies: the same point under DDP and zero3, one study each, compared side by side with
# each rank's peak memory (--log-device-stats).
sdry=$(bash "$scaling" --ranks 2 --gpus-per-node 0 --cpus-per-task 1 --time 5 --study strategies \
  --study-dir "$work/strategies" --train "$train" --strategies ddp,zero3 --dry-run -- "${flags[@]}")
grep -q -- "--log-dir $work/strategies/zero3 --experiment-name strategies-zero3-r2 .*--strategy zero3 --log-device-stats" <<< "$sdry" ||
  fail "--strategies --dry-run: no zero3 job in its own folder with --log-device-stats"
if bash "$scaling" --ranks 2 --gpus-per-node 0 --strategies ddp --dry-run -- --strategy zero1 \
  > /dev/null 2>&1; then
  fail "--strategies with --strategy among the mlai_train flags was accepted"
fi
rc=0
(cd "$work" && timeout 240 bash "$scaling" --ranks 2 --gpus-per-node 0 --cpus-per-task 1 --time 5 \
  --study strategies --study-dir "$work/strategies" --train "$train" --strategies ddp,zero3 \
  --wait -- "${flags[@]}") > "$work/strategies.log" 2>&1 || rc=$?
[ "$rc" = 0 ] || fail "scaling.sh --strategies exited with code $rc (see below)"
for s in ddp zero3; do
  [ -f "$work/strategies/$s/scaling.md" ] || fail "--strategies: no $s/scaling.md"
done
smd=$work/strategies/comparison.md
if [ -f "$smd" ]; then
  for s in ddp zero3; do
    grep -qE "^\| +strategies-$s \| +1 \| +2 \|" "$smd" || fail "comparison.md: no row for $s"
  done
  grep -qE '^\| +study \|.*\| peak MiB/rank \|' "$smd" || fail "comparison.md: no peak MiB/rank column"
else
  fail "--strategies: no $smd"
fi
[ "$failed" = 0 ] || cat "$work/strategies.log"

[ "$failed" = 0 ] || finish_failed "$work/scaling.log" "$study"
cat "$md"
echo "PASS: a 2-point study (jobs $ids) and its report"
