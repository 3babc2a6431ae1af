"""torchvision's automatic augmentation, timed as a DataLoader worker runs it: one image at a
time on one CPU thread, on uint8 tensors (C x H x W) and on PIL images (the usual
`transforms.TrivialAugmentWide()` before `ToTensor()`). The side-by-side reference for
mlai_bench_kernels' CpuAutoAugment rows (the same 256 random images of 32 x 32 x 3 each call).

Usage: python3 bench/reference_auto_augment.py [--repeats 5] [--json FILE]
Prints one line per policy and input kind: images/s (the best of the repeats).
"""
import argparse
import json
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

POLICIES = {
    "ta_wide": lambda: T.TrivialAugmentWide(),
    "ra": lambda: T.RandAugment(num_ops=2, magnitude=9),
    "imagenet": lambda: T.AutoAugment(T.AutoAugmentPolicy.IMAGENET),
    "cifar10": lambda: T.AutoAugment(T.AutoAugmentPolicy.CIFAR10),
    "svhn": lambda: T.AutoAugment(T.AutoAugmentPolicy.SVHN),
    "augmix": lambda: T.AugMix(),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(7)
    arrays = rng.integers(0, 256, size=(args.batch, 32, 32, 3), dtype=np.uint8)
    tensors = [torch.from_numpy(a).permute(2, 0, 1).contiguous() for a in arrays]
    pils = [Image.fromarray(a) for a in arrays]
    results = {}
    for name, make in POLICIES.items():
        t = make()
        for kind, images in (("tensor", tensors), ("pil", pils)):
            for img in images[:16]:  # warm-up
                t(img)
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                for img in images:
                    t(img)
                best = min(best, time.perf_counter() - t0)
            rate = len(images) / best
            results[f"{name}/{kind}"] = rate
            print(f"torchvision {name:9s} {kind:6s} {rate:10.0f} images/s (one thread)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "images_per_s": results}, f, indent=1)


if __name__ == "__main__":
    main()
