#!/usr/bin/env python3
"""REINFORCE on CascadeStopping-v0 in one file, numpy only (cleanrl style).

The policy is one small network per stage (one tanh layer, then
p(forward)) on the observation: the top probability, the margin to the
second, the entropy, the cost spent and the stage's own features
(standardised with the training trace's statistics). It is trained by REINFORCE with a learned
linear value baseline on the native vector env (`gymnasium.make_vec`, same-step
autoreset), with Adam, then evaluated greedily (forward iff
p(forward) > 0.5) on a second trace, against the confidence-threshold
baseline: stop at the first stage whose top probability exceeds a threshold,
the threshold chosen as the best on the training trace. Both scores are the
exact mean return over every sample of the evaluation trace; the agent's is
also measured by playing it in the env.

Run (after scripts/test-python.sh, which builds the package into .venv-py):

    .venv-py/bin/python examples/python/pg_agent.py                 # synthetic traces
    .venv-py/bin/python examples/python/pg_agent.py \\
        --train-trace val.safetensors --eval-trace test.safetensors  # recorded traces

Recorded traces come from `cascade export-trace --cascade runs/fmnist-4
--split val|test --out FILE`. Without them the crate's synthetic traces
(10000 samples each, seeds 0 and 1) are written to a temporary folder.

Returns reached (alpha 0.1, 0-1 loss, cumulative cost, argmax prediction,
seed 0; exact mean return on the evaluation trace, higher is better):

* synthetic (train seed 0, eval seed 1), the defaults (800 updates, entropy
  bonus 0.2; 4 s): the agent -0.1547 (error 0.0995, cost 0.552) against
  the threshold baseline's -0.1631 (threshold 0.850; error 0.0995, cost
  0.636); played in the env, 50251 episodes: -0.1535. The agent learns
  from the stage features which inputs no stage gets right and stops them
  at the first stage; the threshold cannot see that.
* Fashion-MNIST cascade fmnist-4 (train on its recorded val trace, 6000
  samples; evaluate on the test trace, 10000), run with `--updates 400
  --ent-coef 0.001`: the agent -0.0975 (error 0.0916, cost 0.059)
  against the threshold baseline's -0.0919 (threshold 0.880; error 0.0724,
  cost 0.195). The agent beats the threshold on the training trace
  (-0.0694 against -0.0873) but not on the test trace: with 784 features
  at the first stage and 6000 training samples it overfits. With the
  defaults (800 updates, entropy bonus 0.2) it does worse on test: -0.1045
  (error 0.0928, cost 0.117; in the env: -0.1027).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

import cascade_env


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-trace", default=None, help="trace to train on (default: synthetic, seed 0)")
    p.add_argument("--eval-trace", default=None, help="trace to evaluate on (default: synthetic, seed 1)")
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-envs", type=int, default=512)
    p.add_argument("--num-steps", type=int, default=8, help="steps per sub-env per update")
    p.add_argument("--updates", type=int, default=800)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--ent-coef", type=float, default=0.2, help="entropy bonus (keeps rare stop decisions explored)")
    p.add_argument("--hidden", type=int, default=32, help="hidden units of each stage's policy")
    return p.parse_args()


def summary(probs):
    """[m, C] probabilities -> [m, 3]: top probability, margin to the second, entropy."""
    top2 = np.partition(probs, -2, axis=1)[:, -2:]
    ent = -(probs * np.log(np.maximum(probs, 1e-12))).sum(axis=1)
    return np.stack([top2[:, 1], top2[:, 1] - top2[:, 0], ent], axis=1)


class Policy:
    """Per stage t < K-1: p(forward) = sigmoid(MLP_t(phi_t(obs))), one tanh layer.

    A linear value regression on the same inputs is the REINFORCE baseline.
    """

    def __init__(self, trace, stage_costs, hidden, rng):
        self.k = len(trace.features)
        self.dims = [f.shape[1] for f in trace.features]
        self.mean = [f.mean(axis=0) for f in trace.features]
        self.std = [f.std(axis=0) + 1e-6 for f in trace.features]
        self.costs = np.asarray(stage_costs)
        self.params = []  # per stage: [W1, b1, w2, b2, v]
        for d in self.dims[:-1]:
            n_in = 5 + d
            self.params.append(
                [
                    rng.normal(0.0, 1.0 / np.sqrt(n_in), (n_in, hidden)),
                    np.zeros(hidden),
                    np.zeros(hidden),
                    np.zeros(1),
                    np.zeros(n_in),
                ]
            )
        self.adam = [[(np.zeros_like(w), np.zeros_like(w)) for w in ps] for ps in self.params]
        self.t = 0

    def phi(self, t, features, probs):
        """Inputs of stage t's network for rows at stage t: [m, 5 + d_t]."""
        m = len(probs)
        f = (features[:, : self.dims[t]] - self.mean[t]) / self.std[t]
        return np.concatenate([np.ones((m, 1)), summary(probs), np.full((m, 1), self.costs[t]), f], axis=1)

    def forward(self, t, x):
        """(p(forward) [m], hidden activations [m, H])."""
        w1, b1, w2, b2, _ = self.params[t]
        h = np.tanh(x @ w1 + b1)
        z = np.clip(h @ w2 + b2[0], -30, 30)
        return 1.0 / (1.0 + np.exp(-z)), h

    def p_forward(self, t, x):
        return self.forward(t, x)[0]

    def value(self, t, x):
        return x @ self.params[t][4]

    def grads(self, t, x, dz, dv):
        """Gradients of sum(dz * z) and sum(dv * value) wrt stage t's parameters."""
        w1, b1, w2, b2, v = self.params[t]
        _, h = self.forward(t, x)
        dh = dz[:, None] * w2[None, :] * (1 - h * h)
        return [x.T @ dh, dh.sum(axis=0), h.T @ dz, np.array([dz.sum()]), x.T @ dv]

    def step(self, grads, lr, b1=0.9, b2=0.999):
        """One Adam ascent step; `grads` per stage as the parameters."""
        self.t += 1
        for ps, adam, gs in zip(self.params, self.adam, grads):
            for w, (m, v), g in zip(ps, adam, gs):
                m[:] = b1 * m + (1 - b1) * g
                v[:] = b2 * v + (1 - b2) * g * g
                w += lr * (m / (1 - b1**self.t)) / (np.sqrt(v / (1 - b2**self.t)) + 1e-8)


def exact_return(trace, alpha, costs, forward):
    """Mean return over every sample when `forward(t, features, probs) -> bool [N]` decides."""
    n, k = len(trace.labels), len(trace.features)
    stop = np.full(n, k - 1)
    decided = np.zeros(n, dtype=bool)
    for t in range(k - 1):
        stop_here = ~decided & ~forward(t, trace.features[t], trace.probs[t])
        stop[stop_here] = t
        decided |= stop_here
    pred = np.stack([p.argmax(axis=1) for p in trace.probs])[stop, np.arange(n)]
    wrong = pred != trace.labels
    return float(np.mean(-wrong.astype(np.float64) - alpha * np.asarray(costs)[stop])), float(wrong.mean()), float(np.mean(np.asarray(costs)[stop]))


def threshold_baseline(train, test, alpha, costs):
    """Best top-probability threshold on `train`, and its (return, error, cost) on both traces."""
    best = None
    for thr in np.linspace(0.0, 1.0, 201):
        def fwd(t, f, p, thr=thr):
            return p.max(axis=1) <= thr
        r = exact_return(train, alpha, costs, fwd)[0]
        if best is None or r > best[1]:
            best = (thr, r)
    thr = best[0]
    def fwd(t, f, p):
        return p.max(axis=1) <= thr
    return thr, exact_return(train, alpha, costs, fwd), exact_return(test, alpha, costs, fwd)


def main():
    a = parse_args()
    rng = np.random.default_rng(a.seed)
    tmp = tempfile.TemporaryDirectory()
    train_path, eval_path = a.train_trace, a.eval_trace
    if train_path is None:
        train_path = os.path.join(tmp.name, "train.safetensors")
        cascade_env.write_synthetic_trace(train_path, num_samples=10_000, seed=0)
    if eval_path is None:
        eval_path = os.path.join(tmp.name, "eval.safetensors")
        cascade_env.write_synthetic_trace(eval_path, num_samples=10_000, seed=1)
    train, test = cascade_env.load_trace(train_path), cascade_env.load_trace(eval_path)
    envs = gym.make_vec(
        "CascadeStopping-v0",
        num_envs=a.num_envs,
        vectorization_mode="vector_entry_point",
        trace=train_path,
        alpha=a.alpha,
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    costs = envs.unwrapped.stage_costs
    k = len(costs)
    policy = Policy(train, costs, a.hidden, rng)
    print(f"train {train.header['dataset']}/{train.header['split']} N={len(train.labels)}, "
          f"eval {test.header['dataset']}/{test.header['split']} N={len(test.labels)}, K={k}, alpha={a.alpha}")

    obs, info = envs.reset(seed=a.seed)
    start = time.time()
    for update in range(1, a.updates + 1):
        xs, stages, acts, rews, terms = [], [], [], [], []
        for _ in range(a.num_steps):
            stage = obs["stage"]
            action = np.zeros(a.num_envs, dtype=np.int64)
            x_all = [None] * k
            for t in range(k - 1):
                rows = np.flatnonzero(stage == t)
                if len(rows):
                    x = policy.phi(t, obs["features"][rows], obs["probs"][rows])
                    action[rows] = rng.random(len(rows)) < policy.p_forward(t, x)
                    x_all[t] = (rows, x)
            xs.append(x_all)
            stages.append(stage)
            acts.append(action)
            obs, reward, terminated, truncated, info = envs.step(action)
            rews.append(reward)
            terms.append(terminated)
        # Returns: the one reward at the end of each episode, for every step of
        # it; steps of episodes still running at the end of the rollout are
        # left out.
        ret = np.zeros(a.num_envs)
        valid = np.zeros(a.num_envs, dtype=bool)
        returns, valids = [None] * a.num_steps, [None] * a.num_steps
        for i in reversed(range(a.num_steps)):
            ret = np.where(terms[i], rews[i], ret)
            valid = terms[i] | valid
            returns[i], valids[i] = ret.copy(), valid.copy()
        grads = [[np.zeros_like(w) for w in ps] for ps in policy.params]
        count = 0
        for i in range(a.num_steps):
            for t in range(k - 1):
                if xs[i][t] is None:
                    continue
                rows, x = xs[i][t]
                keep = valids[i][rows]
                x, rows = x[keep], rows[keep]
                g = returns[i][rows]
                value = policy.value(t, x)
                adv = g - value  # the value regression is the baseline
                p = policy.p_forward(t, x)
                # d log pi(a|x) / dz = a - p; the entropy bonus's d/dz.
                dz = adv * (acts[i][rows] - p) - a.ent_coef * np.log((p + 1e-12) / (1 - p + 1e-12)) * p * (1 - p)
                for acc, gr in zip(grads[t], policy.grads(t, x, dz, g - value)):
                    acc += gr
                count += len(rows)
        n = max(count, 1)
        policy.step([[g / n for g in gs] for gs in grads], a.lr)
        if update % 50 == 0 or update == a.updates:
            r, err, cost = exact_return(train, a.alpha, costs, lambda t, f, p: policy.p_forward(t, policy.phi(t, f, p)) > 0.5)
            print(f"update {update:4d}: greedy return on the training trace {r:.4f} (error {err:.4f}, cost {cost:.4f}), {time.time() - start:.1f} s")

    def greedy(t, f, p):
        return policy.p_forward(t, policy.phi(t, f, p)) > 0.5

    agent_train = exact_return(train, a.alpha, costs, greedy)
    agent_test = exact_return(test, a.alpha, costs, greedy)
    thr, base_train, base_test = threshold_baseline(train, test, a.alpha, costs)
    # The agent played in the env itself on the evaluation trace.
    venv = gym.make_vec("CascadeStopping-v0", num_envs=1024, vectorization_mode="vector_entry_point",
                        trace=eval_path, alpha=a.alpha, autoreset_mode=AutoresetMode.SAME_STEP)
    obs, _ = venv.reset(seed=a.seed + 1)
    total, episodes = 0.0, 0
    while episodes < 50_000:
        action = np.zeros(1024, dtype=np.int64)
        for t in range(k - 1):
            rows = np.flatnonzero(obs["stage"] == t)
            if len(rows):
                action[rows] = greedy(t, obs["features"][rows], obs["probs"][rows])
        obs, reward, terminated, _, _ = venv.step(action)
        total += float(reward.sum())
        episodes += int(terminated.sum())
    print(f"threshold baseline: threshold {thr:.3f} (best on the training trace, return {base_train[0]:.4f})")
    print(f"evaluation trace, mean return (error, cost):")
    print(f"  threshold baseline {base_test[0]:.4f} ({base_test[1]:.4f}, {base_test[2]:.4f})")
    print(f"  REINFORCE agent    {agent_test[0]:.4f} ({agent_test[1]:.4f}, {agent_test[2]:.4f}); "
          f"in the env over {episodes} episodes: {total / episodes:.4f}")
    print(f"RESULT agent_return={agent_test[0]:.4f} threshold_return={base_test[0]:.4f} threshold={thr:.3f}")


if __name__ == "__main__":
    main()
