#!/usr/bin/env python3
"""PyTorch reference for mlai_bench_train: training-step images/s of the same MLP.

The model (Flatten, 784->128, ReLU, 128->256, ReLU, 256->10), the optimizers (Adam lr 1e-3;
SGD lr 0.01, momentum 0.9), the batch sizes (64, 256) and the step (forward, cross-entropy,
backward, optimizer step, zero_grad) on synthetic data already in memory are those of
bench/train_bench.cpp, on the CPU with --threads intra-op threads (default: OPENBLAS_NUM_THREADS,
else os.cpu_count(), which is what OpenBLAS uses in mlai). Each configuration is checked to learn
(20 steps on a fixed batch halve the loss) before it is timed.

    python3 bench/reference_mlp.py --threads 2 --json torch.json
    build/bench/mlai_bench_train --benchmark_filter=Cpu --benchmark_out=mlai.json \
        --benchmark_out_format=json
    python3 bench/reference_mlp.py --compare --mlai-json mlai.json --torch-json torch.json

--compare prints mlai and PyTorch side by side (the median over the files given for each side:
pass several runs of each). Without torch installed the script says so and exits 0.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

OPTIMIZERS = ("adam", "sgd")


def default_threads():
    env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return int(env) if env else os.cpu_count()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_step(torch, optimizer, batch, lr, seed):
    """A model, its optimizer, one fixed batch, and a function running one step."""
    nn = torch.nn
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 256),
                          nn.ReLU(), nn.Linear(256, 10))
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    images = torch.rand(batch, 1, 28, 28)
    labels = torch.randint(0, 10, (batch,))
    loss_fn = nn.CrossEntropyLoss()
    clock = time.perf_counter
    phases = [0.0, 0.0, 0.0]  # forward, backward, optimizer step + zero_grad

    def step():
        t0 = clock()
        loss = loss_fn(model(images), labels)
        t1 = clock()
        loss.backward()
        t2 = clock()
        opt.step()
        opt.zero_grad()  # PyTorch's default: set_to_none=True
        t3 = clock()
        phases[0] += t1 - t0
        phases[1] += t2 - t1
        phases[2] += t3 - t2
        return loss

    return step, phases


def default_lr(optimizer):
    return 0.01 if optimizer == "sgd" else 1e-3


def validate(torch, optimizer):
    """'' when 20 steps on a fixed batch of 32 halve the loss (as train_bench.cpp checks, with
    SGD at 10x its timed learning rate), else a message."""
    lr = default_lr(optimizer) * (10 if optimizer == "sgd" else 1)
    step, _ = make_step(torch, optimizer, 32, lr, seed=7)
    losses = [step().item() for _ in range(20)]
    if not losses[-1] < 0.5 * losses[0]:
        return f"loss {losses[0]:.4f} -> {losses[-1]:.4f} after 20 steps (expected < half)"
    return ""


def time_config(torch, optimizer, batch, warmup, min_time):
    step, phases = make_step(torch, optimizer, batch, default_lr(optimizer), seed=1)
    for _ in range(warmup):
        step()
    phases[:] = [0.0, 0.0, 0.0]
    steps, start = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and steps >= 10:
            break
    fwd, bwd, opt = (1e3 * s / steps for s in phases)
    return {"optimizer": optimizer, "batch": batch, "steps": steps,
            "ms_per_step": 1e3 * elapsed / steps, "images_per_sec": batch * steps / elapsed,
            "fwd_ms": fwd, "bwd_ms": bwd, "opt_ms": opt}


def run(args):
    try:
        import torch
    except ImportError as e:
        print(f"reference_mlp.py: PyTorch is not importable ({e}); nothing to compare against. "
              "Install it with 'pip install torch' to run this reference.")
        return 0
    torch.set_num_threads(args.threads)
    results = []
    print(f"PyTorch {torch.__version__} on {cpu_model()}: {torch.get_num_threads()} threads, "
          f"warm-up {args.warmup} steps, >= {args.min_time} s per configuration")
    print(f"{'optimizer':<10}{'batch':>6}{'ms/step':>10}{'images/s':>12}"
          f"{'fwd ms':>9}{'bwd ms':>9}{'opt ms':>9}")
    failed = False
    for optimizer in args.optimizers:
        msg = validate(torch, optimizer)
        if msg:
            print(f"{optimizer:<10} VALIDATION FAILED: {msg}")
            failed = True
            continue
        for batch in args.batch_sizes:
            r = time_config(torch, optimizer, batch, args.warmup, args.min_time)
            results.append(r)
            print(f"{optimizer:<10}{batch:>6}{r['ms_per_step']:>10.3f}{r['images_per_sec']:>12.0f}"
                  f"{r['fwd_ms']:>9.3f}{r['bwd_ms']:>9.3f}{r['opt_ms']:>9.3f}")
    if args.json:
        doc = {"framework": "pytorch", "torch_version": torch.__version__,
               "threads": torch.get_num_threads(), "cpu": cpu_model(),
               "cpu_count": os.cpu_count(),
               "blas": "mkl" if torch.backends.mkl.is_available() else "other",
               "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 1 if failed else 0


def load_mlai(paths):
    """{(optimizer, batch): [images/s per file]} from Google Benchmark JSON files."""
    out = {}
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        for b in doc.get("benchmarks", []):
            name = b.get("name", "")
            if not name.startswith("CpuTrainStep/") or b.get("run_type") == "aggregate":
                continue
            if "images_per_sec" not in b:  # skipped (validation failed)
                continue
            _, _, optimizer, batch = name.split("/")[:4]
            key = (optimizer, int(batch.split(":")[1]))
            out.setdefault(key, []).append(b["images_per_sec"])
    return out


def load_torch(paths):
    out = {}
    for path in paths:
        with open(path) as f:
            for r in json.load(f)["results"]:
                out.setdefault((r["optimizer"], r["batch"]), []).append(r["images_per_sec"])
    return out


def fmt_rate(v):
    return f"{v:,.0f}" if v else "-"


def compare(args):
    mlai, ref = load_mlai(args.mlai_json), load_torch(args.torch_json or [])
    print(f"median images/s over {len(args.mlai_json)} mlai and {len(args.torch_json or [])} "
          f"PyTorch run(s)")
    print("| optimizer | batch | mlai images/s | PyTorch images/s | mlai / PyTorch |")
    print("|---|---:|---:|---:|---:|")
    for key in sorted(set(mlai) | set(ref)):
        m = statistics.median(mlai[key]) if key in mlai else None
        t = statistics.median(ref[key]) if key in ref else None
        ratio = f"{m / t:.2f}" if m and t else "-"
        print(f"| {key[0]} | {key[1]} | {fmt_rate(m)} | {fmt_rate(t)} | {ratio} |")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=default_threads(),
                   help="torch.set_num_threads (default: OPENBLAS_NUM_THREADS or cpu count)")
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")],
                   default=[64, 256])
    p.add_argument("--optimizers", type=lambda s: s.split(","), default=list(OPTIMIZERS))
    p.add_argument("--warmup", type=int, default=20, help="untimed steps per configuration")
    p.add_argument("--min-time", type=float, default=1.0, help="timed seconds per configuration")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--compare", action="store_true",
                   help="print --mlai-json and --torch-json side by side instead of timing")
    p.add_argument("--mlai-json", nargs="+", default=[], help="mlai_bench_train --benchmark_out")
    p.add_argument("--torch-json", nargs="+", help="files written by --json")
    args = p.parse_args()
    if args.compare:
        if not args.mlai_json:
            p.error("--compare needs --mlai-json")
        return compare(args)
    if any(o not in OPTIMIZERS for o in args.optimizers):
        p.error(f"--optimizers: expected a comma-separated subset of {','.join(OPTIMIZERS)}")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
