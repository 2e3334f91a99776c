#!/usr/bin/env python3
# Usage: python3 docs/results/fmnist/joint/curves.py docs/results/fmnist/joint/cascade0/train_logs.csv.gz
import csv, gzip, sys, statistics as st
from collections import defaultdict
# mean validation error over the epochs, and at the last epoch, per arm and budget (mean over
# seeds); and the error of the training rollouts (yhat drawn from C_k, the slides' objective)
# at the first and the last epoch


def read_logs(path):
    # train_logs.csv.gz (agent_dir,epoch,metric,value) as {agent_dir: {epoch: {metric: value}}}
    logs = defaultdict(lambda: defaultdict(dict))
    for r in csv.DictReader(gzip.open(path, 'rt')):
        logs[r['agent_dir']][int(r['epoch'])][r['metric']] = float(r['value'])
    return logs


def main(path):
    logs = read_logs(path)
    rows = defaultdict(list)
    for d, ep in logs.items():
        name = d.split('__')
        if len(name) < 4 or 'joint' not in name[1]:
            continue
        e = [100 * ep[k]['val/error'] for k in sorted(ep)]
        c = [100 * ep[k]['val/cost'] for k in sorted(ep)]
        t = [100 * ep[k]['charts/error'] for k in sorted(ep)]
        rows[(name[1], name[2])].append((st.mean(e), e[-1], c[-1], t[0], t[-1]))
    for (a, b), v in sorted(rows.items(), key=lambda x: (x[0][1], x[0][0])):
        print(f"{a:28s} {b:12s} seeds {len(v)}  val error mean over epochs {st.mean(x[0] for x in v):.2f}  last epoch {st.mean(x[1] for x in v):.2f} @ {st.mean(x[2] for x in v):.1f}% FLOPs"
              f"  training rollouts {st.mean(x[3] for x in v):.2f} -> {st.mean(x[4] for x in v):.2f}")


if __name__ == '__main__':
    main(sys.argv[1])
