#!/usr/bin/env python3
"""mlai and PyTorch training steps side by side: Markdown tables from step-benchmark JSONL files.

    build/bench/mlai_bench_step --device cuda --precision 32,16,bf16 --out step.jsonl
    python3 bench/reference_step.py --out step.jsonl
    python3 bench/step_report.py step.jsonl [more.jsonl ...] [--target 1.2]

Reads JSON lines from mlai_bench_step ("impl": "mlai", with precision "32", "16" or "bf16") and
from bench/reference_step.py ("impl": "torch", with mode); both carry arch, batch,
images_per_sec, step_ms, peak_mem_mb and device_name. Lines that are not JSON objects are
ignored, and so are lines with neither impl.

Output, on stdout: one table per (device_name, arch, batch), headed
"### <arch>, batch <B>, <device_name>", with a row per mlai precision (32, 16, bf16) and per
PyTorch mode (eager, eager-tf32, amp, amp-cl, bf16, compile-amp), in that order, and the
columns images/s, step ms, peak MiB, "mlai fp16 / this" (mlai --precision 16's images/s divided
by the row's), TFLOP/s (the row's images/s times the model's FLOPs per image as mlai counts them,
torch's FlopCounterMode's count: so PyTorch's rows get the same work per image) with mlai's MFU
where the card's peak is known, runs (the lines a row is the median of) and mlai's step
breakdown (forward, backward, optimizer ms); a run that failed or was skipped shows
its message instead. Then one summary line per (device_name, arch, batch):

    resnet18_cifar b256 (NVIDIA H100 80GB HBM3): mlai 16 / torch amp = 1.31x  PASS (target >= 1.2x);
    best torch float16 mode: amp-cl 1.08x

PASS when mlai --precision 16 is at least --target times PyTorch eager AMP, SHORT when not, n/a
when either is missing. Exit status 0 (1 when no file could be read).
"""
import argparse
import json
import statistics
import sys

MLAI_ROWS = ("32", "32 tf32", "16", "bf16")
TORCH_ROWS = ("eager", "eager-tf32", "amp", "amp-cl", "bf16", "compile-amp")
TORCH_FP16 = ("amp", "amp-cl", "compile-amp")


def read_lines(paths):
    records = []
    for path in paths:
        try:
            with open(path) as f:
                for line in f:
                    try:
                        j = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(j, dict) and j.get("impl") in ("mlai", "torch"):
                        records.append(j)
        except OSError as e:
            print(f"step_report.py: cannot read {path}: {e.strerror}", file=sys.stderr)
    return records


def row_key(j):
    # --freeze (fine-tuning) runs: rows of their own, in both engines.
    frozen = "" if j.get("freeze", "none") == "none" else " frozen " + j["freeze"]
    if j["impl"] == "torch":
        return ("torch", j.get("mode") + frozen)
    # mlai_bench_step --fusion off|both, --cuda-graphs and --activation-checkpointing: rows of
    # their own.
    # --float32-matmul-precision high|medium: "32 tf32" / "32 bf16-matmul".
    mm = {"high": " tf32", "medium": " bf16-matmul"}.get(j.get("float32_matmul_precision"), "")
    mm += "" if j.get("cudnn_benchmark", True) else " heuristic"  # --cudnn-benchmark false
    return ("mlai", str(j.get("precision")) + mm + ("" if j.get("fusion", True) else " unfused")
            + (" graphs" if j.get("cuda_graphs") else "")
            + (" ckpt" if j.get("activation_checkpointing") else "") + frozen)


def group(records):
    """{(device_name, arch, batch): {(impl, row): [lines]}}, the tables in first-seen order.

    Skipped and error lines carry no device_name when they come from mlai; they join the table
    of the same arch and batch that has timings (the first such device)."""
    tables = {}
    for j in records:
        if "images_per_sec" in j:
            key = (j.get("device_name", "?"), j.get("arch"), j.get("batch"))
            tables.setdefault(key, {}).setdefault(row_key(j), []).append(j)
    for j in records:
        if "images_per_sec" not in j:
            key = (j.get("device_name", "?"), j.get("arch"), j.get("batch"))
            if key not in tables:
                key = next((k for k in tables if k[1:] == key[1:]), key)
            tables.setdefault(key, {}).setdefault(row_key(j), []).append(j)
    return tables


def summarize(lines):
    """Median images/s, step ms and peak MiB of the timed lines, or the message of the others."""
    timed = [j for j in lines if "images_per_sec" in j]
    if not timed:
        j = lines[-1]
        return {"message": "error: " + j["error"] if "error" in j
                else "skipped: " + str(j.get("skipped", "no timings")), "runs": len(lines)}
    mem = [j["peak_mem_mb"] for j in timed if j.get("peak_mem_mb") is not None]
    phases = [j for j in timed if "forward_ms" in j]  # mlai's step breakdown
    split = None
    if phases:
        split = tuple(statistics.median(j[f] for j in phases)
                      for f in ("forward_ms", "backward_ms", "optimizer_ms"))
    host = [j["host_ms"] for j in timed if "host_ms" in j]  # the host's time to issue a step
    gflop = [j["gflop_per_image"] for j in timed if j.get("gflop_per_image")]
    mfu = [j["mfu"] for j in timed if j.get("mfu") is not None]
    return {"ips": statistics.median(j["images_per_sec"] for j in timed),
            "gflop": statistics.median(gflop) if gflop else None,
            "mfu": statistics.median(mfu) if mfu else None,
            "ms": statistics.median(j["step_ms"] for j in timed),
            "host": statistics.median(host) if host else None,
            "mem": statistics.median(mem) if mem else None, "runs": len(timed),
            "learned": all(j.get("learned", True) for j in timed), "split": split}


def ordered_rows(rows):
    order = [("mlai", p) for p in MLAI_ROWS] + [("torch", m) for m in TORCH_ROWS]
    return [k for k in order if k in rows] + [k for k in rows if k not in order]


def table(key, rows):
    device, arch, batch = key
    stats = {k: summarize(v) for k, v in rows.items()}
    ref = stats.get(("mlai", "16"), {}).get("ips")
    # The model's FLOPs per image, for the rows that do not count them (PyTorch's): mlai's
    # count of an unfrozen run (frozen layers skip their filter gradients).
    counted = [v["gflop"] for k, v in stats.items()
               if k[0] == "mlai" and "frozen" not in k[1] and v.get("gflop")]
    model_gflop = counted[0] if counted else None
    out = [f"### {arch}, batch {batch}, {device}", "",
           "| run | images/s | step ms | host ms | peak MiB | mlai fp16 / this | TFLOP/s (MFU) "
           "| runs | fwd / bwd / opt ms |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for k in ordered_rows(rows):
        s = stats[k]
        name = f"mlai --precision {k[1]}" if k[0] == "mlai" else f"torch {k[1]}"
        if "message" in s:
            out.append(f"| {name} | {s['message'][:120]} | | | | | | {s['runs']} | |")
            continue
        mem = "-" if s["mem"] is None else f"{s['mem']:.0f}"
        ratio = f"{ref / s['ips']:.2f}x" if ref else "-"
        flag = "" if s["learned"] else " (loss did not fall)"
        split = " / ".join(f"{v:.2f}" for v in s["split"]) if s["split"] else ""
        host = "-" if s["host"] is None else f"{s['host']:.3f}"
        gflop = s["gflop"] or (model_gflop if "frozen" not in k[1] else None)
        tflops = "-" if gflop is None else f"{s['ips'] * gflop * 1e-3:.3g}"
        if s["mfu"] is not None:
            tflops += f" ({100 * s['mfu']:.1f}%)"
        out.append(f"| {name}{flag} | {s['ips']:.0f} | {s['ms']:.3f} | {host} | {mem} | {ratio} "
                   f"| {tflops} | {s['runs']} | {split} |")
    return "\n".join(out), stats


def summary_line(key, stats, target):
    device, arch, batch = key
    head = f"{arch} b{batch} ({device}): mlai 16 / torch amp = "
    ips = {k: s["ips"] for k, s in stats.items() if "ips" in s}
    mlai16, amp = ips.get(("mlai", "16")), ips.get(("torch", "amp"))
    if not mlai16 or not amp:
        missing = " and ".join(n for n, v in (("mlai --precision 16", mlai16), ("torch amp", amp))
                               if not v)
        return head + f"n/a ({missing} missing)"
    ratio = mlai16 / amp
    line = head + f"{ratio:.2f}x  {'PASS' if ratio >= target else 'SHORT'} (target >= {target}x)"
    fp16 = [(ips[("torch", m)], m) for m in TORCH_FP16 if ("torch", m) in ips]
    if fp16:
        best, mode = max(fp16)
        line += f"; best torch float16 mode: {mode} {mlai16 / best:.2f}x"
    return line


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", help="JSONL files from mlai_bench_step and reference_step.py")
    p.add_argument("--target", type=float, default=1.2,
                   help="mlai --precision 16 over torch amp images/s that counts as PASS")
    args = p.parse_args()
    records = read_lines(args.files)
    if not records:
        print("step_report.py: no mlai or torch step-benchmark lines in " + ", ".join(args.files))
        return 1
    tables = group(records)
    summaries = []
    for key, rows in tables.items():
        text, stats = table(key, rows)
        print(text + "\n")
        summaries.append(summary_line(key, stats, args.target))
    print("\n".join(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
