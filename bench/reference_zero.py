"""PyTorch's side of bench/zero_strategy.sh: DDP with a plain optimizer against DDP with
torch.distributed.optim.ZeroRedundancyOptimizer, on CPU ranks (gloo), on synthetic batches.
Prints, per strategy, rank 0's optimizer state (MB), the optimizer step (ms, the mean of the
timed steps: the update and, under ZeRO, the parameters' broadcast) and the whole step.

  torchrun --standalone --nproc_per_node 2 bench/reference_zero.py --arch resnet18_cifar
"""
import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torchvision
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel as DDP


def resnet18_cifar():
    # mlai's resnet18_cifar: a 3x3 stride-1 stem, no max pool, 10 classes, 1 input channel.
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


def state_mb(opt):
    if isinstance(opt, ZeroRedundancyOptimizer):
        opt = opt.optim  # this rank's own optimizer
    total = 0
    for st in opt.state.values():
        total += sum(t.numel() * t.element_size() for t in st.values()
                     if torch.is_tensor(t) and t.dim() > 0)
    return total / 1e6


def run(strategy, args):
    torch.manual_seed(0)
    model = DDP(resnet18_cifar().to(memory_format=torch.channels_last))
    cls, kw = {"adamw": (torch.optim.AdamW, {"lr": 1e-3}),
               "sgd": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9})}[args.optimizer]
    if strategy == "zero1":
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=cls, **kw)
    else:
        opt = cls(model.parameters(), **kw)
    x = torch.randn(args.batch, 1, 28, 28).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    step_ms, whole_ms = [], []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(model(x), y).backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        if i >= args.warmup:
            step_ms.append((t2 - t1) * 1e3)
            whole_ms.append((t2 - t0) * 1e3)
    if dist.get_rank() == 0:
        print(f"torch {strategy:<6} state {state_mb(opt):6.1f} MB on rank 0  "
              f"optimizer step {sum(step_ms) / len(step_ms):8.3f} ms  "
              f"whole step {sum(whole_ms) / len(whole_ms):8.1f} ms", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet18_cifar", choices=["resnet18_cifar"])
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo")
    for strategy in ("ddp", "zero1"):
        run(strategy, args)
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
