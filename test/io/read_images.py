#!/usr/bin/env python3
"""Reads the images in a log directory's TensorBoard event files with TensorBoard's
EventAccumulator (what the IMAGES tab serves) and prints one line per image event:

    tag step width height png_bytes

Used by test/io/tensorboard_test.cpp. Usage: read_images.py LOG_DIR"""
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    acc = EventAccumulator(sys.argv[1], size_guidance={"images": 0})
    acc.Reload()
    for tag in sorted(acc.Tags()["images"]):
        for e in acc.Images(tag):
            print(tag, e.step, e.width, e.height, len(e.encoded_image_string))
    return 0


if __name__ == "__main__":
    sys.exit(main())
