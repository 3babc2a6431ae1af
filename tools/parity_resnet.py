#!/usr/bin/env python3
# Golden outputs for the PyTorch parity check of resnet18_cifar (run bin/mlai_parity on them):
# random torchvision weights (an mlai weights file), a random NHWC batch with labels, and in
# float64 the eval-mode logits, the train-mode logits and every tensor after one SGD step.
import argparse
import os
import subprocess
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_interop as ti  # noqa: E402


def main():
    p = argparse.ArgumentParser(description="PyTorch goldens for mlai_parity")
    p.add_argument("--dir", default="parity", help="where weights.h5 and golden.h5 go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--run", metavar="MLAI_PARITY", help="then run this mlai_parity binary on them")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    torch.manual_seed(a.seed)
    model = ti.make_model("resnet18_cifar", 10)
    weights, golden = os.path.join(a.dir, "weights.h5"), os.path.join(a.dir, "golden.h5")
    ti.write_weights(model, weights)  # float32: what both sides start from

    x = torch.randn(a.batch, 3, 32, 32)
    y = torch.randint(0, 10, (a.batch,))
    m = model.double()  # the reference in float64: the error measured is mlai's float32 error
    xd = x.double()
    m.eval()
    with torch.no_grad():
        logits_eval = m(xd)
    m.train()
    logits_train = m(xd)
    loss = F.cross_entropy(logits_train, y)
    opt = torch.optim.SGD(m.parameters(), lr=a.lr, momentum=0.0)
    opt.zero_grad()
    loss.backward()
    opt.step()

    with h5py.File(golden, "w") as f:
        f.attrs["lr"] = a.lr
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
        return subprocess.call([a.run, "--weights", weights, "--golden", golden])
    return 0


if __name__ == "__main__":
    sys.exit(main())
