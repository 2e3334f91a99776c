"""The Python env against the Rust env itself.

The reference is the cascade-env example `replay_returns`, which plays a
fixed action sequence in the Rust `OptimalStoppingEnv` and prints each
episode's outcome; the Python env must give the same episodes, returns
included, bit for bit. The example binary is taken from
$CASCADE_REPLAY_RETURNS (scripts/test-python.sh builds it) or run with
`cargo run`; without either the tests are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _reference_command() -> list[str] | None:
    binary = os.environ.get("CASCADE_REPLAY_RETURNS")
    if binary:
        return [binary]
    if shutil.which("cargo") and (REPO / "envs" / "examples" / "replay_returns.rs").exists():
        return ["cargo", "run", "--quiet", "-p", "cascade-env", "--example", "replay_returns", "--"]
    return None


COMMAND = _reference_command()
pytestmark = pytest.mark.skipif(
    COMMAND is None, reason="neither $CASCADE_REPLAY_RETURNS nor cargo is available"
)


def rust_episodes(trace: Path, actions: list[int], seed: int, spec: dict) -> subprocess.CompletedProcess:
    assert COMMAND is not None
    args = [str(trace), "--actions", ",".join(map(str, actions)), "--seed", str(seed)]
    for key, value in spec.items():
        args += [f"--{key}", str(value)]
    return subprocess.run(COMMAND + args, cwd=REPO, capture_output=True, text=True, timeout=600)


def python_episodes(trace: Path, actions: list[int], seed: int, spec: dict) -> list[dict]:
    env = gym.make("CascadeStopping-v0", trace=trace, **spec)
    out: list[dict] = []
    i, first = 0, True
    while i < len(actions):
        _, info0 = env.reset(seed=seed if first else None)
        first, ret = False, 0.0
        while i < len(actions):
            obs, reward, terminated, _, info = env.step(actions[i])
            i += 1
            ret += reward
            if terminated:
                out.append(
                    {
                        "sample": info0["sample"],
                        "stop_stage": int(obs["stage"]),
                        "prediction": info["prediction"],
                        "label": info["label"],
                        "loss": info["loss"],
                        "cost": info["cost"],
                        "return": ret,
                    }
                )
                break
    return out


def legal_actions(num_stages: int, episodes: int, seed: int) -> list[int]:
    """A fixed, legal action sequence: episode e forwards f_e times, then stops."""
    rng = np.random.default_rng(seed)
    actions: list[int] = []
    for _ in range(episodes):
        f = int(rng.integers(0, num_stages))
        actions += [1] * f + [0]
    return actions


SPECS = [
    dict(alpha=0.1, loss="zero-one", cost="cumulative", prediction="argmax"),
    dict(alpha=0.37, loss="cross-entropy", cost="exit", prediction="sample"),
    dict(alpha=0.0, loss="zero-one", cost="exit", prediction="sample"),
    dict(alpha=2.5, loss="cross-entropy", cost="cumulative", prediction="argmax"),
]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("seed", [0, 12345])
def test_same_returns_as_the_rust_env(trace, trace4, spec, seed):
    for path, k in ((trace, 3), (trace4, 4)):
        actions = legal_actions(k, 150, seed)
        done = rust_episodes(path, actions, seed, spec)
        assert done.returncode == 0, done.stderr
        want = [json.loads(line) for line in done.stdout.splitlines()]
        got = python_episodes(path, actions, seed, spec)
        assert len(want) == len(got) == 150
        for w, g in zip(want, got):
            for key in ("sample", "stop_stage", "prediction", "label", "loss", "cost", "return"):
                assert g[key] == w[key], (key, w, g)  # exact: same f64 arithmetic


def test_same_refusal_of_an_illegal_action(trace):
    actions = [1, 0, 1, 1, 1]  # the fifth action forwards past the last stage
    done = rust_episodes(trace, actions, 0, {})
    assert done.returncode == 1
    assert "illegal action Forward at stage index 2" in done.stderr
    with pytest.raises(ValueError, match="illegal action Forward at stage index 2"):
        python_episodes(trace, actions, 0, {})
