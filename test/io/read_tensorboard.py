#!/usr/bin/env python3
"""Reads the TensorBoard event files in a log directory with TensorBoard's own reader and prints
one `tag,step,value` line per scalar. Used by test/io/tensorboard_test.cpp to check that
io/tensorboard.cpp writes files TensorBoard accepts. Usage: read_tensorboard.py LOG_DIR"""
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    for tag in sorted(acc.Tags()["scalars"]):
        for event in acc.Scalars(tag):
            print(f"{tag},{event.step},{event.value!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
