"""What torchvision's automatic-augmentation operations make of random uint8 images.

Usage: python3 test/kernels/torchvision_augment_reference.py OUTDIR

For images of 1 and 3 channels and several sizes (even, odd, not square), every operation of
TrivialAugmentWide, RandAugment, AutoAugment and AugMix is applied with torchvision's own
autoaugment._apply_op (no fill: what the transforms use) at a spread of magnitudes, both
signs, with NEAREST interpolation (the first three's) and for the geometric operations also
BILINEAR (AugMix's). OUTDIR/manifest.tsv has one line per case:
    case  op  magnitude  channels  height  width  interpolation
with OUTDIR/case.in and OUTDIR/case.out the image before and after, raw uint8 H x W x C.
magnitude is written with repr(), so the C++ side reads the same double. Exit 77 when torch or
torchvision is not installed (the test skips).
"""
import os
import sys

try:
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.autoaugment import _apply_op
except ImportError:
    sys.exit(77)

OPS = {
    "ShearX": [0.0, 0.1, -0.2, 0.3, 0.55, -0.99],
    "ShearY": [0.05, -0.15, 0.3, -0.6],
    "TranslateX": [3.0, -7.0, 13.54, 32.0],
    "TranslateY": [1.0, -4.0, 9.97, -32.0],
    "Rotate": [9.0, -30.0, 45.0, 90.0, -135.0],
    "Brightness": [0.3, -0.5, 0.9, -0.99],
    "Color": [0.27, -0.9, 0.99],
    "Contrast": [0.6, -0.33, 0.99, -0.99],
    "Sharpness": [0.9, -0.45, 0.99],
    "Posterize": [8.0, 6.0, 4.0, 2.0, 1.0, 0.0],
    "Solarize": [255.0, 238.0, 127.5, 8.5, 0.0],
    "AutoContrast": [0.0],
    "Equalize": [0.0],
    "Invert": [0.0],
    "Identity": [0.0],
}
SHAPES = [(3, 32, 32), (1, 28, 28), (3, 27, 33), (3, 96, 96)]
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(20261206)
    case = 0
    with open(os.path.join(out, "manifest.tsv"), "w") as manifest:
        for c, h, w in SHAPES:
            for op, mags in OPS.items():
                modes = ["nearest", "bilinear"] if op in GEOMETRIC else ["nearest"]
                for mag, mode in [(m, i) for m in mags for i in modes]:
                    # Low-contrast images too, so AutoContrast and Equalize stretch something.
                    lo = int(torch.randint(0, 100, (1,), generator=g))
                    hi = lo + int(torch.randint(20, 156, (1,), generator=g))
                    img = torch.randint(lo, hi, (c, h, w), dtype=torch.uint8, generator=g)
                    interp = InterpolationMode.NEAREST if mode == "nearest" else InterpolationMode.BILINEAR
                    res = _apply_op(img, op, mag, interpolation=interp, fill=None)
                    name = f"{case:04d}"
                    with open(os.path.join(out, name + ".in"), "wb") as f:
                        f.write(img.permute(1, 2, 0).contiguous().numpy().tobytes())
                    with open(os.path.join(out, name + ".out"), "wb") as f:
                        f.write(res.permute(1, 2, 0).contiguous().numpy().tobytes())
                    manifest.write(f"{name}\t{op}\t{mag!r}\t{c}\t{h}\t{w}\t{mode}\n")
                    case += 1


if __name__ == "__main__":
    main()
