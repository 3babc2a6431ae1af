#!/usr/bin/env bash
# The one script run on a lent GPU machine (H100/H200: nvcc, CMake, PyTorch and the NVIDIA libraries
# as pip packages, but no Open MPI, no HDF5, no network): it runs the test binaries' CUDA suites
# (and the whole binaries while time remains), mlai_train of resnet18_cifar on the real
# Fashion-MNIST at --precision 16 and 32 (issue #5's accuracy check; synthetic MNIST-format data
# made there when the data was not carried), the CUDA kernel benchmarks (resnet18's
# convolutions at 32x32, shape by shape, beside torch's; the fused layers against the separate
# ops), whole training steps of mlp / resnet18_cifar / resnet18 in mlai
# (mlai_bench_step, fp16 first, then fp32, bf16, and fp16 with --cuda-graphs and with layer
# fusion off) and in PyTorch
# (bench/reference_step.py: eager, AMP, channels_last, bf16) side by side, and a PyTorch
# convolution/GEMM/bandwidth reference, and writes everything to $OUT/gpu-check-<UTC date>/ (7 files: the
# device tool brings back at most 8), printing a summary table last. The mlai step runs are
# also traced (mlai_bench_step --trace: host and GPU time per module and autograd op): those
# traces and torch.json travel in extra.tar.gz.
#
# 1. Here (the build machine, Debian 12 with the CUDA toolkit):
#      bash bench/gpu-check.sh prepare
#    configures build-gpu (-DCMAKE_CUDA_ARCHITECTURES=90 -DHDF5_USE_STATIC_LIBRARIES=ON, Release),
#    builds it (under flock, -j2), and bundles the test and benchmark binaries with the shared
#    libraries they need (Open MPI, PMIx, OpenBLAS, ...) into .devbundle/ with
#    ../shared/device/bundle-runtime.sh; .devbundle/COMMIT records the commit (.git does not travel).
#    .devbundle is far over the device's 64 MiB (Debian's libopenblas alone is 36 MB, and each
#    test binary holds the whole library), so it is also packed into build-gpu/gpu-check.tar.xz.
#    The real Fashion-MNIST (dataset-fashion-mnist, 30 MB of .gz) is copied to build-gpu/fashion-mnist.
# 2. On the GPU machine, from the repository root, carrying both (the archive is unpacked there):
#      device run: command "bash bench/gpu-check.sh run",
#                  carry ["build-gpu/gpu-check.tar.xz", "build-gpu/fashion-mnist"], timeout_s 570
#    It ends within about 9 minutes (each step has its own deadline).
# 3. Keep the results: copy the fetched gpu-check-<date>/ folder into bench/results/ and commit it.
#
# GPU_CHECK_TEST_TIMEOUT (120 s) bounds each test binary run; BENCH_FILTER (Cuda) and
# BENCH_MIN_TIME (0.2 s) shape the benchmark run; `summary DIR` reprints a results folder's table.
# Locally, `bash bench/gpu-check.sh run` works without a GPU too (CUDA tests skip, CUDA benchmarks
# report "no CUDA device"); $OUT defaults to ./gpu-out. Exit status: 1 when a test binary failed or
# a benchmark's validation failed, else 0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bundle=.devbundle
build="build-gpu"
pack=$build/gpu-check.tar.xz

prepare() {
  local nvcc lock=${MLAI_BUILD_LOCK:-/tmp/mlai-build.lock} script s
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  [ -x "$nvcc" ] || { echo "gpu-check prepare: no nvcc (install the CUDA toolkit)" >&2; exit 1; }
  script=""
  for s in ${BUNDLE_RUNTIME:-} shared/device/bundle-runtime.sh ../shared/device/bundle-runtime.sh; do
    [ -f "$s" ] && { script=$s; break; }
  done
  [ -n "$script" ] || { echo "gpu-check prepare: bundle-runtime.sh not found in shared/device or ../shared/device" >&2; exit 1; }
  flock "$lock" cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMLAI_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DHDF5_USE_STATIC_LIBRARIES=ON -DMLAI_BUILD_TESTS=ON \
    -DMLAI_BUILD_BENCH=ON
  flock "$lock" cmake --build "$build" -j "${JOBS:-2}"
  local bins=() f
  for f in "$build"/test/test_* "$build"/bench/mlai_bench_* "$build"/bin/mlai_*; do
    # (Not the links a local dry run of `run` leaves in $build/bin, pointing into the bundle.)
    [ -f "$f" ] && [ -x "$f" ] && [ ! -L "$f" ] && bins+=("$f")
  done
  [ ${#bins[@]} -gt 0 ] || { echo "gpu-check prepare: no binaries in $build" >&2; exit 1; }
  {
    git rev-parse HEAD 2> /dev/null || echo unknown
    if [ -n "$(git status --porcelain --untracked-files=no 2> /dev/null)" ]; then
      echo "(plus uncommitted changes)"
    fi
  } > "$build/COMMIT"
  bash "$script" "$bundle" "${bins[@]}"
  cp "$build/COMMIT" "$bundle/COMMIT"
  pwd > "$bundle/SOURCE_DIR"  # the tests have this path compiled in (MLAI_SOURCE_DIR)
  echo "bundled: ${bins[*]##*/}"
  # -9: a 64 MiB dictionary spans several binaries, which share most of their bytes (each
  # links the whole library): about half the size of -6.
  tar -cf - "$bundle" | xz -T2 -9 > "$pack"
  local fm=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
  if [ -f "$fm/train-images-idx3-ubyte.gz" ]; then
    mkdir -p "$build/fashion-mnist"
    cp "$fm"/*-ubyte.gz "$build/fashion-mnist/"
  else
    echo "gpu-check prepare: no Fashion-MNIST in $fm (apt-get install dataset-fashion-mnist):" \
      "the accuracy check will use synthetic data" >&2
  fi
  echo "$bundle: $(du -sh "$bundle" | cut -f1); packed: $pack $(du -sh "$pack" | cut -f1)" \
    "(the device machine takes at most 64 MiB of working tree + carry)"
  echo "carry total: $(du -shc "$pack" "$build/fashion-mnist" 2> /dev/null | tail -n1 | cut -f1) (at most 64 MiB)"
  echo "next: device run, command 'bash bench/gpu-check.sh run'," \
    "carry [\"$pack\", \"$build/fashion-mnist\"], timeout_s 570"
}

# ---------------------------------------------------------------------------------------------
run() {
  local out_root=${OUT:-./gpu-out}
  local dir
  dir="$out_root/gpu-check-$(date -u +%Y%m%d-%H%M%S)"
  mkdir -p "$dir/extra"
  dir=$(cd "$dir" && pwd)
  if [ ! -d "$bundle/bin" ] && [ -f "$pack" ]; then
    echo "gpu-check: unpacking $pack"
    # Python's tarfile needs no xz binary; the "tar" filter keeps modes and the bundle's links.
    python3 -c 'import sys, tarfile
kw = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
tarfile.open(sys.argv[1]).extractall(".", **kw)' "$pack"
  fi
  [ -d "$bundle/bin" ] || { echo "gpu-check run: no $bundle/bin and no $pack (run 'bash bench/gpu-check.sh prepare' first)" >&2; exit 1; }
  echo "gpu-check: writing to $dir"

  # The tests find their data through paths compiled in on the build machine: make them resolve.
  local src
  src=$(cat "$bundle/SOURCE_DIR" 2> /dev/null || true)
  if [ -n "$src" ] && [ ! -e "$src" ]; then
    { mkdir -p "$(dirname "$src")" && ln -s "$(pwd)" "$src"; } 2> /dev/null || true
  fi
  mkdir -p "$build/test" "$build/bin"
  # Tests that run the command-line programs look for them in $MLAI_BINARY_DIR/bin (this
  # build-gpu/bin on the build machine): point those names at the bundle's.
  local prog
  # (Only where there is none: on the build machine these are the real build's outputs.)
  for prog in "$bundle"/bin/mlai_*; do
    if [ -e "$prog" ] && [ ! -e "$build/bin/${prog##*/}" ]; then
      ln -sn "$(pwd)/$prog" "$build/bin/${prog##*/}"
    fi
  done

  local orig_path=$PATH orig_ld=${LD_LIBRARY_PATH:-}
  if [ -f "$bundle/env.sh" ]; then
    set +u
    # shellcheck disable=SC1091  # made by bundle-runtime.sh
    . "$bundle/env.sh"
    set -u
  fi

  # ---- environment ----
  {
    echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host:    $(hostname)"
    echo "commit:  $(tr '\n' ' ' < "$bundle/COMMIT" 2> /dev/null || echo unknown)"
    echo "command: bash bench/gpu-check.sh run   (in $(pwd); OUT=$out_root)"
    echo "binaries: $(cd "$bundle/bin" && printf '%s ' *)"
    if command -v nvidia-smi > /dev/null; then
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit,temperature.gpu,pstate --format=csv || true
      echo
      nvidia-smi || true
      nvidia-smi -q -d PERFORMANCE,CLOCK || true
    else
      echo "nvidia-smi: not found (no NVIDIA driver on this machine)"
    fi
    command -v nvcc > /dev/null && nvcc --version | tail -n 2
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  } > "$dir/env.txt" 2>&1
  head -n 4 "$dir/env.txt"
  if command -v nvidia-smi > /dev/null; then nvidia-smi || true; else echo "nvidia-smi: not found"; fi

  # Deadlines in seconds since the start; the whole run stays under the device call's 570 s.
  # The models run after the main ones, mlai and torch at the same batches.
  local extra_archs=mobilenet_v2_cifar,resnext50_32x4d_cifar,vit_cifar
  local extra_batch=mobilenet_v2_cifar=128,resnext50_32x4d_cifar=128,vit_cifar=128
  local t_tests=100 t_train=230 t_bench=280 t_step=390 t_parity=430 t_torch_step=505 t_torch=532
  # ---- tests: each binary's CUDA suites, then the whole binary ----
  : > "$dir/tests.log"
  printf 'binary\tmode\trc\tpassed\tfailed\tskipped\tseconds\n' > "$dir/tests.tsv"
  local bin mode filter left t0 rc log
  for mode in cuda all; do
    for bin in "$bundle"/bin/test_*; do
      [ -x "$bin" ] || continue
      filter='*'
      [ "$mode" = cuda ] && filter='CudaVsCpu*:*Cuda*:*Cudnn*'
      left=$((t_tests - SECONDS))
      if [ "$left" -lt 10 ]; then
        printf '%s\t%s\tskipped-deadline\t0\t0\t0\t0\n' "${bin##*/}" "$mode" >> "$dir/tests.tsv"
        continue
      fi
      # Cut short by this phase's deadline rather than by the per-binary limit: a timeout then
      # says nothing about the tests (the "all" pass only fills the time left; CI runs them).
      local cut=0
      if [ "$left" -gt "${GPU_CHECK_TEST_TIMEOUT:-120}" ]; then
        left=${GPU_CHECK_TEST_TIMEOUT:-120}
      else
        cut=1
      fi
      echo "==== ${bin##*/} --gtest_filter='$filter' (timeout ${left}s) ====" | tee -a "$dir/tests.log"
      t0=$SECONDS
      log=$(mktemp)
      rc=0
      (cd "$build/test" && timeout -k 5 "$left" "$OLDPWD/$bin" --gtest_color=no \
        --gtest_filter="$filter") > "$log" 2>&1 || rc=$?
      cat "$log" >> "$dir/tests.log"
      grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[==========\] .* ran' "$log" || true
      if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "TIMEOUT after ${left}s" | tee -a "$dir/tests.log"
        [ "$cut" = 1 ] && rc=cut-at-deadline
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${bin##*/}" "$mode" "$rc" \
        "$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n1)" \
        "$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n1)" \
        "$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -n1)" \
        "$((SECONDS - t0))" >> "$dir/tests.tsv"
      rm -f "$log"
    done
  done

  # ---- mlai_train on the GPU: resnet18_cifar on the real Fashion-MNIST, fp16 then fp32, the
  # same seed and schedule (issue #5: within 0.5 points); synthetic data when it was not carried.
  # fp16 first: should time run out, the run that matters most has finished. 8 epochs: fp16
  # takes about 20 s, fp32 about 75 s on an H200 (3 epochs, -0.55 points, settled nothing).
  local trainer="$bundle/bin/mlai_train" data="$build/fashion-mnist" dataset=fashion-mnist prec
  local epochs=${GPU_CHECK_EPOCHS:-8} runs_left=2
  : > "$dir/bench.log"
  if [ -x "$trainer" ]; then
    if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
      data=/tmp/mlai-gpu-check-mnist dataset=mnist epochs=2
      rm -rf "$data"
      PATH=$orig_path LD_LIBRARY_PATH=$orig_ld python3 test/make_synthetic_mnist.py "$data" \
        --train 4096 --test 512 >> "$dir/bench.log" 2>&1 || true
    fi
    for prec in 16 32; do
      # An even share of what is left for each remaining run.
      left=$(((t_train - SECONDS) / runs_left))
      runs_left=$((runs_left - 1))
      [ "$left" -gt 10 ] || { echo "mlai_train --precision $prec: past the deadline" | tee -a "$dir/bench.log"; continue; }
      echo "==== mlai_train --device cuda --arch resnet18_cifar --dataset $dataset --precision $prec --epochs $epochs (timeout ${left}s) ====" | tee -a "$dir/bench.log"
      timeout -k 5 "$left" "$trainer" --device cuda --arch resnet18_cifar --dataset "$dataset" \
        --data-dir "$data" --epochs "$epochs" --batch-size 256 --optimizer sgd --lr 0.1 \
        --momentum 0.9 --weight-decay 5e-4 --lr-schedule cosine --workers 4 --seed 1 \
        --precision "$prec" --log-device-stats --no-progress --log-dir /tmp/mlai-gpu-check-logs 2>&1 \
        | grep -vE '^ *[0-9]+ +([a-z]|[0-9]+ +[0-9])' | tee -a "$dir/bench.log" || true
    done
  fi

  # ---- CUDA kernel benchmarks, one family at a time (resnet18's convolutions first, a dtype at
  # a time, then the fused layers) so that a deadline leaves whole results; their JSON files are
  # merged into bench.json ----
  local benchbin="$bundle/bin/mlai_bench_kernels" fam fams bdir=/tmp/mlai-gpu-check-bench
  rm -rf "$bdir" && mkdir -p "$bdir"
  if [ -x "$benchbin" ] && [ $((t_bench - SECONDS)) -gt 20 ]; then
    fams=$("$benchbin" --benchmark_list_tests --benchmark_filter="${BENCH_FILTER:-Cuda}" 2> /dev/null \
      | awk -F/ '{print ($1 == "CudaConv" ? $1 "/" $2 : $1)}' | awk '!seen[$0]++' \
      | awk '/CudaConv/ {print 0, $0; next} /BnAddRelu|Linear/ {print 1, $0; next} /SoftmaxXent/ {print 2, $0; next} {print 3, $0}' \
      | sort -s -k1,1n | cut -d' ' -f2)
    for fam in $fams; do
      left=$((t_bench - SECONDS))
      [ "$left" -gt 5 ] || { echo "kernel benchmarks from $fam on: past the deadline" | tee -a "$dir/bench.log"; break; }
      echo "==== mlai_bench_kernels --benchmark_filter='^$fam/' (timeout ${left}s) ====" | tee -a "$dir/bench.log"
      # libbenchmark 1.7 takes --benchmark_min_time in plain seconds (1.8 also accepts "0.2s").
      timeout -k 5 "$left" "$benchbin" --benchmark_filter="^$fam/" \
        --benchmark_min_time="${BENCH_MIN_TIME:-0.05}" --benchmark_out="$bdir/${fam//\//_}.json" \
        --benchmark_out_format=json 2>&1 | tee -a "$dir/bench.log" || rm -f "$bdir/${fam//\//_}.json"
    done
    python3 - "$bdir" "$dir/bench.json" << 'PY' || true
import glob, json, sys
merged = None
for f in sorted(glob.glob(sys.argv[1] + "/*.json")):
    try:
        j = json.load(open(f))
    except Exception:
        continue  # cut off mid-write
    if merged is None:
        merged = j
    else:
        merged["benchmarks"] += j.get("benchmarks", [])
if merged is not None:
    json.dump(merged, open(sys.argv[2], "w"), indent=1)
PY
  else
    echo "kernel benchmarks not run (no $benchbin, or past the deadline)" | tee -a "$dir/bench.log"
  fi

  # ---- whole training steps: mlai, then PyTorch on the same card (step.jsonl) ----
  local stepbin="$bundle/bin/mlai_bench_step"
  left=$((t_step - SECONDS))
  if [ -x "$stepbin" ] && [ "$left" -gt 15 ]; then
    echo "==== mlai_bench_step (timeout ${left}s) ====" | tee -a "$dir/bench.log"
    timeout -k 5 "$left" "$stepbin" --device cuda --precision 16,32,bf16 --steps 30 --warmup 10 \
      --time-budget $(((left - 25) * 6 / 10 > 5 ? (left - 25) * 6 / 10 : 5)) \
      --trace "$dir/extra/traces" --out "$dir/step.jsonl" 2>&1 | tee -a "$dir/bench.log" || true
    # fp16 with the step replayed from a CUDA graph (--cuda-graphs: resnet18 too, to tell the
    # host's launch time from the GPU's), then with layer fusion off (separate BN / add / relu,
    # no cuBLASLt epilogues): what each is worth; and fp32 on TF32 tensor cores
    # (--float32-matmul-precision high, beside torch's eager-tf32); fp16 with cuDNN's heuristic
    # algorithms instead of timed ones (--cudnn-benchmark false: are the timed choices for
    # resnet18's small spatial sizes the slow part?); fp16 with --activation-checkpointing
    # (the peak memory it saves against the time it costs).
    local extra archs
    for extra in "--precision 16 --cuda-graphs" "--precision 16 --fusion off" \
      "--precision 16 --cudnn-benchmark false" "--precision 32 --float32-matmul-precision high" \
      "--precision 16 --activation-checkpointing"; do
      left=$((t_step - SECONDS))
      [ "$left" -gt 10 ] || continue
      case "$extra" in
        *cuda-graphs*) archs=mlp,resnet18_cifar,resnet18 ;;
        *matmul* | *benchmark* | *checkpointing*) archs=resnet18_cifar,resnet18 ;;
        *) archs=mlp,resnet18_cifar ;;
      esac
      # shellcheck disable=SC2086  # $extra is several words on purpose
      timeout -k 5 "$left" "$stepbin" --device cuda $extra \
        --arch "$archs" --steps 30 --warmup 10 --trace "$dir/extra/traces" \
        --time-budget $((left > 16 ? left - 8 : left / 2)) \
        --out "$dir/step.jsonl" 2>&1 | tee -a "$dir/bench.log" || true
    done
    # The models of grouped and depthwise convolutions (cuDNN's group count, never run on a GPU
    # before) and the ViT (attention's batched GEMMs, layer norm, GELU), fp16: against torch's
    # amp rows for the same archs and batches below.
    left=$((t_step - SECONDS))
    if [ "$left" -gt 10 ]; then
      timeout -k 5 "$left" "$stepbin" --device cuda --precision 16 \
        --arch "$extra_archs" --batch "$extra_batch" --steps 20 --warmup 5 \
        --time-budget $((left > 16 ? left - 8 : left / 2)) \
        --out "$dir/step.jsonl" 2>&1 | tee -a "$dir/bench.log" || true
    fi
  fi
  # ---- parity with PyTorch on the GPU: tools/parity_resnet.py's float64 goldens ----
  local paritybin="$bundle/bin/mlai_parity" pdir=/tmp/mlai-gpu-check-parity
  left=$((t_parity - SECONDS))
  if [ -x "$paritybin" ] && [ "$left" -gt 8 ]; then
    echo "==== parity: tools/parity_resnet.py + mlai_parity --device cuda (timeout ${left}s) ====" | tee -a "$dir/bench.log"
    rm -rf "$pdir" "$pdir-vit"
    if PATH=$orig_path LD_LIBRARY_PATH=$orig_ld timeout -k 5 "$left" python3 tools/parity_resnet.py \
      --dir "$pdir" >> "$dir/bench.log" 2>&1; then
      timeout -k 5 $((t_parity - SECONDS > 5 ? t_parity - SECONDS : 5)) "$paritybin" \
        --weights "$pdir/weights.h5" --golden "$pdir/golden.h5" --device cuda 2>&1 \
        | tee -a "$dir/bench.log" || true
      # vit_cifar: the ViT's CUDA kernels (layer norm, GELU, softmax, the token ops, attention's
      # batched GEMMs), tested only against their CPU twins before, against torchvision's float64.
      if [ $((t_parity - SECONDS)) -gt 8 ] && PATH=$orig_path LD_LIBRARY_PATH=$orig_ld \
        timeout -k 5 $((t_parity - SECONDS)) python3 tools/parity_resnet.py --arch vit_cifar \
        --dir "$pdir-vit" >> "$dir/bench.log" 2>&1; then
        echo "mlai_parity vit_cifar:" | tee -a "$dir/bench.log"
        timeout -k 5 $((t_parity - SECONDS > 5 ? t_parity - SECONDS : 5)) "$paritybin" \
          --weights "$pdir-vit/weights.h5" --golden "$pdir-vit/golden.h5" --device cuda 2>&1 \
          | tee -a "$dir/bench.log" || true
      fi
      # resnet18_cifar again in float64 on the GPU (cuDNN double convolutions, mlai's kernels):
      # the implementation alone, to ~1e-10. Diagnostic: its lines start "f64 ", so a failure
      # here is shown but does not fail the check (cuDNN may not run double NHWC at all).
      if [ $((t_parity - SECONDS)) -gt 5 ]; then
        timeout -k 5 $((t_parity - SECONDS)) "$paritybin" --weights "$pdir/weights.h5" \
          --golden "$pdir/golden.h5" --device cuda --dtype float64 2>&1 | sed 's/^/f64 /' \
          | tee -a "$dir/bench.log" || true
      fi
    else
      echo "parity goldens not made (torch, torchvision or h5py missing, or too slow)" | tee -a "$dir/bench.log"
    fi
  fi

  left=$((t_torch_step - SECONDS))
  if [ "$left" -gt 15 ]; then
    echo "==== bench/reference_step.py (timeout ${left}s) ====" | tee -a "$dir/bench.log"
    PATH=$orig_path LD_LIBRARY_PATH=$orig_ld PYTHONUNBUFFERED=1 timeout -k 5 "$left" \
      python3 bench/reference_step.py --modes "${GPU_CHECK_TORCH_MODES:-amp,amp-cl,eager,bf16,eager-tf32}" \
      --steps 30 --warmup 10 --time-budget $((left > 40 ? left - 20 : left / 2)) \
      --out "$dir/step.jsonl" 2>&1 \
      | tee -a "$dir/bench.log" || true
    left=$((t_torch_step - SECONDS))
    [ "$left" -gt 10 ] && PATH=$orig_path LD_LIBRARY_PATH=$orig_ld PYTHONUNBUFFERED=1 \
      timeout -k 5 "$left" python3 bench/reference_step.py --modes amp \
      --arch "$extra_archs" --batch "$extra_batch" --steps 20 --warmup 5 \
      --out "$dir/step.jsonl" 2>&1 | tee -a "$dir/bench.log" || true
  fi

  # ---- PyTorch reference (its own libraries: the bundle's environment left out) ----
  left=$((t_torch - SECONDS))
  [ "$left" -gt 60 ] && left=60
  if [ "$left" -gt 5 ]; then
    echo "==== PyTorch reference (timeout ${left}s) ===="
    PATH=$orig_path LD_LIBRARY_PATH=$orig_ld PYTHONUNBUFFERED=1 timeout -k 5 "$left" \
      python3 - "$dir/extra/torch.json" << 'PY' 2>&1 | tee -a "$dir/bench.log" || true
import json, sys
out = {"available": False}
def save():
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)
try:
    import torch
except Exception as e:  # no torch here: say so and stop
    out["reason"] = f"import torch failed: {e}"; save(); print(out["reason"]); sys.exit(0)
if not torch.cuda.is_available():
    out["reason"] = "torch sees no CUDA device"; save(); print(out["reason"]); sys.exit(0)
out.update(available=True, torch=torch.__version__, cuda=torch.version.cuda,
           device=torch.cuda.get_device_name(0), rows=[])
def median_ms(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); e.synchronize()
        times.append(s.elapsed_time(e))
    return sorted(times)[len(times) // 2]
def row(name, ms, **rate):
    out["rows"].append(dict(name=name, ms=ms, **rate)); save()
    print(f"{name:40s} {ms:9.3f} ms  " + "  ".join(f"{k}={v:.1f}" for k, v in rate.items()))
dev = "cuda:0"
# The convolutions of mlai_bench_kernels' CudaConv rows (bench/layers_bench.cpp: resnet18 on
# 32x32 images at batch 256, and resnet18_cifar's first stage), channels_last, cuDNN
# benchmark mode, fp32 without TF32 as mlai's fp32 rows: time per call on the device and the
# host's time to issue one (Python and dispatcher included), first, as the newest question.
torch.backends.cudnn.benchmark = True
torch.backends.cudnn.allow_tf32 = False
conv_shapes = [(256, 32, 32, 3, 64, 7, 2, 3), (256, 8, 8, 64, 64, 3, 1, 1),
               (256, 8, 8, 64, 128, 3, 2, 1), (256, 8, 8, 64, 128, 1, 2, 0),
               (256, 4, 4, 128, 128, 3, 1, 1), (256, 4, 4, 128, 256, 3, 2, 1),
               (256, 2, 2, 256, 256, 3, 1, 1), (256, 2, 2, 256, 512, 3, 2, 1),
               (256, 1, 1, 512, 512, 3, 1, 1), (256, 32, 32, 64, 64, 3, 1, 1)]
import time
def per_call(fn, reps=20, rounds=10):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    dev_ms, host_us = [], []
    for _ in range(rounds):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        host_us.append((time.perf_counter() - t0) / reps * 1e6)
        e.record(); e.synchronize()
        dev_ms.append(s.elapsed_time(e) / reps)
    return sorted(dev_ms)[rounds // 2], sorted(host_us)[rounds // 2]
for label, dt in [("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)]:
    for pname in ("fwd", "dgrad", "wgrad"):
        for n, h, w, ci, co, k, st, pd in conv_shapes:
            cl = torch.channels_last
            x = torch.empty(n, ci, h, w, device=dev, dtype=dt).uniform_(-1, 1).to(memory_format=cl)
            wt = torch.empty(co, ci, k, k, device=dev, dtype=dt).uniform_(-0.2, 0.2).to(memory_format=cl)
            oh, ow = (h + 2 * pd - k) // st + 1, (w + 2 * pd - k) // st + 1
            dy = torch.empty(n, co, oh, ow, device=dev, dtype=dt).uniform_(-1, 1).to(memory_format=cl)
            mask = {"fwd": None, "dgrad": [True, False, False], "wgrad": [False, True, False]}[pname]
            if mask is None:
                fn = lambda: torch.nn.functional.conv2d(x, wt, None, st, pd)
            else:
                fn = lambda: torch.ops.aten.convolution_backward(
                    dy, x, wt, None, [st, st], [pd, pd], [1, 1], False, [0, 0], 1, mask)
            ms, hu = per_call(fn)
            name = f"torch.conv/{label}/{pname}/{n}x{h}x{w}x{ci}-{co}k{k}s{st}"
            row(name, ms, TFLOPS=2 * n * oh * ow * co * ci * k * k / ms / 1e9, host_us=hu)
            del x, wt, dy
torch.backends.cudnn.allow_tf32 = True
for label, dt, tf32 in [("fp32", torch.float32, False), ("fp32_tf32", torch.float32, True),
                        ("fp16", torch.float16, False), ("bf16", torch.bfloat16, False)]:
    torch.backends.cuda.matmul.allow_tf32 = tf32
    for n in (4096, 8192):
        a = torch.empty(n, n, device=dev, dtype=dt).uniform_(-1, 1)
        b = torch.empty(n, n, device=dev, dtype=dt).uniform_(-1, 1)
        ms = median_ms(lambda: torch.matmul(a, b), 10)
        row(f"torch.matmul/{label}/{n}x{n}x{n}", ms, TFLOPS=2 * n**3 / ms / 1e9)
        del a, b
torch.backends.cuda.matmul.allow_tf32 = False
n = 64 << 20
for label, dt in [("fp32", torch.float32), ("fp16", torch.float16)]:
    x = torch.empty(n, device=dev, dtype=dt).uniform_(-1, 1)
    y = torch.empty(n, device=dev, dtype=dt).uniform_(-1, 1)
    nb = x.element_size() * n
    ms = median_ms(lambda: torch.add(x, y), 20)
    row(f"torch.add/{label}/64M", ms, GBps=3 * nb / ms / 1e6)
    ms = median_ms(lambda: y.copy_(x), 20)
    row(f"torch.copy/{label}/64M (read+write)", ms, GBps=2 * nb / ms / 1e6)
# Optimizer steps over resnet18_cifar's parameters, beside mlai's CudaOptimStep rows
# (bench/reference_optim.py: torch's fused SGD and AdamW, timm's Lars and Lamb if installed).
try:
    sys.path.insert(0, "bench")
    from reference_optim import optimizer_rows
    for name, ms, rate in optimizer_rows(torch, dev):
        row(name, ms, Mparams_per_s=rate)
except Exception as e:
    print(f"optimizer reference skipped: {e}")
save()
PY
  fi

  summarize "$dir" | tee "$dir/summary.txt"
  # The device brings back at most 8 files: the traces and torch.json travel packed.
  if [ -d "$dir/extra" ]; then
    tar -C "$dir" -czf "$dir/extra.tar.gz" extra && rm -rf "$dir/extra"
  fi
  local status
  status=$(tail -n 1 "$dir/summary.txt")
  echo "results: $dir: $(cd "$dir" && printf '%s ' *)"
  case "$status" in *"FAILED"*) return 1 ;; esac
  return 0
}

# Prints the summary table from tests.tsv, bench.json and torch.json; the last line says
# PASSED or FAILED.
summarize() {
  python3 - "$1" << 'PY'
import csv, json, os, sys
d = sys.argv[1]
def load(name):
    for p in (os.path.join(d, name), os.path.join(d, "extra", name)):
        try:
            with open(p) as f:
                return json.load(f)
        except Exception:
            pass
    try:  # a fetched results folder: extra/ is packed
        import tarfile
        with tarfile.open(os.path.join(d, "extra.tar.gz")) as t:
            return json.load(t.extractfile("extra/" + name))
    except Exception:
        return None
env = open(os.path.join(d, "env.txt")).read().splitlines()
print("\n================ gpu-check summary ================")
for line in env[:3]:
    print(line)
gpu = [l for l in env if l.startswith("name,")]
if gpu:
    i = env.index(gpu[0]); print("gpu:     " + env[i + 1])
bad = False
print("\nTests (binary, suites, exit, passed / failed / skipped, seconds)")
with open(os.path.join(d, "tests.tsv")) as f:
    for r in csv.DictReader(f, delimiter="\t"):
        rc = r["rc"]
        note = {"0": "ok", "124": "TIMEOUT", "137": "TIMEOUT"}.get(rc, "FAILED" if rc.isdigit() else rc)
        # (cut-at-deadline and skipped-deadline: the time ran out, not the tests)
        if note in ("FAILED", "TIMEOUT"):
            bad = True
        print(f"  {r['binary']:18s} {r['mode']:5s} {note:16s} {r['passed'] or 0:>5} / {r['failed'] or 0:>3} / {r['skipped'] or 0:>3}  {r['seconds']:>4}s")
failed = [l.split("]", 1)[1].strip() for l in open(os.path.join(d, "tests.log"), errors="replace")
          if l.startswith("[  FAILED  ]") and "listed below" not in l and " tests," not in l]
for name in dict.fromkeys(failed):
    print("  failed: " + name)
bench = load("bench.json")
torch = load("torch.json") or {}
torch_rows = {r["name"]: r for r in torch.get("rows", [])}
print("\nBenchmarks (time per call; achieved rate, the card's peak, % of peak; torch for reference)")
errors = {}
if bench is None:
    print("  no bench.json")
else:
    for b in bench.get("benchmarks", []):
        name = b["name"].split("/manual_time")[0].split("/min_time")[0]
        if b.get("error_occurred"):
            errors.setdefault(b.get("error_message", "?"), []).append(name)
            continue
        unit = "TFLOPS" if "TFLOPS" in b else "GBps" if "GBps" in b else "GFLOPS" if "GFLOPS" in b else None
        rate = f"{b[unit]:9.1f} {unit:6s}" if unit else " " * 16
        peak = f"{b['peak_' + unit]:6.0f}" if unit and ("peak_" + unit) in b else "     -"
        pct = f"{b['pct_peak']:5.1f}%" if "pct_peak" in b else "     -"
        ref = ""
        parts = name.split("/")
        if parts[0] == "CudaGemm" and len(parts) == 3:
            t = torch_rows.get(f"torch.matmul/{parts[1]}/{parts[2]}")
            if t:
                ref = f"  torch {t['TFLOPS']:.1f}"
        if parts[0] == "CudaOptimStep" and len(parts) == 4:
            t = torch_rows.get(f"torch.optim/{parts[1]}/fp32")
            if t:  # torch's fp32 step (AMP's too: its parameters and gradients are fp32)
                ref = (f"  torch {t['ms'] * 1000:8.1f} us"
                       f"  mlai/torch {b['real_time'] / (t['ms'] * 1000):.2f}")
        if parts[0] == "CudaConv" and len(parts) == 4:
            ref = f"  host {b.get('host_us', 0):5.1f} us"
            t = torch_rows.get("torch.conv/" + "/".join(parts[1:]))
            if t:  # mlai's time per call over torch's: below 1 is faster
                ref += (f"  torch {t['ms'] * 1000:8.1f} us host {t['host_us']:5.1f} us"
                        f"  mlai/torch {b['real_time'] / (t['ms'] * 1000):.2f}")
        print(f"  {name:42s} {b['real_time']:10.3f} {b['time_unit']:2s} {rate} {peak} {pct}{ref}")
    for msg, names in errors.items():
        if "validation" in msg:
            bad = True
        print(f"  {len(names)} benchmark(s): {msg}" + (f": {', '.join(names)}" if len(names) <= 4 else ""))
if torch.get("available"):
    print(f"\nPyTorch {torch['torch']} (CUDA {torch['cuda']}) on {torch['device']}")
    for r in torch["rows"]:
        if r["name"].startswith("torch.conv/"):
            continue  # beside mlai's CudaConv rows above
        rate = (f"{r['TFLOPS']:7.1f} TFLOPS" if "TFLOPS" in r else f"{r['GBps']:7.0f} GBps"
                if "GBps" in r else f"{r['Mparams_per_s']:7.0f} Mparams/s")
        print(f"  {r['name']:42s} {r['ms']:9.3f} ms {rate}")
else:
    print("\nPyTorch reference: " + torch.get("reason", "not run"))
log = os.path.join(d, "bench.log")
par = [l.rstrip() for l in open(log, errors="replace")] if os.path.exists(log) else []
par = [l for l in par if l.startswith(("logits", "weights", "running", "parity", "after", "mlai_parity",
                                        "f64 "))
       or "max rel" in l]
tr = [l for l in (open(log, errors="replace").read().splitlines() if os.path.exists(log) else [])
      if l.startswith(("==== mlai_train", "epoch:", "test loss:", "mlai_train:"))]
print("\nmlai_train on the GPU (resnet18_cifar; Fashion-MNIST when carried, else synthetic):")
print("\n".join("  " + l for l in tr) if tr else "  not run")
acc, prec = {}, None
for l in tr:
    if l.startswith("==== mlai_train"):
        prec = l.split("--precision ")[1].split()[0] if "--precision " in l else None
    elif l.startswith("test loss:") and prec:
        acc[prec] = float(l.split("test accuracy:")[1].split()[0])
if "16" in acc and "32" in acc:
    gap = 100 * (acc["16"] - acc["32"])
    print(f"  test accuracy fp16 {acc['16']:.4f} vs fp32 {acc['32']:.4f}: {gap:+.2f} points "
          f"({'within' if abs(gap) <= 0.5 else 'OUTSIDE'} issue #5's 0.5)")
print("\nParity with PyTorch on the GPU (mlai_parity --device cuda):")
print("\n".join("  " + l for l in par) if par else "  not run")
if any(l.startswith("parity: FAIL") for l in par):
    bad = True
step = os.path.join(d, "step.jsonl")
if os.path.exists(step):
    import subprocess
    report = os.path.join(os.getcwd(), "bench", "step_report.py")
    print("\nTraining steps, mlai vs PyTorch (bench/step_report.py):")
    r = subprocess.run([sys.executable, report, step], capture_output=True, text=True)
    print(r.stdout + r.stderr)
else:
    print("\nTraining steps: no step.jsonl")
# Where a step's time goes (mlai_bench_step --trace; all of them in extra.tar.gz): the top rows
# for the models issue #5 is short on, and fp32 beside fp16.
tdir = os.path.join(d, "extra", "traces")
for name in ("resnet18-16", "resnet18-32", "resnet18-16-graphs", "resnet18_cifar-16"):
    f = os.path.join(tdir, f"trace-{name}.txt")
    if os.path.exists(f):
        print(f"\nTrace {name} (top rows of extra/traces/trace-{name}.txt):")
        print("".join(open(f).readlines()[:16]).rstrip())
print("\nRESULT: " + ("FAILED (a test binary failed or timed out, or a benchmark's check failed)" if bad else "PASSED"))
PY
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  summary) summarize "${2:?usage: gpu-check.sh summary DIR}" ;;
  *) echo "usage: bash bench/gpu-check.sh prepare|run|summary DIR   (see the top of this file)" >&2; exit 2 ;;
esac
