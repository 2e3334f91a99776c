"""Seeding: a seed names the same episodes on every build.

The sequences below were recorded with the package as it was before
unseeded envs started drawing their seed from OS entropy; a seeded env must
keep playing them bit for bit (the random streams are part of the env's
version).
"""

from __future__ import annotations

import numpy as np

import cascade_env

# (sample, prediction, reward) of the episodes of a single env with
# prediction="sample", reset(seed=7) and then reset(), under the action
# rule of `play_single`.
PINNED_SINGLE = [
    (184, 0, -0.00625),
    (17, 5, -0.13125),
    (78, 1, -1.03125),
    (175, 6, -1.00625),
    (257, 8, -0.00625),
    (108, 7, -1.00625),
    (102, 6, -1.00625),
    (103, 1, -1.00625),
    (187, 8, -0.00625),
]
# A vector env of 4 (same-step autoreset) reset with seed 123: the first
# samples, then the rewards and next samples after everyone stops.
PINNED_VECTOR_RESET = [22, 228, 52, 59]
PINNED_VECTOR_REWARDS = [-0.00625, -1.00625, -1.00625, -1.00625]
PINNED_VECTOR_NEXT = [175, 177, 32, 236]


def play_single(env) -> list[tuple[int, int, float]]:
    out = []
    obs, info = env.reset(seed=7)
    rng = np.random.default_rng(0)
    for _ in range(12):
        a = 1 if (obs["stage"] < 2 and rng.random() < 0.5) else 0
        obs, r, t, _, info = env.step(a)
        if t:
            out.append((info["sample"], info["prediction"], r))
            obs, info = env.reset()
    return out


def test_seeded_single_env_plays_the_pinned_episodes(trace):
    env = cascade_env.CascadeStoppingEnv(trace, prediction="sample")
    assert play_single(env) == PINNED_SINGLE


def test_seeded_vector_env_plays_the_pinned_episodes(trace):
    venv = cascade_env.CascadeStoppingVectorEnv(4, trace, prediction="sample", autoreset_mode="same-step")
    _, info = venv.reset(seed=123)
    assert info["sample"].tolist() == PINNED_VECTOR_RESET
    _, rewards, _, _, info = venv.step(np.zeros(4, dtype=np.int64))
    assert rewards.tolist() == PINNED_VECTOR_REWARDS
    assert info["sample"].tolist() == PINNED_VECTOR_NEXT
