#!/usr/bin/env python3
"""Table and plot of a scaling study written by slurm/scaling.sh, or several side by side.

    python3 slurm/scaling_report.py logs/<study>
    python3 slurm/scaling_report.py logs/<study> logs/<other study> ... [--out DIR]

Reads the study folder's jobs.tsv and each point's run (<point>/version_<job id>/metrics.csv,
hparams.json and profile.json), prints a Markdown table and writes it to <study>/scaling.md, and plots images/s and
scaling efficiency against the ranks, with the ideal lines, to <study>/scaling.png (matplotlib
where it is installed; the table needs only the standard library).

With several studies (the same model run with and without --ddp-comm-hook, say) it writes one
table with a row per study and point, each point's images/s also against the first study's at
the same ranks, and one plot with a line per study, to comparison.md and comparison.png in --out
(default: the first study's folder).
"""
import argparse
import csv
import json
import os
import sys
from statistics import mean


def read_jobs(study):
    """The points of the study: jobs.tsv's rows, the latest job of each point, in file order."""
    path = os.path.join(study, "jobs.tsv")
    points = {}
    if os.path.exists(path):
        with open(path, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                row["run"] = os.path.join(study, row["name"], "version_" + row["job_id"])
                points[row["name"]] = row  # a later submission of a point replaces the earlier
        return list(points.values())
    # No jobs.tsv (runs copied from elsewhere): every experiment folder's newest run.
    for name in sorted(os.listdir(study)):
        runs = [os.path.join(study, name, v) for v in os.listdir(os.path.join(study, name))
                if v.startswith("version_")] if os.path.isdir(os.path.join(study, name)) else []
        runs = [r for r in runs if os.path.exists(os.path.join(r, "metrics.csv"))]
        if runs:
            run = max(runs, key=lambda r: os.path.getmtime(os.path.join(r, "metrics.csv")))
            points[name] = {"name": name, "run": run, "job_id": run.rsplit("version_", 1)[1]}
    return list(points.values())


def number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_run(point):
    """One point's measurements, or None with the reason when its run has no epoch yet."""
    run = point["run"]
    metrics = os.path.join(run, "metrics.csv")
    if not os.path.exists(metrics):
        return None, "no " + os.path.relpath(metrics, os.path.dirname(os.path.dirname(run)))
    with open(metrics, newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = [r for r in rows if r["epoch"].isdigit()]
    if not epochs:
        return None, "no finished epoch in metrics.csv"
    hparams = {}
    if os.path.exists(os.path.join(run, "hparams.json")):
        with open(os.path.join(run, "hparams.json")) as f:
            hparams = json.load(f)
    slurm = hparams.get("machine", {}).get("slurm", {})
    nodes = int(slurm.get("SLURM_NNODES") or point.get("nodes") or 1)
    ranks = int(slurm.get("SLURM_NTASKS") or point.get("ranks") or 1)
    batch = int(hparams.get("config", {}).get("batch_size") or point.get("batch_per_rank") or 0)
    # The first epoch pays for start-up (allocator, caches, the first allreduces): leave it out
    # where there are more.
    steady = epochs[1:] if len(epochs) > 1 else epochs
    sync, wait_max = read_profile(run)

    def avg(col):
        vals = [number(r.get(col)) for r in steady]
        vals = [v for v in vals if v is not None]
        return mean(vals) if vals else None

    def most(col):  # (--log-device-stats: the largest of any rank, per epoch; empty without it)
        vals = [number(r.get(col)) for r in epochs]
        vals = [v for v in vals if v is not None and v >= 0]
        return max(vals) if vals else None

    return {
        "name": point["name"], "job": point.get("job_id", ""), "nodes": nodes, "ranks": ranks,
        "batch": batch, "global_batch": batch * ranks, "ips": avg("images_per_sec"),
        "epoch_s": avg("epoch_seconds"), "wait": avg("data_wait_fraction"),
        "tflops": avg("tflops_per_device"), "mfu": avg("mfu"),
        "sync": sync, "wait_max": wait_max,
        # The tensors' peak on a rank: the GPU's caching allocator, else the CPU tensors'.
        "peak_mb": most("gpu_peak_mem_mb") or most("cpu_tensor_peak_mb"),
        "val_acc": number(epochs[-1].get("val_accuracy")), "epochs": len(epochs),
        "steady": len(steady), "finished": any(r["epoch"] == "test" for r in rows),
        "study": point.get("study", ""), "scaling": point.get("scaling", ""), "args": point.get("train_args", "").strip(),
    }, None


# The actions of a training step in profile.json (the profiler's names).
STEP_ACTIONS = ("data wait", "mixup/cutmix", "forward", "backward", "gradient sync",
                "optimizer step", "weight average")


def read_profile(run):
    """From the run's profile.json: the share of the training step time spent waiting for the
    gradient allreduce after backward (the part overlap did not hide; mean over ranks), and the
    largest share any rank spent waiting for batches. (None, None) for runs without it."""
    path = os.path.join(run, "profile.json")
    if not os.path.exists(path):
        return None, None
    with open(path) as f:
        actions = json.load(f).get("actions", {})

    def seconds(name, key):
        a = actions.get(name, {})
        return a.get(key, a.get("total_s", 0.0))  # one rank: no spread, its own total

    step = sum(seconds(a, "mean_s") for a in STEP_ACTIONS)
    if step <= 0:
        return None, None
    return seconds("gradient sync", "mean_s") / step, seconds("data wait", "max_s") / step


def study_name(study, results):
    return results[0].get("study") or os.path.basename(os.path.normpath(study))


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def with_peak(head, body, results, before):
    """The peak MiB column (runs with --log-device-stats), inserted before column `before`."""
    if not any(r["peak_mb"] is not None for r in results):
        return head, body
    at = head.index(before)
    head = head[:at] + ["peak MiB/rank"] + head[at:]
    body = [row[:at] + [fmt(r["peak_mb"], ".0f")] + row[at:] for row, r in zip(body, results)]
    return head, body


def table(results):
    head = ["nodes", "ranks", "batch/rank", "global batch", "images/s", "speed-up",
            "efficiency", "TFLOP/s/rank", "MFU", "epoch s", "data wait", "grad sync", "max wait",
            "val acc", "job"]
    body = []
    for r in results:
        body.append([str(r["nodes"]), str(r["ranks"]), str(r["batch"]), str(r["global_batch"]),
                     fmt(r["ips"], ".0f"), fmt(r["speedup"], ".2f"), fmt(r["efficiency"], ".2f"),
                     fmt(r["tflops"], ".3g"), fmt(r["mfu"] and 100 * r["mfu"], ".1f"),
                     fmt(r["epoch_s"], ".2f"), fmt(r["wait"], ".3f"), fmt(r["sync"], ".3f"),
                     fmt(r["wait_max"], ".3f"), fmt(r["val_acc"], ".4f"),
                     r["job"] + ("" if r["finished"] else " *")])
    return markdown_table(*with_peak(head, body, results, "val acc"))


def markdown_table(head, body):
    """A right-aligned Markdown table of strings."""
    width = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, width)) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" for w in width) + "|"
    return "\n".join([line(head), rule] + [line(row) for row in body])


def add_scaling(results):
    """Each point's speed-up (images/s over the study's first point's) and efficiency
    (speed-up over the ratio of their ranks)."""
    base = results[0]
    for r in results:
        r["speedup"] = r["ips"] / base["ips"] if r["ips"] and base["ips"] else None
        r["efficiency"] = r["speedup"] / (r["ranks"] / base["ranks"]) if r["speedup"] else None


def pyplot(path):
    """matplotlib's pyplot (Agg), or None, having said that the plot is skipped."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        print("no matplotlib: skipped the plot (pip install matplotlib)", file=sys.stderr)
        if os.path.exists(path):
            print(f"(the {path} there is from an earlier report)", file=sys.stderr)
        return None


def describe(study, results, missing):
    base = results[0]
    modes = {r["scaling"] for r in results if r["scaling"]}
    mode = modes.pop() if len(modes) == 1 else ""
    batches = sorted({r["batch"] for r in results})
    text = [f"# Scaling study {study_name(study, results)}", ""]
    if mode == "weak" or (not mode and len(batches) == 1):
        text.append(f"Weak scaling: batch {batches[0]} per rank at every point, so the global batch "
                    "grows with the ranks; ideally images/s grow in proportion to the ranks.")
    elif mode == "strong":
        text.append(f"Strong scaling: global batch {base['global_batch']} at every point, split "
                    "over the ranks; ideally images/s still grow in proportion to the ranks.")
    if base["args"]:
        text.append(f"mlai_train flags: `{base['args']}`.")
    text += ["", table(results), ""]
    epochs = base["epochs"]
    text.append(
        "images/s: training images per second over all ranks, the mean over "
        + (f"epochs 2 to {epochs} (the first warms up)" if epochs > 2
           else "epoch 2 (the first warms up)" if epochs == 2 else "epoch 1 (the only one)")
        + "; epoch s and data wait (the fraction of training time rank 0 waited for batches) "
        f"likewise. Speed-up: images/s over those of the smallest run ({base['ranks']} rank"
        + ("s" if base["ranks"] > 1 else "") + "). Efficiency: speed-up / (ranks / "
        f"{base['ranks']}); 1.00 is perfect scaling, and the shortfall is time lost to gradient "
        "allreduces, waiting for the slowest rank, and shared memory bandwidth and cores. grad "
        "sync: the share of the training step time spent waiting for the gradient allreduces "
        "after backward (what overlapping them with backward did not hide; mean over ranks), and "
        "max wait: the largest share any rank spent waiting for batches (a slow data path on one "
        "node), both over the whole run from profile.json. TFLOP/s/rank: the model's matrix "
        "products (counted as PyTorch's FlopCounterMode counts them) per second and rank, over "
        "the same epochs; MFU: that rate in percent of the GPU's dense peak for the precision "
        "(- where the peak is not known, as on CPUs). val acc: validation accuracy after "
        "the last epoch.")
    if any(r["peak_mb"] is not None for r in results):
        text.append("peak MiB/rank (runs with --log-device-stats): the most any rank's tensors "
                    "held in the run, on the GPU (its caching allocator) or the CPU.")
    if any(not r["finished"] for r in results):
        text.append("\n\\* did not finish (no test row: stopped, failed or still running); "
                    "its finished epochs are used.")
    if missing:
        text.append("\nNot in the table: " + "; ".join(f"{n} ({why})" for n, why in missing) + ".")
    return "\n".join(text) + "\n"


def plot(study, results, path):
    plt = pyplot(path)
    if plt is None:
        return False
    from matplotlib.ticker import FuncFormatter, LogLocator
    base = results[0]
    ranks = [r["ranks"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ideal = [base["ips"] * n / base["ranks"] for n in ranks]
    left.plot(ranks, ideal, "--", color="gray", label="ideal (linear)")
    left.plot(ranks, [r["ips"] for r in results], "o-", color="C0", label="measured")
    left.set(xscale="log", yscale="log", xlabel="ranks", ylabel="images/s (all ranks)",
             title="Throughput")
    # Plain numbers at 1, 2 and 5 times the powers of ten: a log axis shows too few labels else.
    left.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    for r in results:
        left.annotate(f"{r['ips']:,.0f}", (r["ranks"], r["ips"]), textcoords="offset points",
                      xytext=(6, 6), ha="left", fontsize=9)
    right.axhline(1.0, linestyle="--", color="gray", label="ideal")
    right.plot(ranks, [r["efficiency"] for r in results], "o-", color="C1", label="measured")
    top = max([1.0] + [r["efficiency"] or 0 for r in results])
    right.set(xscale="log", ylim=(0, top * 1.15), xlabel="ranks",
              ylabel="efficiency = speed-up / (ranks ratio)", title="Scaling efficiency")
    for r in results:
        right.annotate(f"{r['efficiency']:.2f}", (r["ranks"], r["efficiency"]),
                       textcoords="offset points", xytext=(6, 6), ha="left", fontsize=9)
    for ax in (left, right):
        ax.set_xticks(ranks, [f"{r['ranks']}\n({r['nodes']} node{'s' if r['nodes'] > 1 else ''})"
                              for r in results])
        ax.minorticks_off()
        ax.margins(x=0.12, y=0.12)
        ax.grid(True, alpha=0.3)
        ax.legend()
    name = study_name(study, results)
    mode = results[0]["scaling"]
    fig.suptitle(f"Scaling study {name}" + (f" ({mode} scaling)" if mode else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def collect(study):
    """The study's points with a measured rate, sorted by ranks, and the ones without (why)."""
    if not os.path.isdir(study):
        sys.exit(f"scaling_report.py: no study folder {study}")
    results, missing = [], []
    for point in read_jobs(study):
        r, why = read_run(point)
        if r and r["ips"]:
            results.append(r)
        else:
            missing.append((point["name"], why or "no images/s"))
    if not results:
        why = "; ".join(f"{n}: {w}" for n, w in missing) or "no runs"
        sys.exit(f"scaling_report.py: nothing to report in {study} ({why})")
    results.sort(key=lambda r: (r["ranks"], r["nodes"]))
    add_scaling(results)
    return results, missing


def compare(studies, collected):
    """Markdown for several studies side by side."""
    names = [study_name(s, rs) for s, (rs, _) in zip(studies, collected)]
    first = {r["ranks"]: r["ips"] for r in collected[0][0]}
    head = ["study", "nodes", "ranks", "global batch", "images/s", f"vs {names[0]}", "speed-up",
            "efficiency", "grad sync", "TFLOP/s/rank", "val acc"]
    body, rows = [], []
    for name, (results, _) in zip(names, collected):
        for r in results:
            rel = r["ips"] / first[r["ranks"]] if first.get(r["ranks"]) else None
            body.append([name, str(r["nodes"]), str(r["ranks"]), str(r["global_batch"]),
                         fmt(r["ips"], ".0f"), fmt(rel, ".2f"), fmt(r["speedup"], ".2f"),
                         fmt(r["efficiency"], ".2f"), fmt(r["sync"], ".3f"),
                         fmt(r["tflops"], ".3g"), fmt(r["val_acc"], ".4f")])
            rows.append(r)
    head, body = with_peak(head, body, rows, "val acc")
    text = ["# Scaling studies compared: " + ", ".join(names), ""]
    for name, (results, _) in zip(names, collected):
        args = results[0]["args"]
        text.append(f"- {name}: " + (f"`{args}`" if args else "(no extra mlai_train flags recorded)"))
    text += ["", markdown_table(head, body), ""]
    text.append(
        f"vs {names[0]}: images/s over {names[0]}'s at the same number of ranks (- where it has "
        "no such point). Speed-up and efficiency are against each study's own smallest run; grad "
        "sync is the share of the step spent waiting for gradient allreduces after backward "
        "(where communication hooks show what they save), as in each study's scaling.md. peak "
        "MiB/rank (runs with --log-device-stats, as slurm/scaling.sh --strategies makes them): "
        "the most any rank's tensors held, on the GPU or the CPU (what a sharding strategy saves).")
    for name, (_, missing) in zip(names, collected):
        if missing:
            text.append(f"\nNot in the table from {name}: " +
                        "; ".join(f"{n} ({why})" for n, why in missing) + ".")
    return "\n".join(text) + "\n"


def plot_compare(names, collected, path):
    plt = pyplot(path)
    if plt is None:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, (name, (results, _)) in enumerate(zip(names, collected)):
        ranks = [r["ranks"] for r in results]
        left.plot(ranks, [r["ips"] for r in results], "o-", color=f"C{k}", label=name)
        right.plot(ranks, [r["efficiency"] for r in results], "o-", color=f"C{k}", label=name)
    right.axhline(1.0, linestyle="--", color="gray", label="ideal")
    left.set(xscale="log", yscale="log", xlabel="ranks", ylabel="images/s (all ranks)",
             title="Throughput")
    right.set(xscale="log", ylim=(0, 1.15), xlabel="ranks",
              ylabel="efficiency = speed-up / (ranks ratio)", title="Scaling efficiency")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("Scaling studies compared")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", nargs="+",
                    help="the study folder (slurm/scaling.sh --study-dir; logs/<study>); several "
                         "to compare them")
    ap.add_argument("--out", help="with several studies: where comparison.md and .png go "
                                  "(default: the first study's folder)")
    ap.add_argument("--no-plot", action="store_true", help="write the table only")
    args = ap.parse_args()
    if len(args.study) > 1:
        collected = [collect(s) for s in args.study]
        out = args.out or args.study[0]
        os.makedirs(out, exist_ok=True)
        md = compare(args.study, collected)
        with open(os.path.join(out, "comparison.md"), "w") as f:
            f.write(md)
        print(md, end="")
        print(f"\nwrote {os.path.join(out, 'comparison.md')}", file=sys.stderr)
        png = os.path.join(out, "comparison.png")
        names = [study_name(s, rs) for s, (rs, _) in zip(args.study, collected)]
        if not args.no_plot and plot_compare(names, collected, png):
            print(f"wrote {png}", file=sys.stderr)
        return
    study = args.study[0]
    results, missing = collect(study)
    md = describe(study, results, missing)
    with open(os.path.join(study, "scaling.md"), "w") as f:
        f.write(md)
    print(md, end="")
    print(f"\nwrote {os.path.join(study, 'scaling.md')}", file=sys.stderr)
    png = os.path.join(study, "scaling.png")
    if not args.no_plot and plot(study, results, png):
        print(f"wrote {png}", file=sys.stderr)


if __name__ == "__main__":
    main()
