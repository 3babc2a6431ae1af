#!/usr/bin/env bash
# --strategy zero3's prefetching (FSDP's backward_prefetch and forward_prefetch) against plain
# DDP on the same ranks, the settings taking turns round by round on this machine so that load
# drifts hit them alike: the forward and backward mean per step (rank 0's profiler; zero3's
# gathers happen inside them), images/s, and the most the CPU tensors held (largest of any
# rank). The median of ROUNDS rounds is printed per setting. BASE=path/to/older/mlai_train adds
# zero3 under that binary (its own defaults) as one more setting, for a before/after.
#   bash bench/zero3_prefetch.sh                                  # resnet18_cifar, 2 CPU ranks
#   ROUNDS=5 bash bench/zero3_prefetch.sh --arch resnet50_cifar --precision bf16
# Extra arguments go to every run and replace the defaults they name. On a GPU node add
# --device cuda (NCCL's broadcasts then run on their own stream, beside the compute).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${MLAI_TRAIN:-build/bin/mlai_train}
[[ -x $bin ]] || { echo "zero3_prefetch.sh: no $bin (build it, or set MLAI_TRAIN)" >&2; exit 1; }
base=${BASE:-}
[[ -z $base || -x $base ]] || { echo "zero3_prefetch.sh: BASE=$base is not executable" >&2; exit 1; }
ranks=${RANKS:-2}
rounds=${ROUNDS:-3}
logs=${LOG_DIR:-logs/zero3-prefetch}

defaults=()
for pair in "--dataset fashion-mnist" "--arch resnet18_cifar" "--optimizer adamw" "--lr 0.001" \
  "--batch-size 16" "--epochs 1" "--limit-train-batches 30"; do
  flag=${pair%% *}
  # shellcheck disable=SC2206  # "--flag value": two words
  [[ " $* " == *" $flag "* ]] || defaults+=($pair)
done

# name|binary|flags
settings=("ddp|$bin|--strategy ddp"
  "zero3 none|$bin|--strategy zero3 --backward-prefetch none"
  "zero3 backward_post|$bin|--strategy zero3 --backward-prefetch backward_post"
  "zero3 backward_pre|$bin|--strategy zero3 --backward-prefetch backward_pre"
  "zero3 pre+forward|$bin|--strategy zero3 --backward-prefetch backward_pre --forward-prefetch")
[[ -n $base ]] && settings+=("zero3 (BASE)|$base|--strategy zero3")

# One run: "forward_ms backward_ms images_per_s tensor_peak_mib"
one() {
  local exe=$1 flags=$2
  shift 2
  # shellcheck disable=SC2086  # the setting's flags split into words
  "$exe" --devices "$ranks" $flags "${defaults[@]}" --limit-val-batches 1 --limit-test-batches 1 \
    --num-sanity-val-steps 0 --log-device-stats --no-progress --log-dir "$logs" \
    --experiment-name prefetch "$@" 2>&1 |
    awk '/^epoch:/ {for (i = 1; i < NF; ++i) {
                      if ($i == "memory:" && ($(i - 1) == "tensor" || $(i - 1) == "GPU")) mem = $(i + 1)
                      if ($i == "images/s:") ips = $(i + 1)}}
         /^  forward / {fwd = $2}
         /^  backward / {bwd = $2}
         END {print fwd, bwd, ips, mem}'
}

results=$(mktemp)
trap 'rm -f "$results"' EXIT
echo "$ranks ranks, $rounds rounds: ${defaults[*]} $*"
for ((r = 1; r <= rounds; ++r)); do
  for s in "${settings[@]}"; do
    IFS='|' read -r name exe flags <<< "$s"
    echo "$name|$(one "$exe" "$flags" "$@")" >> "$results"
  done
  echo "round $r of $rounds done" >&2
done

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
printf '%-22s %12s %12s %10s %14s\n' setting "forward ms" "backward ms" "images/s" "tensors MiB"
for s in "${settings[@]}"; do
  name=${s%%|*}
  rows=$(grep -F "$name|" "$results" | cut -d'|' -f2)
  printf '%-22s %12s %12s %10s %14s\n' "$name" \
    "$(awk '{print $1}' <<< "$rows" | median)" "$(awk '{print $2}' <<< "$rows" | median)" \
    "$(awk '{print $3}' <<< "$rows" | median)" "$(awk '{print $4}' <<< "$rows" | median)"
done
