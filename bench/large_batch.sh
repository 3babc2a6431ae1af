#!/usr/bin/env bash
# Large-batch study on the main job's model: the MLP on Fashion-MNIST trained at a small batch
# (the reference) and at batch 8192 (64 GPUs x 128) with SGD, AdamW, LARS and LAMB, each over a
# few learning rates, the same epochs, a cosine schedule after 5 epochs of linear warmup.
# Prints one line per run: the test accuracy, the flags. Runs are local and one at a time;
# on a cluster, the same grid is one slurm/sweep.sh job array.
#   bash bench/large_batch.sh                  # EPOCHS=30 SEED=0 MLAI_TRAIN=build/bin/mlai_train
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${MLAI_TRAIN:-build/bin/mlai_train}
epochs=${EPOCHS:-30}
seed=${SEED:-0}
logs=${LOG_DIR:-logs/large-batch}
big=8192
# 54000 training images (10% held out for validation) make 7 batches of 8192 an epoch.
warmup=$((5 * 7))

run() {
  local label=$1
  shift
  local out
  # The test accuracy and the last epoch's training loss (nan: the run diverged).
  out=$("$bin" --arch mlp --dataset fashion-mnist --epochs "$epochs" --seed "$seed" \
    --log-dir "$logs" --experiment-name "$label" --lr-schedule warmup_cosine "$@" 2>&1 |
    awk '/^epoch:/ {for (i = 1; i < NF; ++i) if ($i == "loss:") {l = $(i + 1); break}}
         /^accuracy/ {a = $2}
         END {printf "%8s %10s", a == "" ? "FAILED" : a, l}')
  printf '%-24s %s   %s\n' "$label" "$out" "$*"
}

printf '%-24s %8s %10s   %s\n' run test_acc train_loss flags
run b256-sgd --batch-size 256 --optimizer sgd --lr 0.1 --weight-decay 5e-4 --warmup-steps $((5 * 211))
for lr in 0.1 0.2 0.4 0.8 1.6 3.2; do
  run "b$big-sgd-lr$lr" --batch-size $big --optimizer sgd --lr $lr --weight-decay 5e-4 --warmup-steps $warmup
done
for lr in 0.005 0.01 0.02 0.04; do
  run "b$big-adamw-lr$lr" --batch-size $big --optimizer adamw --lr $lr --weight-decay 0.01 --warmup-steps $warmup
done
for lr in 2 5 10 15; do
  run "b$big-lars-lr$lr" --batch-size $big --optimizer lars --lr $lr --weight-decay 5e-4 --no-bias-decay --warmup-steps $warmup
done
for lr in 0.01 0.02 0.04 0.08; do
  run "b$big-lamb-lr$lr" --batch-size $big --optimizer lamb --lr $lr --weight-decay 0.01 --eps 1e-6 --no-bias-decay --warmup-steps $warmup
done
