#!/usr/bin/env python3
"""Writes a small MNIST-format data set (IDX files) for the shell tests.

  make_synthetic_mnist.py OUT_DIR [--train N] [--test N] [--seed S] [--noise]

Default: each class gets its own bright 4x4 block on a dim random background, so a model has
something to learn. --noise: uniformly random pixels and labels (for tests of failure paths).
MNIST's IDX format: a big-endian header (magic 0x803 or 0x801, count[, rows, cols]), then uint8.
"""
import argparse
import os
import random
import struct

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--train", type=int, default=256)
p.add_argument("--test", type=int, default=64)
p.add_argument("--seed", type=int, default=7)
p.add_argument("--noise", action="store_true")
a = p.parse_args()

os.makedirs(a.out)
rng = random.Random(a.seed)
for split, n in (("train", a.train), ("t10k", a.test)):
    labels = [rng.randrange(10) for _ in range(n)]
    pixels = bytearray()
    for y in labels:
        if a.noise:
            pixels += bytes(rng.randrange(256) for _ in range(28 * 28))
            continue
        img = bytearray(rng.randrange(64) for _ in range(28 * 28))
        for r in range(4):
            for c in range(4):
                img[(2 + 2 * y + r) * 28 + 2 + c + 2 * y] = 255
        pixels += img
    with open(f"{a.out}/{split}-images-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28) + pixels)
    with open(f"{a.out}/{split}-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + bytes(labels))
