#!/usr/bin/env python3
# Moves torchvision ResNet, ResNeXt, MobileNetV2 and VisionTransformer weights (and the CIFAR
# ResNet-20...110 built here from torchvision's BasicBlock, and the CIFAR Wide ResNets built here)
# between PyTorch and mlai's HDF5 layout ("model/<name>" datasets, conv filters OHWI; a ViT's
# class token, position embeddings and packed attention projections keep torch's shapes).
# `export` writes a torchvision model as an mlai weights file (for mlai_train --pretrained);
# `load` reads an mlai checkpoint back into torchvision and saves it.
import argparse
import glob
import math
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torchvision

FORMAT = "mlai-weights-1"


CIFAR_DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}
WRN = {"wrn16_4": (16, 4), "wrn16_8": (16, 8), "wrn22_8": (22, 8), "wrn28_10": (28, 10),
       "wrn40_4": (40, 4)}
ARCHS = ["resnet18", "resnet18_cifar", "resnet34", "resnet34_cifar", "resnet50",
         "resnet50_cifar", "resnet101", "resnet101_cifar", "resnet152", "resnet152_cifar",
         "wide_resnet50_2", "wide_resnet101_2", "resnext50_32x4d", "resnext50_32x4d_cifar",
         "resnext101_32x8d", "resnext101_64x4d", "mobilenet_v2", "mobilenet_v2_cifar"] + \
    list(CIFAR_DEPTHS) + list(WRN)
# torchvision's ViT sizes (patch, layers, heads, hidden, mlp), and vit_cifar: the small ViT of
# the Lightning tutorials for CIFAR-10, as mlai builds it (nn/vit.cpp). No torchvision weights.
VIT = {"vit_b_16": (16, 12, 12, 768, 3072), "vit_b_32": (32, 12, 12, 768, 3072),
       "vit_l_16": (16, 24, 16, 1024, 4096), "vit_l_32": (32, 24, 16, 1024, 4096),
       "vit_h_14": (14, 32, 16, 1280, 5120), "vit_cifar": (4, 6, 8, 256, 512)}
ARCHS += list(VIT)


class CifarResNet(nn.Module):
    """He et al. 2016's CIFAR ResNet (6n + 2 layers) as mlai builds it: a 3x3 stem of 16
    filters, n torchvision BasicBlocks at 16, 32 and 64 filters (stride 2 entering the last two
    stages, with 1x1 conv + BN shortcuts there), average pool, fc; torchvision's names and init."""

    def __init__(self, n, num_classes, in_channels=3):
        super().__init__()
        block = torchvision.models.resnet.BasicBlock
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        inplanes = 16
        for i, width in enumerate((16, 32, 64)):
            blocks = []
            for b in range(n):
                stride = 2 if b == 0 and i > 0 else 1
                down = None
                if stride != 1 or inplanes != width:
                    down = nn.Sequential(nn.Conv2d(inplanes, width, 1, stride, bias=False),
                                         nn.BatchNorm2d(width))
                blocks.append(block(inplanes, width, stride, down))
                inplanes = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class WideBasic(nn.Module):
    """A pre-activation block of Zagoruyko and Komodakis's Wide ResNet, as mlai builds it:
    bn1-relu-conv1-bn2-relu-[dropout]-conv2, plus the input or a 1x1 conv of the pre-activated
    input where the shape changes."""

    def __init__(self, cin, cout, stride, dropout):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x):
        a = torch.relu(self.bn1(x))
        h = torch.relu(self.bn2(self.conv1(a)))
        if self.dropout is not None:
            h = self.dropout(h)
        h = self.conv2(h)
        return h + (self.shortcut(a) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """WRN-depth-widen for CIFAR (Zagoruyko and Komodakis, 2016) with mlai's names: conv1 (16
    filters), block1..3 of (depth - 4) / 6 WideBasic blocks at 16, 32 and 64 x widen filters
    (stride 2 entering the last two), bn, relu, average pool, fc; kaiming-normal fan_out convs."""

    def __init__(self, depth, widen, num_classes, in_channels=3, dropout=0.0):
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        cin = 16
        for g in range(3):
            cout = (16 << g) * widen
            blocks = []
            for b in range(n):
                blocks.append(WideBasic(cin, cout, 2 if b == 0 and g > 0 else 1, dropout))
                cin = cout
            setattr(self, f"block{g + 1}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(self.relu(self.bn(x))), 1))


def make_mobilenet(arch, num_classes, in_channels, weights):
    """torchvision's mobilenet_v2; mobilenet_v2_cifar as mlai builds it: the stem and the first
    24-wide block at stride 1 (same layers and names)."""
    m = torchvision.models.mobilenet_v2(**({"weights": weights} if weights is not None
                                           else {"num_classes": num_classes}))
    if m.classifier[1].out_features != num_classes:
        m.classifier[1] = nn.Linear(m.classifier[1].in_features, num_classes)
    stem = m.features[0][0]
    if in_channels != 3:
        m.features[0][0] = nn.Conv2d(in_channels, 32, 3, stem.stride, 1, bias=False)
    if arch.endswith("_cifar"):
        m.features[0][0].stride = (1, 1)
        m.features[2].conv[1][0].stride = (1, 1)
    return m


def default_image_size(arch):
    """The image side a ViT is built for unless --image-size says otherwise (the other archs
    take any size)."""
    return 32 if arch == "vit_cifar" else 224


def make_vit(arch, num_classes, in_channels, weights, image_size):
    """torchvision's VisionTransformer (vit_b_16 ... vit_h_14 with torchvision's sizes, or
    vit_cifar: patch 4, 6 layers, 8 heads, width 256, MLP 512) for square images of image_size
    (a multiple of the patch; mlai takes the data's size); dropout 0, as mlai's default. Other
    than 3 channels: conv_proj is a new Conv2d(in_channels, hidden, patch, stride patch) with
    torchvision's init. torchvision weights at another image size get their position embeddings
    resized as torchvision's interpolate_embeddings does (bicubic); another class count a new
    head (nn.Linear's init)."""
    patch, layers, heads, hidden, mlp = VIT[arch]
    image_size = image_size or default_image_size(arch)
    if image_size % patch != 0:
        raise SystemExit(f"torch_interop: error: --image-size {image_size} is not a multiple of "
                         f"{arch}'s patch size {patch}")
    if arch == "vit_cifar":
        if weights is not None:
            raise SystemExit("torch_interop: error: torchvision has no weights for vit_cifar")
        m = torchvision.models.VisionTransformer(image_size, patch, layers, heads, hidden, mlp,
                                                 num_classes=num_classes)
    elif weights is not None:
        m = getattr(torchvision.models, arch)(weights=weights)
        if m.image_size != image_size:
            sd = torchvision.models.vision_transformer.interpolate_embeddings(
                image_size, patch, m.state_dict())
            m = getattr(torchvision.models, arch)(image_size=image_size,
                                                  num_classes=m.heads.head.out_features)
            m.load_state_dict(sd)
        if m.heads.head.out_features != num_classes:
            m.heads.head = nn.Linear(hidden, num_classes)
    else:
        m = getattr(torchvision.models, arch)(image_size=image_size, num_classes=num_classes)
    if in_channels != 3:
        m.conv_proj = nn.Conv2d(in_channels, hidden, patch, patch)
        nn.init.trunc_normal_(m.conv_proj.weight, std=math.sqrt(1 / (in_channels * patch * patch)))
        nn.init.zeros_(m.conv_proj.bias)
    return m


def make_model(arch, num_classes, in_channels=3, weights=None, image_size=None):
    """torchvision resnet18/34/50/101/152, wide_resnet50_2/101_2, resnext50_32x4d,
    resnext101_32x8d/64x4d and mobilenet_v2, or the *_cifar variants (ResNets: 3x3/1 stem, no
    max pool; MobileNetV2: see make_mobilenet), or a CIFAR ResNet (resnet20 ... resnet110) or Wide
    ResNet (wrn16_4 ... wrn40_4; neither has torchvision weights), or a VisionTransformer
    (vit_b_16 ... vit_h_14, vit_cifar: see make_vit; only these use image_size)."""
    if arch not in ARCHS:
        raise SystemExit(f"torch_interop: error: --arch '{arch}' is unknown ({', '.join(ARCHS)})")
    if arch in VIT:
        return make_vit(arch, num_classes, in_channels, weights, image_size)
    if arch.startswith("mobilenet"):
        return make_mobilenet(arch, num_classes, in_channels, weights)
    if arch in CIFAR_DEPTHS or arch in WRN:
        if weights is not None:
            raise SystemExit(f"torch_interop: error: torchvision has no weights for {arch}")
        if arch in WRN:
            return WideResNet(*WRN[arch], num_classes, in_channels)
        return CifarResNet(CIFAR_DEPTHS[arch], num_classes, in_channels)
    build = getattr(torchvision.models, arch.removesuffix("_cifar"))
    if weights is not None:
        m = build(weights=weights)
        if m.fc.out_features != num_classes:
            m.fc = nn.Linear(m.fc.in_features, num_classes)
    else:
        m = build(num_classes=num_classes)
    if arch.endswith("_cifar"):
        m.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        m.maxpool = nn.Identity()
    elif in_channels != 3:
        m.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return m


def to_mlai(name, t):
    """A state_dict entry as mlai stores it: float32 (int64 counters), 4-D filters OHWI."""
    a = t.detach().cpu()
    if a.dim() == 4:
        a = a.permute(0, 2, 3, 1)
    a = a.contiguous().numpy()
    return a.astype(np.int64) if name.endswith("num_batches_tracked") else a.astype(np.float32)


def from_mlai(name, a):
    t = torch.from_numpy(np.ascontiguousarray(a))
    if t.dim() == 4:
        t = t.permute(0, 3, 1, 2).contiguous()
    return t


def write_weights(model, path):
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        for name, t in model.state_dict().items():
            f.create_dataset("model/" + name, data=to_mlai(name, t))


def read_weights(path):
    # A sharded checkpoint (mlai_train --state-dict-type sharded) is a directory of
    # shard-NNNNN-of-MMMMM.h5 files, each tensor in one of them: their 'model' groups together.
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "shard-[0-9]*-of-[0-9]*.h5")))
        if not files:
            raise SystemExit(f"torch_interop: error: {path} is a directory without checkpoint "
                             "shards (shard-00000-of-N.h5)")
        count = int(os.path.basename(files[0])[15:20])
        if len(files) != count:
            raise SystemExit(f"torch_interop: error: {path} holds {len(files)} of its {count} "
                             "shards (an incomplete copy?)")
    else:
        files = [path]
    sd = {}
    for file in files:
        try:
            f = h5py.File(file, "r")
        except OSError as e:
            raise SystemExit(f"torch_interop: error: cannot open {file}: {e}")
        with f:
            if "model" in f:
                sd.update({n: from_mlai(n, d[()]) for n, d in f["model"].items()})
    if not sd:
        raise SystemExit(f"torch_interop: error: {path} has no 'model' group "
                         "(not an mlai checkpoint or weights file)")
    return sd


def cmd_export(a):
    weights = None
    if a.torchvision_weights != "none":
        weights = a.torchvision_weights  # e.g. IMAGENET1K_V1 (needs the download cache)
    else:
        torch.manual_seed(a.random_seed)
    m = make_model(a.arch, a.num_classes, a.in_channels, weights, a.image_size)
    write_weights(m, a.out)
    print(f"{a.arch}: {len(m.state_dict())} tensors -> {a.out}")


def cmd_load(a):
    sd = read_weights(a.checkpoint)
    image_size = a.image_size
    if a.arch in VIT and image_size is None and "encoder.pos_embedding" in sd:
        # the checkpoint's image side, from its position embeddings: (side / patch)^2 + 1
        side = math.isqrt(sd["encoder.pos_embedding"].shape[1] - 1)
        image_size = side * VIT[a.arch][0]
    m = make_model(a.arch, a.num_classes, a.in_channels, image_size=image_size)
    try:
        m.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise SystemExit(f"torch_interop: error: {a.checkpoint} does not fit {a.arch}: {msg}")
    torch.save(m, a.out)
    print(f"{a.checkpoint} -> {a.out} ({a.arch}, {a.num_classes} classes)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__ or "torchvision <-> mlai weights")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("export", "load"):
        s = sub.add_parser(name)
        s.add_argument("--arch", required=True, choices=ARCHS)
        s.add_argument("--num-classes", type=int, required=True)
        s.add_argument("--in-channels", type=int, default=3)
        s.add_argument("--image-size", type=int, default=None,
                       help="vit_*: the (square) image side, a multiple of the patch "
                            "(export: default 224, vit_cifar 32; load: the checkpoint's); "
                            "the other archs take any size")
        s.add_argument("--out", required=True)
    e = sub.choices["export"]
    e.add_argument("--random-seed", type=int, default=0, help="seed for torchvision's random init")
    e.add_argument("--torchvision-weights", default="none",
                   help="none (random init) or a torchvision weights name such as IMAGENET1K_V1")
    sub.choices["load"].add_argument("--checkpoint", required=True)
    a = p.parse_args(argv)
    if a.num_classes < 1 or a.in_channels < 1:
        p.error("--num-classes and --in-channels must be >= 1")
    if a.image_size is not None and a.image_size < 1:
        p.error("--image-size must be >= 1")
    {"export": cmd_export, "load": cmd_load}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
