"""mlai_convert --from folder against PIL doing the same work, on the same machine, same images.

Usage: python3 bench/image_folder_reference.py [--images 2000] [--side 256] [--size 64]
           [--repeats 3] [--mlai-convert build/bin/mlai_convert] [--workdir DIR]

Makes a folder of photo-like JPEGs (quality 90, 10 classes, smooth content) once, then times,
interleaved, REPEATS times each:
  - mlai_convert --from folder --size S (decode + resize on all cores, streamed to HDF5);
  - PIL in one process: Image.open(f).convert("RGB").resize((S, S), BILINEAR) per image
    (torchvision's ImageFolder loader + Resize, one DataLoader worker);
  - the same PIL work in a multiprocessing pool of os.cpu_count() processes (DataLoader with
    that many workers).
Prints medians and the ratios as a Markdown table; bench/results/ keeps one. The PIL numbers
do not include writing a file; mlai's do.
"""
import argparse
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

try:
    from PIL import Image
except ImportError:
    sys.exit("image_folder_reference: PIL is not installed (pip install pillow)")


def make_folder(root, images, side):
    rng = random.Random(0)
    for i in range(images):
        cls = os.path.join(root, "train", "c%d" % (i % 10))
        os.makedirs(cls, exist_ok=True)
        small = Image.frombytes("RGB", (12, 12), bytes(rng.randrange(256) for _ in range(432)))
        small.resize((side, side), Image.BICUBIC).save(os.path.join(cls, "%05d.jpg" % i), quality=90)


def pil_one(args):
    path, size = args
    return len(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR).tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mlai-convert", default="build/bin/mlai_convert")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="mlai-imgbench-")
    folder = os.path.join(work, "photos")
    if not os.path.isdir(os.path.join(folder, "train")):
        make_folder(folder, a.images, a.side)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(folder, "train"))
                   for f in fs)
    jobs = [(f, a.size) for f in files]
    cpus = os.cpu_count() or 1
    times = {"mlai": [], "pil1": [], "pool": []}
    with multiprocessing.Pool(cpus) as pool:
        for _ in range(a.repeats):
            t = time.perf_counter()
            subprocess.run([a.mlai_convert, "--from", "folder", "--data-dir", folder, "--size",
                            str(a.size), "--out", os.path.join(work, "packed"), "--no-progress"],
                           check=True, stdout=subprocess.DEVNULL)
            times["mlai"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for j in jobs:
                pil_one(j)
            times["pil1"].append(time.perf_counter() - t)
            t = time.perf_counter()
            pool.map(pil_one, jobs, chunksize=16)
            times["pool"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    n = len(files)
    print("%d JPEGs of %dx%d to %dx%d, %d CPUs, median of %d" %
          (n, a.side, a.side, a.size, a.size, cpus, a.repeats))
    print()
    print("| what | seconds | images/s | mlai's speed-up |")
    print("|---|---:|---:|---:|")
    rows = [("mlai_convert --from folder (all cores, writes HDF5)", "mlai"),
            ("PIL, one process", "pil1"),
            ("PIL, pool of %d processes" % cpus, "pool")]
    for label, k in rows:
        print("| %s | %.2f | %.0f | %.2fx |" % (label, med[k], n / med[k], med[k] / med["mlai"]))


if __name__ == "__main__":
    main()
