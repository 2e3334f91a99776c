#!/usr/bin/env python3
"""CascadeStopping-v0 in Python with Gymnasium: the reference for
`cargo run --release -p cascade-env --example vec_throughput`.

Same trace file (read with safetensors + numpy), same MDP (argmax
prediction, 0-1 loss, cumulative cost normalised by the largest stage,
alpha 0.1), same policy (stop once the top probability exceeds 0.9, or at
the last stage), same batch (1024), same-step autoreset. Two Python
implementations are timed:

* `sync`: the ordinary Gymnasium way: a `gymnasium.Env` subclass with a
  Dict observation space (features zero-padded to the widest stage, since a
  Gymnasium space has one shape) vectorised by `gymnasium.vector.SyncVectorEnv`.
* `numpy`: a hand-vectorised `gymnasium.vector.VectorEnv` that steps all
  sub-envs with numpy array operations (the fast way to write it).

The exact mean return of the policy over the whole split is also printed;
it must equal the Rust `evaluate` line.

Usage (a throwaway venv, not a project dependency):
    python3 -m venv /tmp/venv-gym && /tmp/venv-gym/bin/pip install gymnasium numpy safetensors
    /tmp/venv-gym/bin/python bench/env_throughput.py TRACE.safetensors [--batch 1024] [--seconds 5]
"""

import argparse
import json
import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from safetensors import safe_open
from safetensors.numpy import load_file


def load_trace(path):
    """The trace as numpy arrays plus its JSON header."""
    tensors = load_file(path)
    with safe_open(path, "np") as f:
        header = json.loads(f.metadata()["cascade_trace"])
    k = len(header["stages"])
    feats = [tensors[f"stage{t}.features"] for t in range(k)]
    probs = [tensors[f"stage{t}.probs"] for t in range(k)]
    labels = tensors["labels"].astype(np.int64)
    costs = tensors["costs"]
    return header, feats, probs, labels, costs


class Trace:
    """Trace arrays shared by every sub-env (features padded to max width)."""

    def __init__(self, path, alpha):
        self.header, feats, self.probs, self.labels, raw = load_trace(path)
        self.k = len(feats)
        self.n, self.c = self.probs[0].shape
        self.dims = [f.shape[1] for f in feats]
        self.max_d = max(self.dims)
        self.feats = [f for f in feats]
        self.padded = [np.pad(f, ((0, 0), (0, self.max_d - f.shape[1]))) for f in feats]
        self.cost = np.cumsum(raw) / raw.max()  # cumulative, normalised
        self.alpha = alpha


def obs_space(tr):
    return spaces.Dict(
        {
            "stage": spaces.Discrete(tr.k),
            "features": spaces.Box(-np.inf, np.inf, (tr.max_d,), np.float32),
            "probs": spaces.Box(0.0, 1.0, (tr.c,), np.float32),
            "cost_so_far": spaces.Box(0.0, np.inf, (1,), np.float32),
        }
    )


class CascadeStoppingEnv(gym.Env):
    """One episode per input: observe stage t, stop (0) or forward (1)."""

    def __init__(self, tr):
        self.tr = tr
        self.observation_space = obs_space(tr)
        self.action_space = spaces.Discrete(2)
        self.sample = 0
        self.stage = 0

    def _obs(self):
        tr, t, s = self.tr, self.stage, self.sample
        return {
            "stage": t,
            "features": tr.padded[t][s],
            "probs": tr.probs[t][s],
            "cost_so_far": np.array([tr.cost[t]], dtype=np.float32),
        }

    def _info(self):
        return {"action_mask": np.array([1, int(self.stage + 1 < self.tr.k)], dtype=np.int8)}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.sample = int(self.np_random.integers(self.tr.n))
        self.stage = 0
        return self._obs(), self._info()

    def step(self, action):
        tr = self.tr
        if action == 1:
            if self.stage + 1 >= tr.k:
                raise ValueError("Forward is illegal at the last stage")
            self.stage += 1
            return self._obs(), 0.0, False, False, self._info()
        pred = int(np.argmax(tr.probs[self.stage][self.sample]))
        label = int(tr.labels[self.sample])
        reward = -float(pred != label) - tr.alpha * float(tr.cost[self.stage])
        info = self._info()
        info["prediction"], info["label"] = pred, label
        return self._obs(), reward, True, False, info


class CascadeStoppingVectorEnv(gym.vector.VectorEnv):
    """All sub-envs stepped with numpy array operations (same-step autoreset)."""

    def __init__(self, tr, num_envs):
        self.tr = tr
        self.num_envs = num_envs
        self.single_observation_space = obs_space(tr)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
        self.sample = np.zeros(num_envs, dtype=np.int64)
        self.stage = np.zeros(num_envs, dtype=np.int64)
        self.stacked_feats = np.stack(tr.padded)  # [K, N, max_d]
        self.stacked_probs = np.stack(tr.probs)  # [K, N, C]

    def _obs(self):
        return {
            "stage": self.stage,
            "features": self.stacked_feats[self.stage, self.sample],
            "probs": self.stacked_probs[self.stage, self.sample],
            "cost_so_far": self.tr.cost[self.stage].astype(np.float32)[:, None],
        }

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.sample = self.np_random.integers(self.tr.n, size=self.num_envs)
        self.stage[:] = 0
        return self._obs(), {}

    def step(self, actions):
        tr = self.tr
        fwd = actions == 1
        if np.any(fwd & (self.stage + 1 >= tr.k)):
            raise ValueError("Forward is illegal at the last stage")
        stop = ~fwd
        reward = np.zeros(self.num_envs)
        s, t = self.sample[stop], self.stage[stop]
        pred = np.argmax(self.stacked_probs[t, s], axis=1)
        reward[stop] = -(pred != tr.labels[s]).astype(np.float64) - tr.alpha * tr.cost[t]
        self.stage[fwd] += 1
        self.stage[stop] = 0
        self.sample[stop] = self.np_random.integers(tr.n, size=int(stop.sum()))
        return self._obs(), reward, stop, np.zeros(self.num_envs, dtype=bool), {}


def policy(obs, k):
    return np.where((obs["probs"].max(axis=1) > 0.9) | (obs["stage"] == k - 1), 0, 1)


def exact_mean_return(tr):
    """Mean return of the policy over the whole split, vectorised over samples."""
    top = np.stack([p.max(axis=1) for p in tr.probs])  # [K, N]
    stop = np.full(tr.n, tr.k - 1)
    for t in reversed(range(tr.k - 1)):
        stop = np.where(top[t] > 0.9, t, stop)
    idx = np.arange(tr.n)
    pred = np.stack([p.argmax(axis=1) for p in tr.probs])[stop, idx]
    wrong = pred != tr.labels
    reward = -wrong.astype(np.float64) - tr.alpha * tr.cost[stop]
    return reward.mean(), wrong.mean(), tr.cost[stop].mean()


def measure(venv, k, n, seconds):
    obs, _ = venv.reset(seed=0)
    for _ in range(20):
        obs, *_ = venv.step(policy(obs, k))
    steps, episodes, ret = 0, 0, 0.0
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    while True:
        for _ in range(16):
            obs, reward, term, trunc, info = venv.step(policy(obs, k))
            episodes += int(term.sum())
            ret += float(reward[term].sum())
        steps += 16
        wall = time.perf_counter() - wall0
        if wall >= seconds:
            break
    cpu = time.thread_time() - cpu0
    env_steps = steps * n
    return env_steps / wall, env_steps / cpu, env_steps / max(episodes, 1), ret / max(episodes, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--only", choices=["sync", "numpy"], default=None)
    a = ap.parse_args()
    tr = Trace(a.trace, a.alpha)
    h = tr.header
    print(f"trace: {h['dataset']} / {h['split']} / {h['cascade']}, N = {tr.n}, C = {tr.c}, feature widths {tr.dims}")
    print(f"gymnasium {gym.__version__}, numpy {np.__version__}")
    r, err, cost = exact_mean_return(tr)
    print(f"exact (whole split, alpha {a.alpha}): mean return {r:.6f}, error {err:.4f}, mean cost {cost:.4f}")
    results = {}
    if a.only in (None, "sync"):
        venv = gym.vector.SyncVectorEnv(
            [lambda: CascadeStoppingEnv(tr) for _ in range(a.batch)],
            autoreset_mode=AutoresetMode.SAME_STEP,
        )
        results["sync"] = measure(venv, tr.k, a.batch, a.seconds)
    if a.only in (None, "numpy"):
        results["numpy"] = measure(CascadeStoppingVectorEnv(tr, a.batch), tr.k, a.batch, a.seconds)
    for name, (wall, cpu, length, ret) in results.items():
        print(
            f"{name:5s} batch {a.batch}: env-steps/s {wall:.3e} per wall s / {cpu:.3e} per CPU s, "
            f"mean episode length {length:.3f}, mean return {ret:.4f}"
        )
    print("RESULT " + " ".join(f"python_{n}_env_steps_per_wall_s={v[0]:.0f} python_{n}_env_steps_per_cpu_s={v[1]:.0f}" for n, v in results.items()))


if __name__ == "__main__":
    main()
