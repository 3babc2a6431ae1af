#!/usr/bin/env bash
# --strategy zero1, zero2 and zero3 against plain DDP on the same ranks, one after the other on
# this machine: rank 0's optimizer state, kept gradient buffers, float32 masters (under
# --precision 16 or bf16) and, under zero3, the parameters it keeps between uses; the most the
# CPU tensors held and the host memory (both the largest of any rank); the optimizer step (with
# ZeRO's broadcasts) and the gradient sync per step; images/s; and the last training loss (the
# same under all four without clipping or accumulation). With --ema-decay or --swa-lrs, rank 0's
# share of the weight average too. SHARD_SIZE=N adds hybrid sharding (zero3 over groups of N
# ranks, replicated across the groups: --shard-size N, FSDP's HYBRID_SHARD).
#   bash bench/zero_strategy.sh                       # resnet18_cifar, adamw, 2 CPU ranks
#   RANKS=2 bash bench/zero_strategy.sh --arch resnet50_cifar --optimizer sgd --precision bf16
#   RANKS=4 SHARD_SIZE=2 bash bench/zero_strategy.sh  # and zero3 in two groups of two
# Extra arguments go to every run and replace the defaults they name. On a GPU node add
# --device cuda: --log-device-stats then shows GPU memory instead of the CPU tensors'.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${MLAI_TRAIN:-build/bin/mlai_train}
[[ -x $bin ]] || { echo "zero_strategy.sh: no $bin (build it, or set MLAI_TRAIN)" >&2; exit 1; }
ranks=${RANKS:-2}
logs=${LOG_DIR:-logs/zero-strategy}

# The defaults the arguments do not name.
defaults=()
for pair in "--dataset fashion-mnist" "--arch resnet18_cifar" "--optimizer adamw" "--lr 0.001" \
  "--batch-size 16" "--epochs 1" "--limit-train-batches 20"; do
  flag=${pair%% *}
  # shellcheck disable=SC2206  # "--flag value": two words
  [[ " $* " == *" $flag "* ]] || defaults+=($pair)
done

run() {  # run LABEL STRATEGY [FLAGS...]
  local label=$1 strategy=$2
  shift 2
  "$bin" --devices "$ranks" --strategy "$strategy" "${defaults[@]}" --limit-val-batches 2 \
    --limit-test-batches 2 --num-sanity-val-steps 0 --log-device-stats --no-progress \
    --log-dir "$logs" --experiment-name "$label" "$@" 2>&1 |
    awk -v s="$label" '
      /^ZeRO stage [123]: optimizer/ {state = $13 " of " $16}
      /^ZeRO stage [23]: gradients/ {grads = $10 " of " $13}
      /^ZeRO stage 3: parameters/ {params = $23 " of " $27}
      /^ZeRO: float32 masters sharded/ {masters = $9 " of " $12}
      /^ZeRO: the weight average/ {avg = $11 " of " $14 " MB"}
      /^epoch:/ {for (i = 1; i < NF; ++i) {
                   if ($i == "loss:" && loss == "") loss = $(i + 1)
                   if ($i == "memory:" && $(i - 1) == "host") mem = $(i + 1) " (peak " $(i + 4)
                   if ($i == "memory:" && ($(i - 1) == "tensor" || $(i - 1) == "GPU")) tensors = $(i + 1)
                   if ($i == "images/s:") ips = $(i + 1)}}
      /^  optimizer step/ {step = $3}
      /^  gradient sync/ {sync = $3}
      END {if (state == "") state = "all of it"
           if (grads == "") grads = "all of them"
           if (masters == "") masters = "all of them"
           if (params == "") params = "all of them"
           if (avg != "") printf "%-6s  average %s\n", s, avg
           printf "%-6s  state %-16s  grads %-16s  masters %-16s  params %-16s  tensors MiB %5s peak  host MiB %-12s  step %8s ms  sync %8s ms  %7s img/s  loss %s\n",
                  s, state (state ~ /of it/ ? "" : " MB"), grads (grads ~ /of them/ ? "" : " MB"),
                  masters (masters ~ /of them/ ? "" : " MB"), params (params ~ /of them/ ? "" : " MB"),
                  tensors, mem, step, sync, ips, loss}'
}

echo "$ranks ranks: $*"
run ddp ddp "$@"
run zero1 zero1 "$@"
run zero2 zero2 "$@"
run zero3 zero3 "$@"
if [[ -n ${SHARD_SIZE:-} ]]; then run hybrid zero3 --shard-size "$SHARD_SIZE" "$@"; fi
