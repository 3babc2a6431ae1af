#!/usr/bin/env bash
# A job that dies mid-epoch on 2 ranks and is submitted again on 1, through a real Slurm
# cluster: slurm/train.sbatch's MLAI_RESUME=auto finds the unfinished run's last.h5 (written by
# --checkpoint-every-n-steps before rank 1 crashed, MLAI_FAULT_RANK), and mlai_train continues
# the epoch from the sample it had reached, dealt out over the new number of ranks. Checks that
# the first job failed, that the second resumed from the first's checkpoint at the expected
# place, finished both epochs and tested. Skips (exit 77) where there is no cluster: start one with
#   eval "$(bash scripts/slurm-local.sh start)"
# With MLAI_REQUIRE_SLURM=1 (CI sets it) a missing cluster is a failure, not a skip.
# Run by ctest as slurm.resume_elsewhere, or by hand: bash test/slurm/resume_test.sh build/bin/mlai_train
set -euo pipefail

# shellcheck source=test/slurm/common.sh
. "$(dirname "$0")/common.sh"
test_setup resume "$@"
require_cluster

python3 "$(dirname "$0")/../make_synthetic_mnist.py" "$work/data" > /dev/null
# train.sbatch adapted as its header says: this cluster's node has no GPUs.
sed -e '/^#SBATCH --gpus-per-node/d' "$repo/slurm/train.sbatch" > "$work/train.sbatch"
flags=(--dataset mnist --data-dir "$work/data" --epochs 2 --batch-size 32 --device cpu
  --workers 0 --no-progress --checkpoint-every-n-steps 5)

# submit RANKS [VAR=VALUE...]: runs train.sbatch to its end (sbatch --wait; the timeout keeps a
# job stuck in the queue from hanging ctest) and sets $jobid and $rc.
submit() {
  local ranks=$1
  shift
  rc=0
  local out
  out=$(cd "$work" && env "$@" MLAI_TRAIN="$train" MLAI_LOG_DIR="$work/logs" \
    MLAI_EXPERIMENT=elastic timeout 240 sbatch --parsable --wait --job-name=mlai-resume-test \
    --nodes=1 --ntasks-per-node="$ranks" --cpus-per-task=1 --time=5 \
    --output="$work/job-%j.out" "$work/train.sbatch" "${flags[@]}" 2>> "$work/sbatch.err") || rc=$?
  jobid=$(head -n1 <<< "$out" | cut -d';' -f1)
  echo "job ${jobid:-?} ($ranks ranks): exit code $rc"
  [ -n "$jobid" ] || { fail "sbatch did not submit the job"; cat "$work/sbatch.err"; exit 1; }
  if [ "$rc" = 124 ]; then
    scancel "$jobid" 2> /dev/null || true
    fail "job $jobid did not finish within 240 s"
  fi
}

# 2 ranks x 32: 231 training images (make_synthetic_mnist.py's 256, less the validation split),
# 4 steps an epoch. last.h5 at step 5 (64 samples of the second epoch), then rank 1 fails at 8.
submit 2 MLAI_FAULT_RANK=1 MLAI_FAULT_STEP=8
first=$jobid
[ "$rc" != 0 ] || fail "job $first (fault injected at step 8) exited with 0"
grep -q 'fault injected' "$work/job-$first.out" || fail "job $first: no 'fault injected' line"
ckpt=$work/logs/elastic/version_$first/checkpoints/last.h5
[ -f "$ckpt" ] || fail "job $first left no $ckpt"

# The same command on 1 rank: 8 steps an epoch; the second goes on at batch 2 (167 samples left).
submit 1
second=$jobid
out=$work/job-$second.out
[ "$rc" = 0 ] || fail "job $second exited with code $rc"
grep -q "resuming from $ckpt" "$out" || fail "job $second did not resume from $ckpt"
grep -q 'resumed on 1 rank(s) x batch 32 from a run on 2 x 32: epoch 2 continues after 64 of its 231 samples, at batch 2 of 8' "$out" ||
  fail "job $second: no line saying where the epoch continues on 1 rank"
grep -q '^epoch: 02/02' "$out" || fail "job $second: no line for epoch 2"
grep -q '^test,' "$work/logs/elastic/version_$second/metrics.csv" 2> /dev/null ||
  fail "job $second: no test row in its metrics.csv"

[ "$failed" = 0 ] || finish_failed "$work/sbatch.err" "$work"
echo "PASS: job $first died on 2 ranks at step 8; job $second resumed its step-5 checkpoint on 1 rank and finished"
