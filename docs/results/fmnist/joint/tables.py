#!/usr/bin/env python3
# Usage: python3 docs/results/fmnist/joint/tables.py docs/results/fmnist/joint/cascade{0,1,2}
# The main arm's table of README.md and the one of the lr a choice on D_V makes
# (`reinforce-joint-clr-low`, where it ran), one block of rows per cascade, read from each
# cascade's summary.md (written by the study; every number there recomputes from
# results.csv and outcomes.jsonl.gz) and train_logs.csv.gz.
import csv, os, re, statistics as st, sys
from collections import defaultdict

from curves import read_logs  # beside this file


def section(text, title):
    m = re.search(r"^## " + re.escape(title) + r"\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    return m.group(1) if m else ""


def table_rows(block):
    for line in block.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            yield [c.strip() for c in line.strip("|").split("|")]


def val_curves(path):
    logs = read_logs(path)
    out = defaultdict(list)
    for d, ep in logs.items():
        parts = d.split("__")
        if len(parts) < 4:
            continue
        out[(parts[1], parts[2])].append(st.mean(100 * ep[k]["val/error"] for k in ep))
    return {k: st.mean(v) for k, v in out.items()}


def cells(d):
    text = open(os.path.join(d, "summary.md")).read()
    cell = {}
    for r in table_rows(section(text, "Ablations")):
        if len(r) == 7 and r[2].startswith("budget "):
            cell[(r[0], r[2].split()[1])] = f"{r[4]} @ {r[5]}"
    paired = defaultdict(dict)
    for r in table_rows(section(text, "Paired tests on the test images")):
        m = re.match(r"(REINFORCE joint|reinforce-joint-clr-low) at budget (\S+)", r[0])
        if m:
            paired[m.group(1)][m.group(2)] = r
    best = defaultdict(list)
    for r in csv.DictReader(open(os.path.join(d, "results.csv"))):
        best[(r["agent"], r["budget"])].append(r["best_epoch"])
    curves = val_curves(os.path.join(d, "train_logs.csv.gz"))
    seed = re.sub(r"\D", "", os.path.basename(d.rstrip("/")))
    return seed, cell, paired, best, curves


def rows(arm):
    # every (cascade, budget) at which `arm` has paired tests, with that cascade's files
    for d in sys.argv[1:]:
        seed, cell, paired, best, curves = cells(d)
        for b, p in sorted(paired[arm].items(), key=lambda x: float(x[0])):
            yield seed, b, p, cell, best, curves


print("| cascade | budget | frozen learner (the start) | `reinforce-joint` | its `-lr0` twin "
      "| joint minus twin | joint minus frozen | joint minus `ann` | val error over the epochs: joint / twin |")
print("|---:|---:|---|---|---|---|---|---|---|")
for seed, b, p, cell, best, curves in rows("REINFORCE joint"):
    j = curves.get(("reinforce-joint", f"budget{b}"), float("nan"))
    t = curves.get(("reinforce-joint-lr0", f"budget{b}"), float("nan"))
    print(f"| {seed} | {b} | {cell.get(('reinforce-frozen', b), 'n/a')} | "
          f"{cell.get(('reinforce-joint', b), 'n/a')} | {cell.get(('reinforce-joint-lr0', b), 'n/a')} | "
          f"{p[4]} | {p[5]} | {p[2]} | {j:.2f} / {t:.2f} |")

print()
print("| cascade | budget | `reinforce-joint-clr-low` | minus its twin | minus the frozen learner "
      "| kept the start (best epoch 0) | val error over the epochs: clr-low / twin / main arm |")
print("|---:|---:|---|---|---|---:|---|")
for seed, b, p, cell, best, curves in rows("reinforce-joint-clr-low"):
    kept = best[("reinforce-joint-clr-low", b)]
    c = [curves.get((a, f"budget{b}"), float("nan"))
         for a in ("reinforce-joint-clr-low", "reinforce-joint-lr0", "reinforce-joint")]
    print(f"| {seed} | {b} | {cell.get(('reinforce-joint-clr-low', b), 'n/a')} | {p[4]} | {p[5]} | "
          f"{kept.count('0')} of {len(kept)} | {c[0]:.2f} / {c[1]:.2f} / {c[2]:.2f} |")
