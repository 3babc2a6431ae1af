#!/usr/bin/env python3
"""timm's Lars and Lamb on the problem test/nn/optim_timm_test.cpp writes (DIR/case.json):
named float32 parameters, a gradient per parameter per step, the rate per step and the
optimizer's settings. Writes the parameters after the last step to DIR/result.json.
Exits 77 (skip) when torch or timm is missing."""
import json
import sys

try:
    import torch
    from timm.optim.lamb import Lamb
    from timm.optim.lars import Lars
except ImportError:
    sys.exit(77)


def main(d):
    with open(f"{d}/case.json") as f:
        case = json.load(f)
    params = {n: torch.tensor(v["data"], dtype=torch.float32).reshape(v["shape"])
              for n, v in case["params"].items()}
    names = list(params)
    wd = case["weight_decay"]
    if case["no_bias_decay"]:  # timm's param_groups_weight_decay: no decay for 1-D tensors
        groups = [{"params": [params[n] for n in names if params[n].dim() > 1]},
                  {"params": [params[n] for n in names if params[n].dim() <= 1],
                   "weight_decay": 0.0}]
    else:
        groups = [{"params": [params[n] for n in names]}]
    if case["optimizer"] == "lars":
        opt = Lars(groups, lr=case["lr"][0], momentum=case["momentum"], weight_decay=wd,
                   nesterov=case["nesterov"], trust_coeff=case["trust_coefficient"],
                   eps=case["eps"], trust_clip=case["trust_clip"], foreach=False)
    else:
        opt = Lamb(groups, lr=case["lr"][0], betas=(case["beta1"], case["beta2"]),
                   eps=case["eps"], weight_decay=wd, max_grad_norm=None,
                   trust_clip=case["trust_clip"], foreach=False)
    for step, grads in enumerate(case["grads"]):
        for g in opt.param_groups:
            g["lr"] = case["lr"][step]
        for n in names:
            params[n].grad = torch.tensor(grads[n], dtype=torch.float32).reshape(params[n].shape)
        opt.step()
    with open(f"{d}/result.json", "w") as f:
        json.dump({n: params[n].flatten().tolist() for n in names}, f)


if __name__ == "__main__":
    main(sys.argv[1])
