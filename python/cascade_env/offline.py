"""Offline RL data: :func:`to_minari` writes the episodes of a policy over a
trace as a Minari dataset, with every stage's stopping reward in the
infos, so off-policy evaluation has exact ground truth.

Needs ``minari`` (``pip install "minari[hdf5]"``); the rest of the package
does not.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

from . import _native
from .envs import CascadeStoppingEnv

__all__ = ["to_minari"]


class _FixedInfo(gym.Wrapper):
    """The env with one info layout at every step (Minari records infos
    only when their keys never change): ``sample``, ``stage``,
    ``action_mask`` and ``stop_rewards`` (``float64 [K]``: the reward of
    stopping at each stage on this sample)."""

    def __init__(self, env: CascadeStoppingEnv, rewards: np.ndarray, spec: EnvSpec) -> None:
        super().__init__(env)
        self._rewards = rewards
        self._fixed_spec = spec

    @property
    def spec(self) -> EnvSpec:  # type: ignore[override]
        return self._fixed_spec

    def _info(self, obs: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        s = int(info["sample"])
        return {
            "sample": np.int64(s),
            "stage": np.int64(obs["stage"]),
            "action_mask": np.asarray(info["action_mask"], np.int8),
            "stop_rewards": self._rewards[s].copy(),
        }

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return obs, self._info(obs, info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, r, term, trunc, info = self.env.step(action)
        return obs, r, term, trunc, self._info(obs, info)


def to_minari(
    trace: str | os.PathLike[str],
    policy: Any,
    dataset_id: str,
    *,
    alpha: float = 0.1,
    loss: str = "zero-one",
    cost: str = "cumulative",
    prediction: str = "argmax",
    seed: int = 0,
    num_episodes: int | None = None,
    algorithm_name: str | None = None,
    description: str | None = None,
) -> Any:
    """Plays one episode per sample of ``trace`` (samples 0, 1, ... in
    order) with ``policy`` and writes them as the Minari dataset
    ``dataset_id`` (under ``$MINARI_DATASETS_PATH``, default
    ``~/.minari/datasets``).

    Each step records the observation, the action (0 stop, 1 forward), the
    reward, ``terminated`` and ``truncated`` (never), and in ``infos``:
    ``sample``, ``stage``, ``action_mask`` and ``stop_rewards`` (``float64
    [K]``: the reward of stopping at each stage on this sample, the
    expected one under ``prediction="sample"``), the exact ground truth of
    any policy's return on it.

    The dataset names its trace by content: the recorded env spec is
    ``CascadeStopping-v0`` with ``trace_sha256`` (the trace's
    ``content_sha256``) and the reward arguments, no file path;
    ``recover_environment`` needs ``trace=`` given back.

    Args:
        policy: A fitted :class:`cascade_env.agents.Agent` (the oracle
            agent gets the labels), any callable ``obs -> action``,
            ``"oracle"`` (the best stage knowing the label, earliest on
            ties) or ``"random"`` (forward with probability 1/2, from
            ``seed``).
        num_episodes: The first this many samples (default: all).

    Returns:
        The ``minari.MinariDataset``.
    """
    import minari

    from .agents import Agent

    path = os.fspath(trace)
    rewards = _native.stop_rewards(path, float(alpha), loss, cost, prediction)
    env = CascadeStoppingEnv(trace=path, alpha=alpha, loss=loss, cost=cost, prediction=prediction)
    sha = env.trace_sha256
    spec = EnvSpec(
        id="CascadeStopping-v0",
        entry_point="cascade_env.envs:CascadeStoppingEnv",
        kwargs={"trace_sha256": sha, "alpha": alpha, "loss": loss, "cost": cost, "prediction": prediction},
    )
    n = rewards.shape[0] if num_episodes is None else min(int(num_episodes), rewards.shape[0])
    rng = np.random.default_rng(seed)
    labels = None
    if isinstance(policy, Agent) and policy._native.uses_labels:
        from . import load_trace

        labels = load_trace(path).labels
    if isinstance(policy, str):
        if policy == "oracle":
            best = rewards.argmax(axis=1)
            act: Callable[[Any, int], int] = lambda obs, s: 0 if int(obs["stage"]) >= best[s] else 1  # noqa: E731
        elif policy == "random":
            act = lambda obs, s: int(rng.integers(0, 2))  # noqa: E731
        else:
            raise ValueError(f"unknown policy {policy!r}: an agent, a callable, 'oracle' or 'random'")
    elif isinstance(policy, Agent):
        act = lambda obs, s: int(policy.act(obs, None if labels is None else labels[s]))  # noqa: E731
    elif callable(policy):
        act = lambda obs, s: int(policy(obs))  # noqa: E731
    else:
        raise TypeError(f"policy must be an agent, a callable, 'oracle' or 'random', got {type(policy).__name__}")

    collector = minari.DataCollector(_FixedInfo(env, rewards, spec), record_infos=True)
    for s in range(n):
        obs, info = collector.reset(seed=seed if s == 0 else None, options={"sample": s})
        done = False
        while not done:
            a = act(obs, s)
            if int(obs["stage"]) == rewards.shape[1] - 1:
                a = 0
            obs, _, terminated, truncated, info = collector.step(a)
            done = terminated or truncated
    name = getattr(policy, "name", policy if isinstance(policy, str) else type(policy).__name__)
    return collector.create_dataset(
        dataset_id=dataset_id,
        algorithm_name=algorithm_name or f"cascade_env policy {name}",
        description=description
        or (
            f"Episodes of {name} over the cascade trace with content_sha256 {sha} "
            f"(one per sample, in order; infos['stop_rewards'] holds every stage's stopping reward)."
        ),
    )
