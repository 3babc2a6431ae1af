#!/usr/bin/env python3
"""Reads the histograms in a log directory's TensorBoard event files the two ways TensorBoard
does and prints one line per histogram event:

    tag step num min max sum sum_squares buckets count_in_buckets rows count_in_rows

num..count_in_buckets from TensorBoard's EventAccumulator (its HistogramValue); rows and
count_in_rows from the HISTOGRAMS tab's path: the [left, right, count] rows the dashboard
draws, as its event-file loader migrates them. Used by test/io/tensorboard_test.cpp.
Usage: read_histograms.py LOG_DIR"""
import glob
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    acc = EventAccumulator(sys.argv[1], size_guidance={"histograms": 0})
    acc.Reload()
    rows = {}
    # (EventFileLoader migrates each histo value to the plugin's tensor as it reads)
    for path in sorted(glob.glob(os.path.join(sys.argv[1], "events.out.tfevents.*"))):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "histograms":
                    t = tensor_util.make_ndarray(value.tensor)
                    rows[(value.tag, event.step)] = (t.shape[0], float(t[:, 2].sum()))
    for tag in sorted(acc.Tags()["histograms"]):
        for e in acc.Histograms(tag):
            h = e.histogram_value
            n_rows, in_rows = rows.get((tag, e.step), (-1, -1.0))
            print(tag, e.step, h.num, repr(h.min), repr(h.max), repr(h.sum), repr(h.sum_squares),
                  len(h.bucket), sum(h.bucket), n_rows, in_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
