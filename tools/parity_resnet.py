#!/usr/bin/env python3
# Golden outputs for the PyTorch parity check of a ResNet, MobileNetV2 or ViT (--arch, default
# resnet18_cifar; run bin/mlai_parity on them):
# random torchvision weights (an mlai weights file), a random NHWC batch with labels, and in
# float64 the eval-mode logits, the train-mode logits and every tensor after one SGD step.
# A ViT's parameters that torchvision initializes to constants (the zero head, class token and
# biases, the layer norms' ones and zeros) get N(0, 0.02) added first: with torchvision's zero
# head the logits are 0 and one step moves nothing but the head.
# The same step in PyTorch's float32 gives the yardstick for mlai's float32 error: stored as
# attributes torch_fp32_* (max relative error against the float64 goldens, same measure).
import argparse
import copy
import os
import subprocess
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_interop as ti  # noqa: E402


def step(m, x, y, lr):
    """Eval logits, train logits and loss, then one plain SGD step of m in place."""
    m.eval()
    with torch.no_grad():
        logits_eval = m(x)
    m.train()
    logits_train = m(x)
    loss = F.cross_entropy(logits_train, y)
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.0)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return logits_eval, logits_train, loss


def rel(a, b):
    """max |a - b| / max |b|: mlai_parity's measure."""
    scale = float(b.abs().max())
    err = float((a.double() - b).abs().max())
    return err / scale if scale > 0 else err


def main():
    p = argparse.ArgumentParser(description="PyTorch goldens for mlai_parity")
    p.add_argument("--dir", default="parity", help="where weights.h5 and golden.h5 go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", default="resnet18_cifar", choices=ti.ARCHS)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--image-size", type=int, default=32, help="the batch's (square) image side "
                   "(a ViT's: a multiple of its patch)")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--run", metavar="MLAI_PARITY", help="then run this mlai_parity binary on them")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="with --run: mlai_parity's --dtype")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    torch.manual_seed(a.seed)
    model = ti.make_model(a.arch, 10, a.in_channels, image_size=a.image_size)
    for mod in model.modules():  # mlai_parity builds its model without dropout (mobilenet_v2,
        if isinstance(mod, torch.nn.Dropout):  # the ViTs)
            mod.p = 0.0
        if isinstance(mod, torch.nn.MultiheadAttention):
            mod.dropout = 0.0
    if a.arch in ti.VIT:
        with torch.no_grad():
            for _, t in model.named_parameters():
                if t.numel() == 1 or bool((t == t.flatten()[0]).all()):
                    t.add_(0.02 * torch.randn_like(t))
    weights, golden = os.path.join(a.dir, "weights.h5"), os.path.join(a.dir, "golden.h5")
    ti.write_weights(model, weights)  # float32: what both sides start from

    x = torch.randn(a.batch, a.in_channels, a.image_size, a.image_size)
    y = torch.randint(0, 10, (a.batch,))
    m32 = copy.deepcopy(model)
    m = model.double()  # the reference in float64: the error measured is mlai's float32 error
    logits_eval, logits_train, loss = step(m, x.double(), y, a.lr)
    e32, t32, _ = step(m32, x, y, a.lr)  # PyTorch's own float32 error, for comparison

    ref = {k: v.detach().double() for k, v in m.state_dict().items() if v.is_floating_point()}
    got = {k: v.detach().double() for k, v in m32.state_dict().items() if v.is_floating_point()}
    params = {n for n, _ in m.named_parameters()}
    yard = {
        "logits_eval": rel(e32, logits_eval),
        "logits_train": rel(t32.detach(), logits_train.detach()),
        "params": max(rel(got[k], ref[k]) for k in ref if k in params),
    }
    if any(k not in params for k in ref):  # (a ViT has no buffers)
        yard["buffers"] = max(rel(got[k], ref[k]) for k in ref if k not in params)
    print("PyTorch float32 against float64: " +
          "  ".join(f"{k} {v:.3e}" for k, v in yard.items()), flush=True)
    with h5py.File(golden, "w") as f:
        f.attrs["lr"] = a.lr
        f.attrs["arch"] = a.arch
        for k, v in yard.items():
            f.attrs["torch_fp32_" + k] = v
        f.attrs["loss"] = float(loss.detach())
        f.create_dataset("images", data=x.permute(0, 2, 3, 1).contiguous().numpy())  # NHWC
        f.create_dataset("labels", data=y.numpy().astype(np.int64))
        f.create_dataset("logits_eval", data=logits_eval.numpy())
        f.create_dataset("logits_train", data=logits_train.detach().numpy())
        for name, t in m.state_dict().items():
            v = t.detach()
            if v.dim() == 4:
                v = v.permute(0, 2, 3, 1)
            v = v.contiguous().numpy()
            f.create_dataset("after/" + name, data=v if v.dtype == np.int64 else v.astype(np.float64))
    print(f"wrote {weights} and {golden} (loss {float(loss.detach()):.6f})", flush=True)
    if a.run:
        return subprocess.call([a.run, "--weights", weights, "--golden", golden,
                                "--dtype", a.dtype])
    return 0


if __name__ == "__main__":
    sys.exit(main())
