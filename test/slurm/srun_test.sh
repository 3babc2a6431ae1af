#!/usr/bin/env bash
# Two-rank data-parallel training through a real Slurm cluster: sbatch a 2-task job whose step is
# `srun --mpi=pmix mlai_train ...` on a tiny synthetic MNIST, then check that it succeeded, that
# only rank 0 printed the epoch lines, that it reported world size 2, and that the logs went to
# version_<job id>; then a hybrid-sharded run (zero3 in two groups of one rank) in the same job,
# whose last.h5 is a sharded checkpoint's directory.
# Skips (exit 77) where there is no cluster: start one with
#   eval "$(bash scripts/slurm-local.sh start)"
# With MLAI_REQUIRE_SLURM=1 (CI sets it) a missing cluster is a failure, not a skip.
# Run by ctest as slurm.srun_two_ranks, or by hand: bash test/slurm/srun_test.sh build/bin/mlai_train
set -euo pipefail

# shellcheck source=test/slurm/common.sh
. "$(dirname "$0")/common.sh"
test_setup srun "$@"
require_cluster

# A small learnable MNIST-format data set.
python3 "$(dirname "$0")/../make_synthetic_mnist.py" "$work/data"

cat > "$work/job.sbatch" << EOF
#!/bin/bash
#SBATCH --job-name=mlai-srun-test
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --time=10
#SBATCH --chdir=$work
#SBATCH --output=$work/job-%j.out
srun --mpi=pmix "$train" --dataset mnist --data-dir "$work/data" --epochs 2 --device cpu \\
  --workers 0 --log-dir "$work/logs" --experiment-name srun_test --no-progress
# Hybrid sharding's split communicators under srun and PMIx: two groups of one rank, writing
# sharded checkpoints (rank 0's group: one shard).
srun --mpi=pmix "$train" --dataset mnist --data-dir "$work/data" --epochs 1 --device cpu \\
  --workers 0 --log-dir "$work/logs" --experiment-name srun_hybrid --no-progress \\
  --strategy zero3 --shard-size 1 --state-dict-type sharded
EOF

# --wait: sbatch returns when the job ends, with the job's exit code. The timeout keeps a job
# stuck in the queue from hanging ctest; the job is cancelled then.
rc=0
jobid=""
sbatch_out=$(timeout 300 sbatch --parsable --wait "$work/job.sbatch" 2> "$work/sbatch.err") || rc=$?
jobid=$(head -n1 <<< "$sbatch_out" | cut -d';' -f1)
out=$work/job-$jobid.out
echo "job ${jobid:-?} exit code $rc"

if [ -z "$jobid" ]; then
  fail "sbatch did not submit the job"
  cat "$work/sbatch.err"
  exit 1
fi
if [ "$rc" = 124 ]; then
  scancel "$jobid" 2> /dev/null || true
  fail "job $jobid did not finish within 300 s"
elif [ "$rc" != 0 ]; then
  fail "job $jobid exited with code $rc"
fi

count() { grep -c "$1" "$out" 2> /dev/null || true; }
if [ ! -f "$out" ]; then
  fail "no job output $out"
else
  n1=$(count '^epoch: 01/02')
  n2=$(count '^epoch: 02/02')
  [ "$n1" = 1 ] || fail "expected one line starting 'epoch: 01/02' (rank 0 only), found $n1"
  [ "$n2" = 1 ] || fail "expected one line starting 'epoch: 02/02' (rank 0 only), found $n2"
  grep -q 'world size 2' "$out" || fail "no line with 'world size 2'"
  grep -q '^hybrid sharding: 2 groups of 1 ranks' "$out" || fail "no hybrid sharding line"
  [ "$(count '^epoch: 01/01')" = 1 ] || fail "the hybrid sharding run did not finish its epoch"
fi
version=$work/logs/srun_test/version_$jobid
[ -d "$version" ] || fail "no log directory $version (named after SLURM_JOB_ID)"
shards=$(find "$work/logs/srun_hybrid" -path '*/checkpoints/last.h5/shard-00000-of-00001.h5' | wc -l)
[ "$shards" = 1 ] || fail "the hybrid run left no sharded last.h5 (shard-00000-of-00001.h5)"

if [ "$failed" != 0 ]; then
  echo "---- sbatch stderr ----"
  cat "$work/sbatch.err"
  echo "---- job output ($out) ----"
  cat "$out" 2> /dev/null || true
  echo "---- scontrol show job $jobid ----"
  scontrol show job "$jobid" 2> /dev/null || true
  exit 1
fi
echo "PASS: job $jobid trained on 2 ranks; logs in version_$jobid"
