#!/usr/bin/env bash
# A rank that throws (MLAI_FAULT_RANK=1: rank 1 fails at step 2) must end the whole
# `mpirun -np 2` job with a non-zero code within a few seconds, naming the rank; rank 0,
# which would otherwise wait in the next allreduce, must not hang. So must a rank killed
# outright, and a rank that hangs (MLAI_FAULT_KIND=hang): there rank 0's --dist-timeout ends it.
#   rank_failure_test.sh MPIRUN MLAI_TRAIN
set -u
mpirun=$1 train=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 "$(dirname "$0")/../make_synthetic_mnist.py" "$dir/data" --train 512 --seed 1 --noise
start=$SECONDS
MLAI_FAULT_RANK=1 timeout 60 "$mpirun" --allow-run-as-root --oversubscribe -np 2 -x MLAI_FAULT_RANK \
  "$train" --dataset mnist --data-dir "$dir/data" --log-dir "$dir/logs" --device cpu \
  --epochs 3 --batch-size 8 --workers 0 --no-progress > "$dir/out.txt" 2>&1
rc=$?
elapsed=$((SECONDS - start))
fail() { echo "FAIL: $*"; echo "---- output ----"; cat "$dir/out.txt"; exit 1; }
[ "$rc" -ne 0 ] || fail "mpirun exited 0"
[ "$rc" -ne 124 ] || fail "the job hung (killed by timeout after 60 s)"
grep -q "\[rank 1\] mlai_train: error: fault injected" "$dir/out.txt" || fail "no error line naming rank 1"
[ "$elapsed" -le 30 ] || fail "took ${elapsed}s to end"
echo "ok: mpirun exited $rc after ${elapsed}s; the failing rank was named"

# A rank killed outright (SIGKILL: no chance to call MPI_Abort) must also end the job: Open MPI's
# runtime notices the lost process and terminates the others.
start=$SECONDS
timeout 90 "$mpirun" --allow-run-as-root --oversubscribe -np 2 \
  "$train" --dataset mnist --data-dir "$dir/data" --log-dir "$dir/logs-kill" --device cpu \
  --epochs 100000 --batch-size 8 --workers 0 --no-progress > "$dir/out.txt" 2>&1 &
job=$!
victim=""
for _ in $(seq 100); do
  sleep 0.2
  victim=$(pgrep -f -- "--log-dir $dir/logs-kill" | while read -r p; do
    [ "$(tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -c '^OMPI_COMM_WORLD_RANK=1$')" = 1 ] && echo "$p"
  done | head -n 1)
  [ -n "$victim" ] && grep -q "epoch: 01" "$dir/out.txt" && break
done
[ -n "$victim" ] || fail "could not find rank 1's process"
kill -9 "$victim"
wait "$job"
rc=$?
elapsed=$((SECONDS - start))
[ "$rc" -ne 0 ] || fail "mpirun exited 0 after a rank was killed"
[ "$rc" -ne 124 ] || fail "the job hung after rank 1 was killed"
echo "ok: after SIGKILL of rank 1, mpirun exited $rc (${elapsed}s in all)"

# A rank that hangs without failing (a stuck file system, a deadlock) is noticed by nobody but
# its peers: rank 0 waits in its next allreduce until --dist-timeout passes, then ends the job
# with a message naming the collective.
start=$SECONDS
MLAI_FAULT_RANK=1 MLAI_FAULT_KIND=hang timeout 90 "$mpirun" --allow-run-as-root --oversubscribe -np 2 \
  -x MLAI_FAULT_RANK -x MLAI_FAULT_KIND \
  "$train" --dataset mnist --data-dir "$dir/data" --log-dir "$dir/logs-hang" --device cpu \
  --epochs 3 --batch-size 8 --workers 0 --no-progress --dist-timeout 3 > "$dir/out.txt" 2>&1
rc=$?
elapsed=$((SECONDS - start))
[ "$rc" -ne 0 ] || fail "mpirun exited 0 with a hung rank"
[ "$rc" -ne 124 ] || fail "the job hung although --dist-timeout is 3 s"
grep -q "\[rank 0\] collective timeout: allreduce .* did not complete in 3 s (--dist-timeout 3)" \
  "$dir/out.txt" || fail "no timeout line from rank 0 naming the allreduce"
[ "$elapsed" -le 45 ] || fail "took ${elapsed}s to end with a 3 s timeout"
echo "ok: a hung rank 1 ended by rank 0's 3 s deadline; mpirun exited $rc after ${elapsed}s"
