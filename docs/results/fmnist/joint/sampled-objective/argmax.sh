#!/bin/bash
# Evaluates the learned agents of the sampled-objective run (chosen on D_V under the
# objective with yhat drawn from C_k) with the argmax prediction on the test images, and
# packs the per-image outcomes into argmax_outcomes.jsonl.gz (the run's outcomes format:
# `cascade paired argmax_outcomes.jsonl.gz#agents/NAME ...` reads it).
# Usage: docs/results/fmnist/joint/sampled-objective/argmax.sh RUN_DIR [CASCADE_BIN]
set -euo pipefail
run=$1
bin=${2:-target/release/cascade}
here=$(dirname "$0")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for a in reinforce-frozen reinforce-joint reinforce-joint-lr0 expected-joint expected-joint-lr0; do
    for s in 0 1 2; do
        d=fashion-mnist__${a}__budget0.18__seed$s
        # The frozen learner's folder names no cascade: the run's (a joint agent has its own).
        cascade=()
        [ "$a" = reinforce-frozen ] && cascade=(--cascade "$run/cascade")
        "$bin" eval --agent-dir "$run/agents/$d" "${cascade[@]}" --prediction argmax \
            --split test --out "$tmp/$d/" > /dev/null 2>&1
    done
done
python3 - "$tmp" "$here/argmax_outcomes.jsonl.gz" <<'PY'
import glob, gzip, json, os, sys
src, out = sys.argv[1], sys.argv[2]
with gzip.open(out + ".tmp", "wt") as f:
    for p in sorted(glob.glob(os.path.join(src, "*", "eval_test.json"))):
        name = "agents/" + os.path.basename(os.path.dirname(p))
        report = json.load(open(p))
        f.write(json.dumps({"name": name, "report": report}, separators=(",", ":")) + "\n")
        print(f"{name}: argmax test error {100 * report['error']:.2f}% at {report['cost_pct_mean']:.2f}% FLOPs")
os.replace(out + ".tmp", out)
PY
