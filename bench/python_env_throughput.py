#!/usr/bin/env python3
"""Env-steps/s of the `cascade_env` native vector env against the
numpy-vectorised pure-Python VectorEnv and the Rust `VecEnv`.

The same work on every side, as in `bench/README-env.md`: CascadeStopping-v0
replayed from one trace file, 1024 sub-envs, same-step autoreset, argmax
prediction, 0-1 loss, cumulative cost, alpha 0.1, and the policy "stop once
the top probability exceeds 0.9, or at the last stage" computed inside the
timed loop.

* `native`: `gymnasium.make_vec("CascadeStopping-v0", vectorization_mode=
  "vector_entry_point", ...)`: the timed loop in Python, the policy in
  numpy, the step in Rust (GIL released, results in fresh numpy arrays).
* `reuse`: the same with `copy=False` (the output arrays are reused).
* `numpy`: `CascadeStoppingVectorEnv` of `bench/env_throughput.py`, the
  hand-vectorised pure-Python VectorEnv (the trace read with
  `cascade_env.load_trace`, so safetensors need not be installed).
* `rust`: the example `vec_throughput` of cascade-env (its own loop and
  policy in Rust), run as a subprocess on the same trace.

The policy's test `top > 0.9` is computed as "the number of probabilities
above 0.9 is not 0", `np.dot(probs > 0.9, ones(C)) > 0`: the same test,
and on float32 `[1024, 10]` about 10x faster in numpy than
`probs.max(axis=1) > 0.9` (42 us: numpy reduces a short last axis slowly).
It returns the actions as a bool array (True = forward). Both Python sides
use it.

Each repeat runs the three sides one after the other, in alternating order;
the medians over the repeats are compared. Rates are per wall second and
per CPU second of the stepping thread (the Rust step runs on that thread
too); on a shared machine compare the CPU figures.

Usage, after `scripts/test-python.sh` (or `pip install ./python`):

    .venv-py/bin/python bench/python_env_throughput.py [TRACE] [--batch 1024]
        [--seconds 3] [--repeats 3] [--rust-bin PATH]

Without TRACE the synthetic trace of 10000 samples (widths 16/32/64, 10
classes, seed 0: the one `vec_throughput --write-synthetic` writes) is
written to a temporary folder. Without --rust-bin, `cargo build --release
-p cascade-env --example vec_throughput` builds the Rust side.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

import cascade_env

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
THRESHOLD = 0.9


def load_reference_module():
    """bench/env_throughput.py, with its trace reader swapped for cascade_env's."""
    if importlib.util.find_spec("safetensors") is None:
        # The module imports safetensors at the top; it is not used here.
        stub = types.ModuleType("safetensors")
        stub.safe_open = None
        stub_np = types.ModuleType("safetensors.numpy")
        stub_np.load_file = None
        stub.numpy = stub_np
        sys.modules["safetensors"] = stub
        sys.modules["safetensors.numpy"] = stub_np
    spec = importlib.util.spec_from_file_location("env_throughput", HERE / "env_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def load_trace(path):
        tr = cascade_env.load_trace(path)
        return tr.header, tr.features, tr.probs, tr.labels, tr.costs

    module.load_trace = load_trace
    return module


def policy(obs, k):
    """Forward (True) unless the top probability exceeds 0.9 or the stage is the last."""
    probs = obs["probs"]
    confident = np.dot(probs > THRESHOLD, np.ones(probs.shape[1], dtype=np.float32)) > 0
    return ~confident & (obs["stage"] != k - 1)


def measure(venv, k, n, seconds):
    """(env-steps per wall s, per CPU s, mean return of finished episodes)."""
    obs, _ = venv.reset(seed=0)
    for _ in range(20):
        obs, *_ = venv.step(policy(obs, k))
    steps, episodes, ret = 0, 0, 0.0
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    while True:
        for _ in range(16):
            obs, reward, term, trunc, info = venv.step(policy(obs, k))
            # Only stopping pays a reward, so the sum over all sub-envs is
            # the sum over the episodes that ended.
            episodes += np.count_nonzero(term)
            ret += float(reward.sum())
        steps += 16
        wall = time.perf_counter() - wall0
        if wall >= seconds:
            break
    cpu = time.thread_time() - cpu0
    return steps * n / wall, steps * n / cpu, ret / max(episodes, 1)


def rust_binary(path: str | None) -> str:
    if path:
        return path
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "cascade-env", "--example", "vec_throughput"],
        cwd=REPO,
        check=True,
    )
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return str(Path(json.loads(meta.stdout)["target_directory"]) / "release" / "examples" / "vec_throughput")


def measure_rust(binary, trace, n, seconds):
    out = subprocess.run(
        [binary, str(trace), "--batch", str(n), "--seconds", str(seconds)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wall = float(re.search(r"rust_env_steps_per_wall_s=(\S+)", out).group(1))
    cpu = float(re.search(r"rust_env_steps_per_cpu_s=(\S+)", out).group(1))
    ret = float(re.search(r"mean return (\S+)", out.split("VecEnv batch")[1]).group(1))
    return wall, cpu, ret


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace", nargs="?")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rust-bin", default=None, help="the vec_throughput example binary")
    a = ap.parse_args()
    if a.repeats < 3:
        ap.error("--repeats must be at least 3 (the medians need them)")
    tmp = tempfile.TemporaryDirectory()
    trace = a.trace
    if trace is None:
        trace = os.path.join(tmp.name, "synthetic-10k.safetensors")
        cascade_env.write_synthetic_trace(trace, num_samples=10_000, seed=0)
    binary = rust_binary(a.rust_bin)
    ref = load_reference_module()
    tr = ref.Trace(trace, 0.1)
    k, n = tr.k, a.batch
    h = tr.header
    print(f"trace: {h['dataset']} / {h['split']} / {h['cascade']}, N = {tr.n}, C = {tr.c}, feature widths {tr.dims}")
    print(f"python {sys.version.split()[0]}, gymnasium {gym.__version__}, numpy {np.__version__}, cascade_env {cascade_env.__version__}")
    r, err, cost = ref.exact_mean_return(tr)
    print(f"exact (whole split, alpha 0.1): mean return {r:.6f}, error {err:.4f}, mean cost {cost:.4f}")
    native = gym.make_vec(
        "CascadeStopping-v0",
        num_envs=n,
        vectorization_mode="vector_entry_point",
        trace=trace,
        alpha=0.1,
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    reuse = gym.make_vec(
        "CascadeStopping-v0",
        num_envs=n,
        vectorization_mode="vector_entry_point",
        trace=trace,
        alpha=0.1,
        autoreset_mode=AutoresetMode.SAME_STEP,
        copy=False,
    )
    numpy_env = ref.CascadeStoppingVectorEnv(tr, n)
    sides = {
        "native": lambda: measure(native, k, n, a.seconds),
        "reuse": lambda: measure(reuse, k, n, a.seconds),
        "numpy": lambda: measure(numpy_env, k, n, a.seconds),
        "rust": lambda: measure_rust(binary, trace, n, a.seconds),
    }
    results = {name: [] for name in sides}
    for rep in range(a.repeats):
        order = list(sides) if rep % 2 == 0 else list(reversed(sides))
        for name in order:
            wall, cpu, ret = sides[name]()
            results[name].append((wall, cpu, ret))
            print(f"repeat {rep + 1} {name:6s}: env-steps/s {wall:.3e} per wall s / {cpu:.3e} per CPU s, mean return {ret:.4f}")
    med = {
        name: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
        for name, v in results.items()
    }
    print(f"medians of {a.repeats} repeats, batch {n}:")
    for name, (wall, cpu) in med.items():
        print(f"  {name:6s} {wall:.3e} env-steps/s per wall s, {cpu:.3e} per CPU s")
    ratios = {
        f"{a_}/{b_}": (med[a_][0] / med[b_][0], med[a_][1] / med[b_][1])
        for a_ in ("native", "reuse")
        for b_ in ("numpy", "rust")
    }
    for name, (wall, cpu) in ratios.items():
        print(f"  {name:13s} {wall:.2f}x per wall s, {cpu:.2f}x per CPU s")
    print(
        "RESULT "
        + " ".join(f"{name}_env_steps_per_wall_s={w:.0f} {name}_env_steps_per_cpu_s={c:.0f}" for name, (w, c) in med.items())
        + " "
        + " ".join(
            f"{name.replace('/', '_over_')}_wall={w:.3f} {name.replace('/', '_over_')}_cpu={c:.3f}"
            for name, (w, c) in ratios.items()
        )
    )


if __name__ == "__main__":
    main()
