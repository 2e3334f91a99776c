#!/usr/bin/env python3
"""PyTorch (CPU) twin of `cascade bench --policy`: one REINFORCE epoch of the
stopping policy on a replay trace.

The project's REINFORCE (agents/src/reinforce.rs, policy only, its default
settings) written with torch ops, on a trace of the same shapes: per stage
t < K a head `sigmoid(w2 . tanh(W1 x_t + b1) + b2)` on
`x_t = [standardised features, label probabilities, top probability,
normalised entropy]` (fc1 He-normal, fc2 N(0, 0.01^2), zero biases), a value
head of the same form on the detached input as the baseline, AdamW for both.
Per step of `batch_size` shuffled trajectories: the rollout (each stage's
head on the trajectories still running, a sampled stop decision, the
prediction and the reward `-[wrong] - alpha * cost` where one stops), the
surrogate `-(1/B) sum (log pi(a) (R - V) + entropy_coef * H)` plus the value
heads' squared error, backward, both optimiser steps and the two losses read
back, as the project does. The standardisation is fitted on the training
trace before the epoch and not timed, as there.

The trace's values are generated (normal features, softmax probabilities of
normal logits, uniform labels): the time depends on the shapes and on how
many trajectories reach each stage, and with the heads' initial stop
probabilities near 1/2 both sides see the same counts on average.

Usage:
    python bench/pytorch_policy_epoch.py --spec "$(cascade bench --policy --json)" [--threads 2] [--json]

Prints one line, or with --json one JSON object:
{"lib": "pytorch", "train_s": ..., "sps": ..., "steps": ...}
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


class Head(torch.nn.Module):
    def __init__(self, d_in, hidden):
        super().__init__()
        self.fc1 = torch.nn.Linear(d_in, hidden)
        self.fc2 = torch.nn.Linear(hidden, 1)
        torch.nn.init.kaiming_normal_(self.fc1.weight, nonlinearity="tanh")
        torch.nn.init.zeros_(self.fc1.bias)
        torch.nn.init.normal_(self.fc2.weight, std=0.01)
        torch.nn.init.zeros_(self.fc2.bias)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x))).squeeze(-1)


def head_input(feats, probs, mean, std, ln_c):
    z = (feats - mean) / std
    top = probs.max(dim=1, keepdim=True).values
    ent = -(probs * probs.clamp(1e-12, 1.0).log()).sum(dim=1, keepdim=True) / ln_c
    return torch.cat([z, probs, top, ent], dim=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", required=True, help="the JSON `cascade bench --policy --json` prints")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    spec = json.loads(a.spec)
    cfg = spec["config"]
    if cfg["baseline"]["kind"] != "value":
        raise SystemExit(f"only the value baseline is written here, not {cfg['baseline']}")
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(a.seed)
    torch.manual_seed(a.seed)

    n, c, dims = spec["samples"], spec["num_classes"], spec["feature_dims"]
    k, hidden, b = len(dims), cfg["hidden"], cfg["batch_size"]
    feats = [torch.randn(n, d, generator=gen) for d in dims]
    probs = [torch.softmax(2.0 * torch.randn(n, c, generator=gen), dim=1) for _ in dims]
    labels = torch.randint(0, c, (n,), generator=gen)
    cum = torch.tensor(spec["stage_costs"], dtype=torch.float64).cumsum(0)
    cost = (cum / cum[-1]).tolist()  # cumulative cost, normalised by the full cascade's
    alpha, ln_c = spec["alpha"], math.log(c)
    norm = [(f.mean(0), f.std(0, unbiased=False).clamp_min(1e-6)) for f in feats]

    policy = torch.nn.ModuleList(Head(d + c + 2, hidden) for d in dims[:-1])
    values = torch.nn.ModuleList(Head(d + c + 2, hidden) for d in dims[:-1])
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    vopt = torch.optim.AdamW(values.parameters(), lr=cfg["baseline"]["lr"], weight_decay=0.0)
    ent_coef = cfg["entropy_coef"]

    t0 = time.perf_counter()
    order = torch.randperm(n, generator=gen)
    steps = 0
    for s0 in range(0, n, b):
        idx = order[s0 : s0 + b]
        m = len(idx)
        returns = torch.zeros(m)
        alive = torch.arange(m)
        stages = []
        for t in range(k):
            rows = idx[alive]
            p = probs[t][rows]
            if t + 1 < k:
                x = head_input(feats[t][rows], p, *norm[t], ln_c)
                z = policy[t](x)
                stop = torch.rand(len(rows), generator=gen) < torch.sigmoid(z.detach())
            else:
                x, z, stop = None, None, torch.ones(len(rows), dtype=torch.bool)
            wrong = (p.argmax(1) != labels[rows]).float()
            r = -wrong - alpha * cost[t]
            returns[alive[stop]] = r[stop]
            stages.append((alive, x, z, stop))
            alive = alive[~stop]
            if len(alive) == 0:
                break
        policy_terms, value_terms = [], []
        for t, (rows, x, z, stop) in enumerate(stages):
            if z is None:
                continue
            r = returns[rows]
            v = values[t](x.detach())
            value_terms.append(((v - r) ** 2).sum())
            adv = r - v.detach()
            logp = F.log_softmax(torch.stack([z, torch.zeros_like(z)], dim=1), dim=1)
            chosen = logp.gather(1, (~stop).long().unsqueeze(1)).squeeze(1)
            policy_terms.append((chosen * adv).sum())
            if ent_coef > 0:
                policy_terms.append(ent_coef * -(logp.exp() * logp).sum())
        policy_loss = -torch.stack(policy_terms).sum() / m
        value_loss = torch.stack(value_terms).sum() / m
        opt.zero_grad(set_to_none=True)
        vopt.zero_grad(set_to_none=True)
        (policy_loss + value_loss).backward()
        opt.step()
        vopt.step()
        policy_loss.item(), value_loss.item()
        steps += 1
    train_s = time.perf_counter() - t0
    row = {"lib": "pytorch", "torch": torch.__version__, "threads": a.threads, "samples": n, "steps": steps,
           "train_s": train_s, "sps": n / train_s}
    if a.json:
        print(json.dumps(row))
    else:
        print(f"pytorch {torch.__version__}: one REINFORCE epoch of {n} trajectories in {steps} steps: "
              f"{train_s:.3f} s ({n / train_s:.0f} trajectories/s)")


if __name__ == "__main__":
    main()
