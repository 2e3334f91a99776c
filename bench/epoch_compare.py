#!/usr/bin/env python3
"""One real training epoch per model: `cascade bench --epoch` against
bench/pytorch_epoch.py, alternated within one run; prints a Markdown table.

Each repeat runs, for every model, one epoch in the project (a fresh
`cascade bench --epoch --model M --json` process: the training loop
pretraining uses) and one in PyTorch (a fresh bench/pytorch_epoch.py
process) with the same recipe (the one the project printed), the same
data set and the same thread count; the order of the two sides alternates
from repeat to repeat. Ratios project/PyTorch are taken within a repeat,
so background load hits both sides alike, and the table reports medians
over the repeats. Reading and splitting the data set is not timed. Each
side also times one more pass over the validation split in inference mode
after its epoch (the inference columns: real images at the recipe's eval
batch size, every shape already run once).

Usage:
    python3 bench/epoch_compare.py --bin target/release/cascade \\
        --python /path/to/venv/bin/python [--models resnet-8,resnet-20] \\
        [--threads 2] [--repeats 3] [--preset fmnist-4] [--data-dir DIR] \\
        [--max-train N] [--torch-env OMP_WAIT_POLICY=PASSIVE]

Models outside the preset (resnet-8) train with the recipe of the preset's
last stage (for fmnist-4: SGD with Nesterov momentum, crops and flips).
--torch-env sets environment variables for the PyTorch side only: on a
machine with other load, PyTorch's OpenMP threads spin-wait at every
barrier and an epoch can take several times longer than with
OMP_WAIT_POLICY=PASSIVE.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
    return p.stdout


def project(a, model, env):
    cmd = [a.bin, "bench", "--epoch", "--preset", a.preset, "--model", model, "--threads", str(a.threads),
           "--json"]
    if a.data_dir:
        cmd += ["--data-dir", a.data_dir]
    if a.max_train:
        cmd += ["--max-train", str(a.max_train)]
    out = json.loads(run(cmd, env))
    e = out["epochs"][0]
    return {**e["result"], "recipe_of_stage": e["recipe_of_stage"]}


def pytorch(a, model, recipe, env):
    cmd = [a.python, os.path.join(HERE, "pytorch_epoch.py"), "--model", model, "--threads", str(a.threads),
           "--recipe", json.dumps(recipe), "--json"]
    if a.data_dir:
        cmd += ["--data-dir", a.data_dir]
    if a.max_train:
        cmd += ["--max-train", str(a.max_train)]
    env = {**env, **dict(kv.split("=", 1) for kv in a.torch_env)}
    lines = [line for line in run(cmd, env).splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def load_avg():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def table(a, rows, note):
    """Prints the Markdown table of `rows` (model -> [(project, pytorch)] per repeat)."""
    med = statistics.median
    models = [m for m in rows if rows[m]]
    repeats = max(len(rows[m]) for m in models)
    torch_version = rows[models[0]][0][1].get("torch", "?")
    first = rows[models[0]][0][0]
    print(f"{a.preset} data, {first['train_images']} training and {first['val_images']} validation images; "
          f"{a.threads} threads each side; PyTorch {torch_version}"
          f"{' with ' + ' '.join(a.torch_env) if a.torch_env else ''}; {platform.machine()}; "
          f"medians over up to {repeats} repeats (ratios within a repeat); {note}")
    print()
    print("| model | recipe | steps | project train s/epoch | PyTorch train s/epoch | project / PyTorch "
          "| project epoch s (with validation) | PyTorch epoch s | project / PyTorch "
          "| project inference img/s | PyTorch inference img/s | project / PyTorch (img/s) | repeats |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in models:
        ps, ts = [p for p, _ in rows[m]], [t for _, t in rows[m]]
        rec = ps[0]["recipe"]
        opt = rec["optimizer"]
        desc = f"stage {ps[0]['recipe_of_stage']}: {opt['kind']}, batch {rec['batch_size']}"
        if rec["augment"]["crop_padding"] or rec["augment"]["hflip"]:
            desc += f", crop {rec['augment']['crop_padding']}" + (" + flip" if rec["augment"]["hflip"] else "")
        ratio = med(p["train_s"] / t["train_s"] for p, t in rows[m])
        ratio_e = med(p["epoch_s"] / t["epoch_s"] for p, t in rows[m])
        ratio_i = med(p["infer_img_per_s"] / t["infer_img_per_s"] for p, t in rows[m])
        print(f"| {m} | {desc} | {ps[0]['steps']} | {med(p['train_s'] for p in ps):.2f} | "
              f"{med(t['train_s'] for t in ts):.2f} | {ratio:.2f} | {med(p['epoch_s'] for p in ps):.2f} | "
              f"{med(t['epoch_s'] for t in ts):.2f} | {ratio_e:.2f} | "
              f"{med(p['infer_img_per_s'] for p in ps):.0f} | {med(t['infer_img_per_s'] for t in ts):.0f} | "
              f"{ratio_i:.2f} | {len(ps)} |")
    print()
    print(f"inference: one more pass over the {first['val_images']} validation images after the epoch, in "
          f"eval mode at the recipe's eval batch size, timed alone (every shape seen once already)")
    print("each repeat (project / PyTorch train s):",
          "; ".join(f"{m}: " + ", ".join(f"{p['train_s']:.2f}/{t['train_s']:.2f}" for p, t in rows[m])
                    for m in models))
    print("each repeat (project / PyTorch inference img/s):",
          "; ".join(f"{m}: " + ", ".join(f"{p['infer_img_per_s']:.0f}/{t['infer_img_per_s']:.0f}"
                                         for p, t in rows[m])
                    for m in models))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="the built cascade binary (release)")
    ap.add_argument("--python", default=sys.executable, help="a Python with torch")
    ap.add_argument("--models", default="resnet-8,resnet-20")
    ap.add_argument("--preset", default="fmnist-4")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-train", type=int, default=None, help="at most this many training images (quick runs)")
    ap.add_argument("--out", help="also write every repeat's raw results here (JSON)")
    ap.add_argument("--table-from", metavar="JSON", help="only print the table of a file --out wrote")
    ap.add_argument("--torch-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment variable for the PyTorch side only (repeatable)")
    a = ap.parse_args()
    if any("=" not in kv for kv in a.torch_env):
        sys.exit("--torch-env takes KEY=VALUE")
    if a.table_from:
        with open(a.table_from) as f:
            table(a, json.load(f), f"from {a.table_from}")
        return

    if not a.bin:
        sys.exit("--bin is required (the built cascade binary)")
    env = dict(os.environ)
    # CANDLE_NUM_THREADS is left to the program (cascade_rl::threads: candle's
    # elementwise ops on the calling thread, rayon's pool computing).
    for var in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(a.threads)
    models = a.models.split(",")
    rows = {m: [] for m in models}  # model -> [(project, pytorch)] per repeat
    loads = [load_avg()]
    started = time.time()
    for r in range(a.repeats):
        for m in models:
            if r % 2 == 0 or not rows[m]:
                p = project(a, m, env)
                t = pytorch(a, m, p["recipe"], env)
            else:
                t = pytorch(a, m, rows[m][0][0]["recipe"], env)
                p = project(a, m, env)
            rows[m].append((p, t))
            if a.out:
                with open(a.out, "w") as f:
                    json.dump(rows, f, indent=1)
            print(f"repeat {r + 1}/{a.repeats} {m}: project {p['train_s']:.1f} s, pytorch {t['train_s']:.1f} s "
                  f"(load {load_avg()})", file=sys.stderr)
        loads.append(load_avg())

    table(a, rows, f"load average {' -> '.join(loads)}; {time.time() - started:.0f} s in all")

if __name__ == "__main__":
    main()
