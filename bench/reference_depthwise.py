#!/usr/bin/env python3
"""PyTorch's CPU depthwise 3x3 convolutions beside mlai_bench_kernels' CpuConvDepthwise rows.

The same shapes (mobilenet_v2_cifar's depthwise layers at batch 32: NxHxWxC, padding 1, groups =
C), channels_last float32 tensors, PyTorch's own threads set to --threads (mlai's pool: the
machine's cores, or MLAI_NUM_THREADS). Prints, per shape, the forward and the backward (input and
filter gradients together, as autograd runs them) in ms, the median of --reps calls.

    python3 bench/reference_depthwise.py --threads 2
    build-cpu/bench/mlai_bench_kernels --benchmark_filter=CpuConvDepthwise/.*/depthwise
"""
import argparse
import statistics
import time

SHAPES = [(32, 144, 1), (32, 144, 2), (16, 192, 1), (8, 384, 1), (4, 960, 1)]  # hw, c, stride


def median_ms(fn, reps):
    fn()
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("reference_depthwise: torch is not installed; nothing to compare")
        return 0
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} threads, batch {a.batch}")
    for hw, c, s in SHAPES:
        x = torch.randn(a.batch, c, hw, hw).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        w = torch.randn(c, 1, 3, 3, requires_grad=True)
        dy = torch.randn_like(F.conv2d(x, w, stride=s, padding=1, groups=c))

        def fwd():
            with torch.no_grad():
                F.conv2d(x, w, stride=s, padding=1, groups=c)

        def fwd_bwd():
            y = F.conv2d(x, w, stride=s, padding=1, groups=c)
            torch.autograd.grad(y, (x, w), dy)

        f = median_ms(fwd, a.reps)
        b = median_ms(fwd_bwd, a.reps) - median_ms(lambda: F.conv2d(x, w, stride=s, padding=1,
                                                                    groups=c), a.reps)
        name = f"{a.batch}x{hw}x{hw}x{c}" + ("-s2" if s == 2 else "")
        print(f"{name:18s} fwd {f:7.3f} ms   bwd (data + filter) {b:7.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
