#!/usr/bin/env python3
"""Ranks the runs of a hyperparameter sweep (slurm/sweep.sh) by their validation.

    python3 slurm/sweep_report.py logs/<study> [--monitor val_accuracy|val_loss]

Reads the study's sweep.tsv (each task's settings and experiment) and each run's metrics.csv
files (every version_* folder of its experiment: a run resumed by a new job continues in a new
one), and writes sweep.md (a table, best run first)
and sweep.csv (the same, one line per run) into the study folder; prints the table. Per run:
the swept settings, the best validation by the monitor and the epoch it came at, the epochs
run, the test accuracy and loss (a run that finished has them), images/s, and its state:
finished, unfinished (stopped by the time limit or a signal: submitting sweep.sbatch again
continues it), or not started. Standard library only.
"""
import argparse
import csv
import math
import os
import sys


def read_tsv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or rows[0][:2] != ["task", "experiment"]:
        raise ValueError(f"{path}: not a sweep.tsv (its header must start with task, experiment)")
    header = rows[0]
    return header[2:], [dict(zip(header, r)) for r in rows[1:] if r]


def metrics_files(experiment_dir):
    """The metrics.csv of each of the experiment's version_* folders, oldest first (a run
    resumed by a new job writes a new version folder with the epochs after the resume)."""
    if not os.path.isdir(experiment_dir):
        return []
    paths = [os.path.join(experiment_dir, n, "metrics.csv") for n in os.listdir(experiment_dir)
             if n.startswith("version_")]
    return sorted((p for p in paths if os.path.isfile(p)), key=os.path.getmtime)


def number(text):
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def summarize(paths, monitor):
    """The run's best validation, epochs, test and speed from its metrics.csv files (oldest
    first): epochs from every part of a resumed run, the state and test from the latest."""
    out = {"state": "not started", "best": None, "best_epoch": None, "epochs": 0,
           "test_accuracy": None, "test_loss": None, "images_per_sec": None, "version": None}
    if not paths:
        return out
    epochs = {}  # epoch -> its row (a later part's row wins)
    test = None
    for path in paths:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        test = None  # only the latest part's test row counts
        for r in rows:
            if r.get("epoch") == "test":
                test = r
            elif number(r.get("epoch")) is not None:
                epochs[int(number(r["epoch"]))] = r
    out["version"] = os.path.basename(os.path.dirname(paths[-1]))
    out["state"] = "finished" if test else "unfinished"
    if test:
        out["test_accuracy"] = number(test.get("test_accuracy"))
        out["test_loss"] = number(test.get("test_loss"))
    lower_is_better = monitor == "val_loss"
    speeds = [number(r.get("images_per_sec")) for r in epochs.values()]
    speeds = [v for v in speeds if v is not None]
    if speeds:
        out["images_per_sec"] = sum(speeds) / len(speeds)
    out["epochs"] = max(epochs, default=0)
    for epoch in sorted(epochs):
        v = number(epochs[epoch].get(monitor))
        if v is None:
            continue
        if out["best"] is None or (v < out["best"] if lower_is_better else v > out["best"]):
            out["best"], out["best_epoch"] = v, epoch
    return out


def fmt(v, digits=4):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study_dir", help="the sweep's folder (logs/<study>)")
    p.add_argument("--monitor", choices=("val_accuracy", "val_loss"), default="val_accuracy",
                   help="what ranks the runs (default val_accuracy, higher is better)")
    args = p.parse_args()
    tsv = os.path.join(args.study_dir, "sweep.tsv")
    try:
        swept, tasks = read_tsv(tsv)
    except OSError as e:
        print(f"sweep_report.py: cannot read {tsv}: {e.strerror} (is {args.study_dir} a sweep "
              "folder from slurm/sweep.sh?)", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"sweep_report.py: {e}", file=sys.stderr)
        return 1
    runs = []
    for t in tasks:
        s = summarize(metrics_files(os.path.join(args.study_dir, t["experiment"])), args.monitor)
        # (the settings apart: a swept flag may share a name with a summary field, like epochs)
        runs.append(dict(s, task=t["task"], experiment=t["experiment"],
                         settings={n: t.get(n, "") for n in swept}))
    # Best first by the monitor; runs without a validation after those with one, by task.
    sign = 1 if args.monitor == "val_loss" else -1
    runs.sort(key=lambda r: (r["best"] is None, sign * (r["best"] or 0), int(r["task"])))

    columns = (["rank", "task"] + swept +
               [f"best {args.monitor}", "at epoch", "epochs run", "test_accuracy", "test_loss",
                "images/s", "state", "run"])
    table = []
    for i, r in enumerate(runs, 1):
        table.append([str(i) if r["best"] is not None else "-", r["task"]] +
                     [r["settings"][n] for n in swept] +
                     [fmt(r["best"]), fmt(r["best_epoch"]), str(r["epochs"]),
                      fmt(r["test_accuracy"]), fmt(r["test_loss"]),
                      fmt(r["images_per_sec"], 0), r["state"],
                      f"{r['experiment']}/{r['version']}" if r["version"] else r["experiment"]])
    # The study's name: its experiments are <study>-<task>.
    study = (tasks[0]["experiment"].rsplit("-", 1)[0] if tasks
             else os.path.basename(os.path.normpath(args.study_dir)))
    done = sum(r["state"] == "finished" for r in runs)
    lines = [f"# Sweep {study}: {len(runs)} run(s), {done} finished, ranked by {args.monitor}",
             "", "| " + " | ".join(columns) + " |",
             "|" + "|".join("---:" if c in ("rank", "task", "epochs run", "at epoch") or
                            c.startswith("best") or c in ("test_accuracy", "test_loss",
                                                          "images/s") else "---"
                            for c in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    if runs and runs[0]["best"] is not None:
        best = runs[0]
        # (as sweep.sh passes them: a switch's "on" is the bare flag, its "off" nothing)
        chosen = best["settings"]
        settings = " ".join(f"--{n}" if chosen[n] == "on" else f"--{n} {chosen[n]}"
                            for n in swept if chosen[n] != "off")
        lines += ["", f"Best: task {best['task']} ({settings}): {args.monitor} "
                      f"{fmt(best['best'])} at epoch {best['best_epoch']}."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.study_dir, "sweep.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.study_dir, "sweep.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(table)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
