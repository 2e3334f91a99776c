#!/usr/bin/env python3
"""One REINFORCE epoch of the stopping policy: `cascade bench --policy`
against bench/pytorch_policy_epoch.py, alternated within one run; prints a
Markdown table.

Each repeat runs one epoch in the project (a fresh `cascade bench --policy
--json` process: the agents' own training loop on a replay trace with the
preset cascade's shapes) and one in PyTorch (a fresh process, the same
algorithm, shapes and settings, taken from the project's JSON), in an order
that alternates from repeat to repeat. Ratios project/PyTorch are taken
within a repeat and the table reports medians.

Usage:
    python3 bench/policy_compare.py --bin target/release/cascade \\
        --python /path/to/venv/bin/python [--preset fmnist-4] [--samples 8100] \\
        [--threads 2] [--repeats 5]
"""
import argparse
import json
import os
import platform
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from epoch_compare import run  # noqa: E402  (one subprocess helper for both drivers)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the built cascade binary (release)")
    ap.add_argument("--python", default=sys.executable, help="a Python with torch")
    ap.add_argument("--preset", default="fmnist-4")
    ap.add_argument("--samples", type=int, default=8100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    env = dict(os.environ)
    for var in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(a.threads)
    cmd = [a.bin, "bench", "--policy", "--preset", a.preset, "--samples", str(a.samples),
           "--threads", str(a.threads), "--json"]
    spec = None
    pairs = []
    for r in range(a.repeats):
        sides = ["project", "pytorch"] if r % 2 == 0 else ["pytorch", "project"]
        got = {}
        for side in sides:
            if side == "project" or spec is None:
                p = json.loads(run(cmd, env))
                spec = spec or p
                if side == "project":
                    got["project"] = p
                    continue
            out = run([a.python, os.path.join(HERE, "pytorch_policy_epoch.py"), "--spec", json.dumps(spec),
                       "--threads", str(a.threads), "--json"], env)
            got["pytorch"] = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
        pairs.append((got["project"], got["pytorch"]))
        print(f"repeat {r + 1}/{a.repeats}: project {got['project']['train_s']:.3f} s, "
              f"pytorch {got['pytorch']['train_s']:.3f} s", file=sys.stderr)
    med = statistics.median
    cfg = spec["config"]
    print(f"policy of preset {a.preset}: {len(spec['feature_dims'])} stages, feature widths "
          f"{spec['feature_dims']}, {spec['num_classes']} classes, hidden {cfg['hidden']}, "
          f"baseline {cfg['baseline']['kind']}; {a.samples} trajectories in {spec['steps']} steps of "
          f"{cfg['batch_size']}; {a.threads} threads each side; PyTorch {pairs[0][1].get('torch', '?')}; "
          f"{platform.machine()}; medians over {a.repeats} repeats (ratios within a repeat)")
    print()
    print("| what | project s/epoch | PyTorch s/epoch | project / PyTorch | repeats |")
    print("|---|---:|---:|---:|---:|")
    print(f"| REINFORCE epoch of the stopping policy | {med(p['train_s'] for p, _ in pairs):.3f} | "
          f"{med(t['train_s'] for _, t in pairs):.3f} | {med(p['train_s'] / t['train_s'] for p, t in pairs):.2f} | "
          f"{len(pairs)} |")
    print()
    print("each repeat (project / PyTorch s):",
          ", ".join(f"{p['train_s']:.3f}/{t['train_s']:.3f}" for p, t in pairs))


if __name__ == "__main__":
    main()
