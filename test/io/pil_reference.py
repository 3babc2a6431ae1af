"""Writes images in the formats mlai_convert --from folder reads, and what PIL makes of them.

Usage: python3 test/io/pil_reference.py OUTDIR

OUTDIR/images/ gets PNG files (RGB, RGBA, gray, gray+alpha, palette, a gAMA of 1.0, 16-bit
RGB, 1-bit and 4-bit gray) and JPEG
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


def write_png16(path, w, h, data):
    """A 16-bit RGB PNG written by hand (zlib + CRC), since PIL cannot write one."""
    import struct
    import zlib

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff))

    raw = b"".join(b"\x00" + data[y * w * 6:(y + 1) * w * 6] for y in range(h))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw)))
        f.write(chunk(b"IEND", b""))


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
    # A gAMA chunk of 1.0 (PIL ignores it; libpng's simplified API would convert to sRGB).
    from PIL import PngImagePlugin
    gamma = PngImagePlugin.PngInfo()
    gamma.add(b"gAMA", (100000).to_bytes(4, "big"))
    save(noise("RGB", 21, 18, rng), "gamma1.png", pnginfo=gamma)
    # 16-bit colour: PIL keeps each sample's high byte.
    deep = bytes(rng.randrange(256) for _ in range(17 * 13 * 6))
    write_png16(os.path.join(img_dir, "rgb16.png"), 17, 13, deep)
    files.append(os.path.join(img_dir, "rgb16.png"))
    # 1-bit gray and a 4-bit palette.
    save(noise("L", 23, 11, rng).convert("1"), "bits1.png")
    save(noise("L", 16, 9, rng).quantize(colors=16), "bits4.png", bits=4)
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
    import PIL
    with open(os.path.join(out, "pillow_version.txt"), "w") as f:
        f.write(PIL.__version__ + "\n")


if __name__ == "__main__":
    main()
