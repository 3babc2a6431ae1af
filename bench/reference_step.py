#!/usr/bin/env python3
"""PyTorch reference for mlai_bench_step: images/s, step time and peak memory of training steps.

The models, inputs, optimizers and step are those of bench/step_bench.cpp: mlp (Flatten,
784->128, ReLU, 128->256, ReLU, 256->10) on [B,1,28,28]; torchvision resnet18(num_classes=10) on
[B,3,32,32] (the issue fixes 32x32 inputs for both ResNets); resnet18_cifar, the same with a 3x3/1
conv1 and no max pool, on [B,3,32,32]. One fixed synthetic batch (normal images, labels
(i*7+3)%10) already on the device; a step is forward, mean cross-entropy, backward, optimizer
step, zero_grad(set_to_none=True). SGD lr 0.1 momentum 0.9 weight decay 5e-4 for the CNNs,
Adam lr 1e-3 for mlp and vit_cifar (--optimizer overrides).

Modes (--modes; the default is every mode that applies to the device and model):
  eager        fp32 with TF32 off (torch.backends.cuda.matmul.allow_tf32 and
               torch.backends.cudnn.allow_tf32 False), so fp32 means fp32, as in mlai --precision 32
  eager-tf32   fp32 tensors with both TF32 flags on (convolutions and matmuls in TF32)
  amp          torch.autocast float16 + torch.amp.GradScaler: PyTorch eager AMP, the baseline
               mlai --precision 16 is measured against
  amp-cl       amp with the model and input in channels_last (ResNets only by default)
  bf16         torch.autocast bfloat16, no scaler
  compile-amp  torch.compile(model) + amp; the first step's time (mostly compiling) is recorded as
               compile_s, and a run whose first step took over --compile-timeout is given up
The amp modes keep PyTorch's default TF32 flags (matmul off, cuDNN on); cudnn.benchmark is on for
every mode. On the CPU the float16 modes (amp, amp-cl, compile-amp) are not run (CPU autocast in
float16 is neither what users run nor comparable to mlai's kernels): they are recorded as
{"skipped": ...}; bf16 runs with CPU autocast, and eager-tf32 is the same as eager there.

    python3 bench/reference_step.py --out step.jsonl
    python3 bench/reference_step.py --arch resnet18_cifar --batch 128,256 --modes amp,amp-cl
    python3 bench/step_report.py step.jsonl

Each run appends one JSON object to --out (JSONL): impl "torch", arch, batch, mode, precision
("32" for eager and eager-tf32, "16" for the float16 modes, "bf16"), optimizer, device,
device_name, steps, warmup, seconds, images_per_sec (batch*steps/seconds), step_ms, peak_mem_mb
(torch.cuda.max_memory_allocated() / 2**20, reset before the warmup; null on the CPU),
loss_first (first warmup step), loss_last (last timed step), learned (loss_last < loss_first),
channels_last, tf32_matmul, tf32_cudnn, compile_s (compile-amp only), loss_scale (float16 modes),
torch, torchvision, cudnn, date (UTC ISO); a run that failed has "error" instead of the timings,
one not run has "skipped". stdout gets one readable line per run. Exit status 0 whatever the runs
did, 2 for bad arguments; without torch installed the script says so and exits 0.
"""
import argparse
import datetime
import gc
import json
import sys
import time

ARCHS = ("mlp", "resnet18_cifar", "resnet18", "resnet34_cifar", "resnet34", "resnet50_cifar",
         "resnet50", "resnet20", "resnet56", "resnext50_32x4d_cifar", "mobilenet_v2_cifar",
         "mobilenet_v2", "vit_cifar")
MODES = ("eager", "eager-tf32", "amp", "amp-cl", "bf16", "compile-amp")
FP16_MODES = ("amp", "amp-cl", "compile-amp")
DEFAULT_BATCH = ("mlp=64,resnet18_cifar=256,resnet18=256,resnet34_cifar=256,resnet34=256,"
                 "resnet50_cifar=128,resnet50=256,resnet20=128,resnet56=128,"
                 "resnext50_32x4d_cifar=128,mobilenet_v2_cifar=128,mobilenet_v2=256,"
                 "vit_cifar=128")


def parse_batches(spec, archs):
    """{arch: [B, ...]} from "arch=B,..." entries and bare numbers (which apply to every arch)."""
    per_arch, common = {}, []
    for item in filter(None, spec.split(",")):
        name, eq, value = item.rpartition("=")
        if not value.isdigit() or int(value) <= 0 or (eq and name not in ARCHS):
            raise ValueError(f"--batch {spec}: expected arch=B,... or positive numbers "
                             f"(arch one of {', '.join(ARCHS)})")
        if eq:
            per_arch.setdefault(name, []).append(int(value))
        else:
            common.append(int(value))
    default = dict(item.split("=") for item in DEFAULT_BATCH.split(","))
    return {a: per_arch.get(a) or common or [int(default[a])] for a in archs}


def build_model(torch, arch):
    nn = torch.nn
    if arch == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 256),
                              nn.ReLU(), nn.Linear(256, 10))
        return model, (1, 28, 28)
    import torchvision  # only the ResNets need it; an ImportError becomes the run's error
    if arch.startswith("mobilenet"):  # as tools/torch_interop.py; no dropout, as mlai's bench
        import os
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
        import torch_interop
        model = torch_interop.make_model(arch, 10)
        model.classifier[0].p = 0.0
        return model, (3, 32, 32)
    if arch == "vit_cifar":  # torchvision's VisionTransformer at 32x32, as tools/torch_interop.py
        import os
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
        import torch_interop
        return torch_interop.make_model(arch, 10, image_size=32), (3, 32, 32)
    if arch in ("resnet20", "resnet56"):  # He et al.'s CIFAR ResNets, as tools/torch_interop.py
        import os
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
        import torch_interop
        return torch_interop.make_model(arch, 10), (3, 32, 32)
    model = getattr(torchvision.models, arch.removesuffix("_cifar"))(num_classes=10)
    if arch.endswith("_cifar"):
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        # torchvision initialises its convs kaiming-normal fan_out, as mlai does; a replaced one too
        torch.nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    return model, (3, 32, 32)


def precision_of(mode):
    return "16" if mode in FP16_MODES else "bf16" if mode == "bf16" else "32"


def run(torch, arch, batch, mode, args):
    """One timed run: the fields of its JSON line (timings, losses, memory)."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        tf32 = {"eager": (False, False), "eager-tf32": (True, True)}.get(mode, (False, True))
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(args.seed)
    model, shape = build_model(torch, arch)
    channels_last = mode == "amp-cl"
    model = model.to(device).train()
    images = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(7)).to(device)
    labels = torch.tensor([(i * 7 + 3) % 10 for i in range(batch)], device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if args.freeze != "none":  # Lightning's BaseFinetuning.freeze(backbone, train_bn)
        head = "5." if arch == "mlp" else "classifier.1." if arch.startswith("mobilenet") else "fc."
        norms = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
        for name, p in model.named_parameters():
            bn = name.rsplit(".", 1)[0] in norms
            if not name.startswith(head) and (not bn or args.freeze == "backbone-bn"):
                p.requires_grad_(False)
        if args.freeze == "backbone-bn":
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.track_running_stats = False
    optimizer = args.optimizer or ("adam" if arch == "mlp" or arch.startswith("vit") else "sgd")
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if mode == "compile-amp" else model
    dtype = {"16": torch.float16, "bf16": torch.bfloat16}.get(precision_of(mode))
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(forward(images), labels)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    result = {"optimizer": optimizer, "channels_last": channels_last, "freeze": args.freeze}
    if cuda:
        result.update(tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                      tf32_cudnn=torch.backends.cudnn.allow_tf32)
    t0 = time.perf_counter()
    first = step()  # compiles under compile-amp, picks cuDNN algorithms under benchmark
    sync()
    if mode == "compile-amp":
        result["compile_s"] = time.perf_counter() - t0
        if result["compile_s"] > args.compile_timeout:
            result["error"] = (f"first step (compiling) took {result['compile_s']:.0f} s, over "
                               f"--compile-timeout {args.compile_timeout:.0f} s")
            return result
    for _ in range(args.warmup - 1):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        last = step()  # no host sync inside the timed loop
    sync()
    seconds = time.perf_counter() - t0
    loss_first, loss_last = first.item(), last.item()
    result.update(
        steps=args.steps, warmup=args.warmup, seconds=seconds,
        images_per_sec=batch * args.steps / seconds, step_ms=seconds / args.steps * 1e3,
        peak_mem_mb=torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
        loss_first=loss_first, loss_last=loss_last,
        learned=loss_last == loss_last and loss_last < loss_first)  # x == x: not NaN
    if scaler is not None:
        result["loss_scale"] = scaler.get_scale()
    return result


def environment(torch, device):
    env = {"device": device, "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    try:
        import torchvision
        env["torchvision"] = torchvision.__version__
    except ImportError:
        env["torchvision"] = None
    dev = torch.device(device)
    env["device_name"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return env


def default_modes(arch, device_type):
    modes = [m for m in MODES if device_type == "cuda" or m in ("eager", "bf16")]
    return [m for m in modes if not (arch == "mlp" and m == "amp-cl")]


def free_memory(torch):
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()  # drop compiled graphs and the models they hold


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="mlp,resnet18_cifar,resnet18",
                   help="comma list (default %(default)s) of " + ", ".join(ARCHS))
    p.add_argument("--batch", default=DEFAULT_BATCH, help="arch=B,... or B,... for every arch")
    p.add_argument("--modes", default=None, help="comma list of " + ",".join(MODES)
                   + " (default: those that apply to the device and model)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default=None,
                   help="default: adam for mlp and vit_cifar, sgd for the CNNs")
    p.add_argument("--steps", type=int, default=50, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (at least 1)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if any)")
    p.add_argument("--out", default=None, help="append one JSON line per run to this file")
    p.add_argument("--time-budget", type=float, default=300,
                   help="skip the remaining runs after this many seconds (0: none)")
    p.add_argument("--compile-timeout", type=float, default=240,
                   help="give up a compile-amp run whose first step took longer (seconds)")
    p.add_argument("--seed", type=int, default=1, help="model initialisation seed")
    p.add_argument("--freeze", choices=("none", "backbone", "backbone-bn"), default="none",
                   help="fine-tuning: the backbone frozen (requires_grad False; batch norm too "
                        "with backbone-bn, and its running statistics), as mlai_bench_step --freeze")
    args = p.parse_args()
    archs = [a for a in args.arch.split(",") if a]
    modes = args.modes and [m for m in args.modes.split(",") if m]
    bad = [a for a in archs if a not in ARCHS] + [m for m in modes or [] if m not in MODES]
    if bad:
        p.error(f"unknown arch or mode {', '.join(bad)}: archs {', '.join(ARCHS)}; "
                f"modes {', '.join(MODES)}")
    if args.steps < 1 or args.warmup < 1:
        p.error("--steps and --warmup must be at least 1")
    try:
        batches = parse_batches(args.batch, archs)
    except ValueError as e:
        p.error(str(e))
    try:
        import torch
    except ImportError:
        print("reference_step.py: PyTorch is not installed here; nothing to compare against")
        return 0
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        env = environment(torch, args.device)
    except (RuntimeError, AssertionError) as e:
        p.error(f"--device {args.device}: {e}")
    device_type = torch.device(args.device).type
    out = open(args.out, "a") if args.out else None
    start = time.perf_counter()
    print(f"{'arch':<16} {'batch':>6} {'mode':<12} {'images/s':>10} {'step ms':>9} "
          f"{'peak MiB':>9} {'loss':>10}  device")
    for arch in archs:
        for batch in batches[arch]:
            for mode in modes or default_modes(arch, device_type):
                head = {"impl": "torch", "arch": arch, "batch": batch, "mode": mode,
                        "precision": precision_of(mode)}
                label = f"{arch:<16} {batch:>6} {mode:<12}"
                if args.time_budget > 0 and time.perf_counter() - start > args.time_budget:
                    j = dict(head, skipped="time budget")
                elif device_type != "cuda" and mode in FP16_MODES:
                    j = dict(head, skipped="float16 autocast is measured on CUDA only")
                else:
                    try:
                        j = dict(head, **run(torch, arch, batch, mode, args))
                    except Exception as e:  # OOM, a compile failure, ...: record it, go on
                        j = dict(head, error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                                 if str(e) else type(e).__name__)
                    free_memory(torch)
                j.update(env, date=datetime.datetime.now(datetime.timezone.utc)
                         .strftime("%Y-%m-%dT%H:%M:%SZ"))
                if "skipped" in j:
                    print(f"{label}  skipped ({j['skipped']})")
                elif "error" in j:
                    print(f"{label}  error: {j['error']}")
                else:
                    mem = "-" if j["peak_mem_mb"] is None else f"{j['peak_mem_mb']:.0f}"
                    note = "" if j["learned"] else "  (loss did not fall)"
                    print(f"{label} {j['images_per_sec']:>10.0f} {j['step_ms']:>9.3f} {mem:>9} "
                          f"{j['loss_first']:4.2f}>{j['loss_last']:4.2f}  {j['device_name']}{note}")
                sys.stdout.flush()
                if out:
                    out.write(json.dumps(j) + "\n")
                    out.flush()
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
