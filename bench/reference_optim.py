#!/usr/bin/env python3
"""PyTorch's side of mlai_bench_kernels' {Cpu,Cuda}OptimStep rows: one optimizer step over
resnet18_cifar's parameters (torchvision's resnet18 with a 3x3 stem, 11.2 M values), with
torch's fused SGD (momentum, weight decay) and AdamW, and timm's Lars and Lamb (foreach) where
timm is installed. Prints the median ms per step and Mparams/s.

  python3 bench/reference_optim.py --device cpu --threads 2
  python3 bench/reference_optim.py --device cuda        (bench/gpu-check.sh imports it)
"""
import argparse
import time


def optimizer_rows(torch, dev, reps=20):
    """[(name, median ms, Mparams/s)] for each optimizer available, on device `dev`."""
    import torchvision
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    ps = [torch.nn.Parameter(p.detach().to(dev).uniform_(-0.1, 0.1)) for p in m.parameters()]
    for p in ps:
        p.grad = torch.empty_like(p).uniform_(-0.01, 0.01)
    opts = {"sgd": lambda: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-4,
                                           fused=True),
            "adam": lambda: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, fused=True)}
    try:
        from timm.optim.lamb import Lamb
        from timm.optim.lars import Lars
        opts["lars"] = lambda: Lars(ps, lr=1.0, momentum=0.9, weight_decay=5e-4)
        opts["lamb"] = lambda: Lamb(ps, max_grad_norm=None)  # mlai's has no built-in clipping
    except ImportError as e:
        print(f"timm not available ({e}): no LARS/LAMB reference")
    cuda = str(dev).startswith("cuda")
    numel = sum(p.numel() for p in ps)
    rows = []
    for name, make in opts.items():
        opt = make()
        for _ in range(3):
            opt.step()
        times = []
        for _ in range(reps):
            if cuda:
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                opt.step()
                e.record()
                e.synchronize()
                times.append(s.elapsed_time(e))
            else:
                t0 = time.perf_counter()
                opt.step()
                times.append((time.perf_counter() - t0) * 1e3)
        ms = sorted(times)[len(times) // 2]
        rows.append((f"torch.optim/{name}/fp32", ms, numel / ms / 1e3))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's)")
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__} on {a.device}")
    for name, ms, rate in optimizer_rows(torch, a.device, a.reps):
        print(f"{name:28s} {ms:9.3f} ms  {rate:8.1f} Mparams/s")


if __name__ == "__main__":
    main()
