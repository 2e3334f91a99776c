#!/usr/bin/env python3
"""Runs examples/ops_bench.rs and bench/pytorch_step.py alternately and prints
one Markdown table of training-step times, inference throughput and ratios.

Each repeat runs the candle benchmark (all paths) and then the PyTorch one,
back to back, with the same thread count; ratios are taken within a repeat
(so background load hits both sides alike) and the table reports medians
over the repeats.

Usage:
    python3 bench/ops_compare.py --bin target/release/examples/ops_bench \\
        --python /path/to/venv/bin/python [--threads 2] [--repeats 3] [--steps 20]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd, env):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the built ops_bench example")
    ap.add_argument("--python", default=sys.executable, help="a Python with torch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--models", default="mlp,cnn,resnet8")
    ap.add_argument("--infer-batch", type=int, default=128, help="images per inference batch (training: 128)")
    a = ap.parse_args()

    env = dict(os.environ)
    env["RAYON_NUM_THREADS"] = str(a.threads)
    env["OMP_NUM_THREADS"] = str(a.threads)
    env["MKL_NUM_THREADS"] = str(a.threads)

    rows = {}  # (model, lib) -> list of (train_ms, img_s), one per repeat
    for r in range(a.repeats):
        candle = run_json([a.bin, str(a.steps), "1", a.models, f"--infer-batch={a.infer_batch}", "--json"], env)
        torch = run_json(
            [a.python, os.path.join(HERE, "pytorch_step.py"), "--threads", str(a.threads),
             "--steps", str(a.steps), "--rounds", "1", "--models", a.models,
             "--infer-batch", str(a.infer_batch), "--json"],
            env,
        )
        for row in candle + torch:
            rows.setdefault((row["model"], row["lib"]), []).append(
                (row["train_ms"], row["infer_img_s"], row["train_cpu_ms"]))
        print(f"repeat {r + 1}/{a.repeats} done", file=sys.stderr)

    med = statistics.median
    load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"
    print(f"threads {a.threads}, batch 128 (inference {a.infer_batch}), 1x28x28, AdamW; medians over {a.repeats} repeats; "
          f"load average at the end {load}")
    print()
    print("| model | library | train ms/step | x PyTorch | train CPU ms/step | x PyTorch (CPU) "
          "| inference img/s | x PyTorch (img/s) |")
    print("|---|---|---|---|---|---|---|---|")
    for model in a.models.split(","):
        torch_rows = rows.get((model, "pytorch"), [])
        for (m, lib), vals in sorted(rows.items()):
            if m != model:
                continue
            ratio_t = med([v[0] / t[0] for v, t in zip(vals, torch_rows)]) if torch_rows else float("nan")
            ratio_i = med([v[1] / t[1] for v, t in zip(vals, torch_rows)]) if torch_rows else float("nan")
            ratio_c = med([v[2] / t[2] for v, t in zip(vals, torch_rows)]) if torch_rows else float("nan")
            print(f"| {model} | {lib} | {med(v[0] for v in vals):.2f} | {ratio_t:.2f} | "
                  f"{med(v[2] for v in vals):.2f} | {ratio_c:.2f} | "
                  f"{med(v[1] for v in vals):.0f} | {ratio_i:.2f} |")


if __name__ == "__main__":
    main()
