#!/usr/bin/env python3
"""Stable-Baselines3 PPO on CascadeStopping-v0 (needs torch: not run in CI).

PPO's MultiInputPolicy reads the Dict observation (`stage` one-hot,
`features`, `probs`, `cost_so_far`). PPO samples actions without the
action mask, and by default the env refuses forward at the last stage (a
ValueError, never a clamp), so this example makes the env with
`last_stage_forward="stop"`: forward at the last stage is taken as stop,
and the agent learns that the last stage always stops. (sb3-contrib's
MaskablePPO, which reads the env's `action_masks()`, trains on the strict
env instead.) Training uses SB3's DummyVecEnv over single envs; evaluation plays the trained policy
deterministically on a second trace, against the confidence-threshold
baseline (the best top-probability threshold on the training trace,
reported on the evaluation trace), both as exact means over every sample.

Install and run (torch is large, hence not part of scripts/test-python.sh):

    .venv-py/bin/pip install stable-baselines3     # pulls torch
    .venv-py/bin/python examples/python/sb3_ppo.py [--train-trace T1 --eval-trace T2] \\
        [--timesteps 200000] [--threads 1]

Without traces, the crate's synthetic traces (seeds 0 and 1) are written
to a temporary folder; recorded ones come from `cascade export-trace`.
torch runs on --threads CPU threads (default 1: the policy is a small MLP
and the env steps one sample at a time, so more threads only contend).

Returns reached (alpha 0.1, 0-1 loss, cumulative cost, argmax prediction,
seed 0, SB3 2.9.2 and torch 2.15 on 1 thread, PPO's defaults but n_steps
256 and batch 512 over 8 envs; exact mean return on the evaluation trace,
higher is better; the last line prints it):

* Fashion-MNIST cascade fmnist-4 (the `fmnist` study's cascade, seed 0:
  train on its recorded val trace, 6000 samples; evaluate on the test
  trace, 10000), 1,000,000 timesteps (319 s of training on a shared,
  loaded 2-core machine):

      .venv-py/bin/python examples/python/sb3_ppo.py \\
          --train-trace runs/jvf-fmnist/traces/val.trace \\
          --eval-trace runs/jvf-fmnist/traces/test.trace --timesteps 1000000

  PPO -0.1155 against the threshold baseline's -0.0919 (threshold 0.880).
  On the training trace PPO is far ahead (-0.0556 against -0.0873): the
  policy reads the 784 raw pixels of the first stage and 6000 samples are
  too few for it, so it overfits, as examples/python/pg_agent.py does on
  the same traces (-0.0975 there).
* synthetic (train seed 0, eval seed 1), the defaults (200,000 timesteps,
  41 s): PPO -0.1632 against the threshold baseline's -0.1631 (threshold
  0.850); 1,000,000 timesteps give the same -0.1632. PPO finds the
  threshold rule but not what pg_agent.py finds (-0.1547: stopping at the
  first stage the inputs no stage gets right).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import gymnasium as gym
import numpy as np

import cascade_env


def make_env(trace, alpha):
    def thunk():
        return gym.make("CascadeStopping-v0", trace=trace, alpha=alpha, last_stage_forward="stop")

    return thunk


def exact_return(trace, alpha, costs, forward):
    """Mean return over every sample when `forward(t, features, probs) -> bool [N]` decides."""
    n, k = len(trace.labels), len(trace.features)
    stop = np.full(n, k - 1)
    decided = np.zeros(n, dtype=bool)
    for t in range(k - 1):
        here = ~decided & ~forward(t, trace.features[t], trace.probs[t])
        stop[here] = t
        decided |= here
    pred = np.stack([p.argmax(axis=1) for p in trace.probs])[stop, np.arange(n)]
    wrong = (pred != trace.labels).astype(np.float64)
    return float(np.mean(-wrong - alpha * np.asarray(costs)[stop]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-trace")
    ap.add_argument("--eval-trace")
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--timesteps", type=int, default=200_000)
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = ap.parse_args()
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    tmp = tempfile.TemporaryDirectory()
    train_path, eval_path = a.train_trace, a.eval_trace
    if train_path is None:
        train_path = os.path.join(tmp.name, "train.safetensors")
        cascade_env.write_synthetic_trace(train_path, num_samples=10_000, seed=0)
    if eval_path is None:
        eval_path = os.path.join(tmp.name, "eval.safetensors")
        cascade_env.write_synthetic_trace(eval_path, num_samples=10_000, seed=1)
    train, test = cascade_env.load_trace(train_path), cascade_env.load_trace(eval_path)

    torch.set_num_threads(a.threads)
    venv = DummyVecEnv([make_env(train_path, a.alpha) for _ in range(a.num_envs)])
    model = PPO("MultiInputPolicy", venv, n_steps=256, batch_size=512, seed=a.seed, verbose=1)
    start = time.perf_counter()
    model.learn(total_timesteps=a.timesteps)
    seconds = time.perf_counter() - start

    probe = gym.make("CascadeStopping-v0", trace=eval_path, alpha=a.alpha).unwrapped
    costs, width = probe.stage_costs, max(probe.feature_dims)

    def agent(t, features, probs):
        m = len(probs)
        obs = {
            "stage": np.full(m, t, dtype=np.int64),
            "features": np.pad(features, ((0, 0), (0, width - features.shape[1]))).astype(np.float32),
            "probs": probs,
            "cost_so_far": np.full((m, 1), costs[t], dtype=np.float32),
        }
        action, _ = model.predict(obs, deterministic=True)
        return np.asarray(action) == 1

    def threshold_at(thr):
        return lambda t, f, p: p.max(axis=1) <= thr

    best = max(np.linspace(0, 1, 201), key=lambda thr: exact_return(train, a.alpha, costs, threshold_at(thr)))
    base = exact_return(test, a.alpha, costs, threshold_at(best))
    ppo = exact_return(test, a.alpha, costs, agent)
    ppo_train = exact_return(train, a.alpha, costs, agent)
    base_train = exact_return(train, a.alpha, costs, threshold_at(best))
    print(f"training trace: PPO {ppo_train:.4f}, threshold baseline {base_train:.4f}")
    print(f"evaluation trace: PPO {ppo:.4f}, threshold baseline {base:.4f} (threshold {best:.3f})")
    print(f"RESULT ppo_return={ppo:.4f} threshold_return={base:.4f} threshold={best:.3f} "
          f"timesteps={a.timesteps} train_seconds={seconds:.0f}")


if __name__ == "__main__":
    main()
