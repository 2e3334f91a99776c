"""A Stable-Baselines3 ``VecEnv`` over the native vector env.

Importable only where ``stable_baselines3`` is installed (it is not a
dependency of ``cascade_env``)::

    from stable_baselines3 import PPO
    from cascade_env.sb3 import CascadeVecEnv

    venv = CascadeVecEnv("val.safetensors", num_envs=64, last_stage_forward="stop")
    PPO("MultiInputPolicy", venv).learn(100_000)

SB3's own ``DummyVecEnv`` steps n Python envs one after the other;
:class:`CascadeVecEnv` steps them together in Rust
(:class:`cascade_env.CascadeStoppingVectorEnv` with same-step autoreset)
and only builds SB3's per-sub-env info dicts in Python. sb3-contrib's
``MaskablePPO`` reads the masks through ``env_method("action_masks")``,
so it trains on the default, strict env too.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

try:
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "cascade_env.sb3 needs stable-baselines3 (pip install stable-baselines3); "
        "the rest of cascade_env works without it"
    ) from e

from gymnasium.vector import AutoresetMode

from .envs import CascadeStoppingVectorEnv

__all__ = ["CascadeVecEnv"]


class CascadeVecEnv(VecEnv):
    """n sub-envs of CascadeStopping-v0 as one SB3 ``VecEnv``, stepped in Rust.

    Args:
        trace: A trace file.
        num_envs: Number of sub-envs n.
        **kwargs: The other arguments of
            :class:`cascade_env.CascadeStoppingVectorEnv` (``alpha``,
            ``loss``, ``cost``, ``prediction``, ``last_stage_forward``,
            ``action_mask_in_obs``, ``render_mode``, ``trace_sha256``);
            ``autoreset_mode`` is same-step, as SB3 expects.

    Observations are the vector env's dict of batched arrays; rewards
    ``float32 [n]``; ``dones`` ``bool [n]``; ``infos`` a list of n dicts,
    where a sub-env that terminated has ``terminal_observation`` (its
    observation stopped at), ``TimeLimit.truncated`` (False), and its
    ``prediction``, ``label`` and ``loss``. ``seed(s)`` seeds sub-env i
    with ``s + i`` at the next reset, as ``DummyVecEnv`` does, so both
    play the same episodes.
    """

    def __init__(self, trace: str | os.PathLike[str], num_envs: int = 8, **kwargs: Any) -> None:
        mode = kwargs.pop("autoreset_mode", AutoresetMode.SAME_STEP)
        if mode not in (AutoresetMode.SAME_STEP, "same-step", "same_step", "SameStep"):
            raise ValueError(f"CascadeVecEnv resets sub-envs in the terminating step (same-step); got autoreset_mode {mode!r}")
        kwargs.pop("copy", None)
        kwargs.pop("final_obs_layout", None)
        self.venv = CascadeStoppingVectorEnv(
            num_envs, trace, autoreset_mode=AutoresetMode.SAME_STEP, copy=True, **kwargs
        )
        self._actions: np.ndarray | None = None
        super().__init__(num_envs, self.venv.single_observation_space, self.venv.single_action_space)

    def reset(self) -> dict[str, np.ndarray]:
        seeds = self._seeds
        seed = seeds[0]
        if seed is not None and any(s != seed + i for i, s in enumerate(seeds)):
            raise ValueError(f"CascadeVecEnv seeds sub-env i with seed + i; got the seeds {seeds}")
        if any(self._options):
            raise ValueError(f"CascadeVecEnv takes no reset options; got {self._options}")
        obs, _ = self.venv.reset(seed=seed)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._actions is None:
            raise RuntimeError("CascadeVecEnv.step_wait() without step_async()")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, info = self.venv.step(actions)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final_obs, final = info["final_obs"], info["final_info"]
            for i in np.flatnonzero(dones):
                infos[i] = {
                    "terminal_observation": {key: value[i] for key, value in final_obs.items()},
                    "TimeLimit.truncated": bool(truncated[i]),
                    "prediction": int(final["prediction"][i]),
                    "label": int(final["label"][i]),
                    "loss": float(final["loss"][i]),
                }
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Each sub-env's attribute; methods (``action_masks``, ``render``)
        come back as callables, as from ``DummyVecEnv``."""
        idx = self._indices(indices)
        if attr_name in ("action_masks", "render"):
            return [_SubEnvMethod(self.venv, attr_name, i) for i in idx]
        values = self.venv.get_attr(attr_name)
        return [values[i] for i in idx]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        idx = self._indices(indices)
        current = list(self.venv._sub_attrs.get(attr_name, [None] * self.num_envs))
        for i in idx:
            current[i] = value
        self.venv.set_attr(attr_name, current)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        idx = self._indices(indices)
        values = self.venv.call(method_name, *method_args, **method_kwargs)
        return [values[i] for i in idx]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        return list(self.venv.render() or ())

    def action_masks(self) -> np.ndarray:
        """Every sub-env's legal actions, ``bool [n, 2]``."""
        return self.venv.action_masks()


class _SubEnvMethod:
    """A method of one sub-env, as ``get_attr`` returns it."""

    def __init__(self, venv: CascadeStoppingVectorEnv, name: str, i: int) -> None:
        self.venv, self.name, self.i = venv, name, i

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.venv.call(self.name, *args, **kwargs)[self.i]
