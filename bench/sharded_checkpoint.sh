#!/usr/bin/env bash
# --state-dict-type sharded against full under ZeRO on the same ranks, one after the other on
# this machine: the time a checkpoint's write takes (the profiler's "checkpoint" row: rank 0's
# mean per save, and the totals of the fastest and the slowest rank), the most the tensors and
# the host held (any rank's largest: a full write gathers the state on rank 0), last.h5's size
# on disk, and mlai_convert --checkpoint's time to make one file of the sharded one. Then both
# again with --async-checkpoint, where the "checkpoint" row is what a save blocks training for
# (ZeRO's gathers and the copy to host memory; a thread writes meanwhile), beside the run's
# wall clock.
#   bash bench/sharded_checkpoint.sh                         # resnet50_cifar, adamw, zero3, 2 ranks
#   RANKS=4 bash bench/sharded_checkpoint.sh --arch wide_resnet50_2 --image-size 32
#   STRATEGY=zero1 bash bench/sharded_checkpoint.sh --precision bf16
# Extra arguments go to every run and replace the defaults they name. Each run saves last.h5
# every 2 steps (--checkpoint-every-n-steps), so the saves fall inside the epoch its memory
# line covers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${MLAI_TRAIN:-build/bin/mlai_train}
convert=${MLAI_CONVERT:-$(dirname "$bin")/mlai_convert}
[[ -x $bin ]] || { echo "sharded_checkpoint.sh: no $bin (build it, or set MLAI_TRAIN)" >&2; exit 1; }
ranks=${RANKS:-2}
strategy=${STRATEGY:-zero3}
logs=${LOG_DIR:-logs/sharded-checkpoint}
rm -rf "$logs"

defaults=()
for pair in "--dataset fashion-mnist" "--arch resnet50_cifar" "--optimizer adamw" "--lr 0.001" \
  "--batch-size 8" "--epochs 1" "--limit-train-batches 8" "--device cpu"; do
  flag=${pair%% *}
  # shellcheck disable=SC2206  # "--flag value": two words
  [[ " $* " == *" $flag "* ]] || defaults+=($pair)
done

run() {  # run LABEL TYPE [FLAGS...]
  local label=$1 type=$2
  shift 2
  "$bin" --devices "$ranks" --strategy "$strategy" --state-dict-type "$type" "${defaults[@]}" \
    --checkpoint-every-n-steps 2 --save-top-k 0 --limit-val-batches 1 --limit-test-batches 1 \
    --num-sanity-val-steps 0 --log-device-stats --no-progress --log-dir "$logs" \
    --experiment-name "$label" "$@" 2>&1 |
    awk -v s="$label" '
      /^epoch:/ {for (i = 1; i < NF; ++i) {
                   if ($i == "memory:" && $(i - 1) == "host") mem = $(i + 1) " (peak " $(i + 4)
                   if ($i == "memory:" && ($(i - 1) == "tensor" || $(i - 1) == "GPU")) tensors = $(i + 1)}}
      /^  checkpoint / {mean = $2; calls = $3; lo = $6; hi = $7}
      /^Profiler report \(wall clock/ {wall = $5}
      END {printf "%-14s  checkpoint %8s ms per save (%s saves; rank totals %s-%s s)  wall %6s s  tensors MiB %5s peak  host MiB %s\n",
                  s, mean, calls, lo, hi, wall, tensors, mem}'
  local last=$logs/$label/version_0/checkpoints/last.h5
  echo "          last.h5: $(du -sb "$last" | cut -f1) bytes ($(find "$last" -type f | wc -l) file(s))"
}

echo "$ranks ranks, --strategy $strategy: $*"
run full full "$@"
run sharded sharded "$@"
start=$(date +%s.%N)
"$convert" --checkpoint "$logs/sharded/version_0/checkpoints/last.h5" --out "$logs/consolidated.h5" |
  sed 's/^/          /'
echo "          (mlai_convert --checkpoint: $(echo "$(date +%s.%N) - $start" | bc) s)"
run full-async full --async-checkpoint "$@"
run sharded-async sharded --async-checkpoint "$@"
