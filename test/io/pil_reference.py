"""Writes images in the formats mlai_convert --from folder reads, and what PIL makes of them.

Usage: python3 test/io/pil_reference.py OUTDIR

OUTDIR/images/ gets PNG files (RGB, RGBA, gray, gray+alpha, palette) and JPEG
files (colour, gray) of random pixels; OUTDIR/manifest.tsv one line per (image, mode, size):
    image  mode  height  width  reference
where reference is a raw file of what torchvision's ImageFolder loader and Resize give on PIL:
Image.open(image).convert(mode), resized to height x width with Image.BILINEAR when that differs
from the image's size. image_folder_test.cpp compares mlai's decoder and resizer with them.
Exit 77 when PIL is not installed (the test skips).
"""
import os
import random
import sys

try:
    from PIL import Image
except ImportError:
    sys.exit(77)


def noise(mode, w, h, rng):
    bands = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
    data = bytes(rng.randrange(256) for _ in range(w * h * bands))
    return Image.frombytes(mode, (w, h), data)


def main():
    out = sys.argv[1]
    img_dir = os.path.join(out, "images")
    os.makedirs(img_dir, exist_ok=True)
    rng = random.Random(5)
    files = []

    def save(img, name, **kw):
        path = os.path.join(img_dir, name)
        img.save(path, **kw)
        files.append(path)

    save(noise("RGB", 37, 23, rng), "rgb.png")
    save(noise("RGBA", 20, 31, rng), "rgba.png")
    save(noise("L", 64, 48, rng), "gray.png")
    save(noise("LA", 19, 17, rng), "gray_alpha.png")
    save(noise("RGB", 30, 30, rng).quantize(colors=50), "palette.png")
    # Smooth content, as photographs are, so the JPEGs are not all noise.
    smooth = noise("RGB", 12, 9, rng).resize((61, 45), Image.BICUBIC)
    save(smooth, "photo.jpg", quality=90)
    save(smooth.convert("L"), "photo_gray.jpg", quality=90)

    sizes = [None, (16, 16), (7, 40), (50, 33), (1, 1)]
    lines = []
    for path in files:
        for mode in ("RGB", "L"):
            img = Image.open(path).convert(mode)
            for size in sizes:
                h, w = size if size else (img.height, img.width)
                ref = img if (w, h) == img.size else img.resize((w, h), Image.BILINEAR)
                ref_path = "%s.%s.%dx%d.raw" % (path, mode, h, w)
                with open(ref_path, "wb") as f:
                    f.write(ref.tobytes())
                lines.append("\t".join([path, mode, str(h), str(w), ref_path]))
    with open(os.path.join(out, "manifest.tsv"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
