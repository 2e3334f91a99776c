"""The Gymnasium classes of CascadeStopping-v0 over the Rust env.

:class:`CascadeStoppingEnv` wraps the Rust ``OptimalStoppingEnv`` (one
episode at a time); :class:`CascadeStoppingVectorEnv` wraps the Rust
``VecEnv`` (n episodes in lock step, stepped in Rust without the GIL, the
results written into fresh numpy arrays). Both replay a trace file.
"""

from __future__ import annotations

import json
import operator
import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from . import _native

ObsDict = dict[str, Any]


def _observation_space(native: _native.Env | _native.VecEnv) -> spaces.Dict:
    costs = native.stage_costs
    return spaces.Dict(
        {
            "stage": spaces.Discrete(native.num_stages),
            "features": spaces.Box(-np.inf, np.inf, (max(native.feature_dims),), np.float32),
            "probs": spaces.Box(0.0, 1.0, (native.num_classes,), np.float32),
            "cost_so_far": spaces.Box(0.0, np.float32(costs[-1]), (1,), np.float32),
        }
    )


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _check_render_mode(render_mode: str | None) -> None:
    if render_mode is not None:
        raise ValueError(f"CascadeStopping-v0 has no render modes, got render_mode={render_mode!r}")


class CascadeStoppingEnv(gym.Env[ObsDict, np.int64]):
    """CascadeStopping-v0: one input per episode, stop or forward.

    Made by ``gymnasium.make("CascadeStopping-v0", trace=PATH, ...)``.

    Args:
        trace: A trace file (see :func:`cascade_env.load_trace`).
        alpha: Price of compute, in loss units per full-model cost (>= 0).
        loss: ``"zero-one"`` or ``"cross-entropy"`` (``-ln p_k(y)``).
        cost: ``"cumulative"`` (``Cost(k) = (F_1 + ... + F_k) / F_K``,
            separate networks) or ``"exit"`` (``F_k / F_K``, early exits).
        prediction: ``"argmax"`` or ``"sample"`` (a draw from ``p_k``
            with the env's seeded random stream).
        render_mode: Must be None (there is nothing to render).

    Action space:
        ``Discrete(2)``: 0 = stop and predict, 1 = forward to the next
        stage. ``info["action_mask"]`` (``int8 [2]``, stop then forward)
        says which are legal; forward at the last stage raises
        ``ValueError`` (never clamped), as does any other action value.

    Observation space:
        ``Dict`` with ``stage`` (``Discrete(K)``, the 0-based stage that
        has run last), ``features`` (``float32 [max_t d_t]``: the stage's
        ``d_t`` features, zero-padded to the widest stage; the true width
        is ``info["feature_dim"]`` and ``feature_dims[stage]``), ``probs``
        (``float32 [C]``, the stage's label probabilities) and
        ``cost_so_far`` (``float32 [1]``, the normalised cost spent).

    Info:
        Every step: ``action_mask``, ``sample`` (the input's index in the
        trace), ``cost`` (normalised cost so far, ``float``), ``raw_cost``
        (in the trace's cost unit) and ``feature_dim``. On termination also
        ``prediction``, ``label`` and ``loss``; ``cost`` is then the
        episode's cost ``Cost(k)``.

    Reward:
        0 for forward; ``-L(yhat, y) - alpha * Cost(k)`` for stop at stage
        k. Episodes end by stop (terminated), after at most K steps, and are
        never truncated.

    Seeding:
        ``reset(seed=s)`` reseeds the Rust env's own random stream (which
        draws the input and, with ``prediction="sample"``, the prediction);
        ``reset()`` continues it. ``reset(options={"sample": i})`` plays
        input i.

    Errors:
        Stepping before ``reset`` or after termination raises
        ``RuntimeError`` (``gymnasium.make`` wraps the env in
        ``OrderEnforcing``, which raises ``gymnasium.error.ResetNeeded``
        before the first reset).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        trace: str | os.PathLike[str],
        alpha: float = 0.1,
        loss: str = "zero-one",
        cost: str = "cumulative",
        prediction: str = "argmax",
        render_mode: str | None = None,
    ) -> None:
        _check_render_mode(render_mode)
        self.render_mode = None
        self._native = _native.Env(os.fspath(trace), float(alpha), loss, cost, prediction)
        self.trace_path: str = os.fspath(trace)
        self.observation_space = _observation_space(self._native)
        self.action_space = spaces.Discrete(2)
        #: Feature width ``d_t`` per stage.
        self.feature_dims: list[int] = self._native.feature_dims
        #: Normalised ``Cost(t+1)`` per 0-based stage t.
        self.stage_costs: list[float] = self._native.stage_costs
        #: The trace header.
        self.header: dict[str, Any] = json.loads(self._native.header_json)

    @property
    def num_stages(self) -> int:
        """Number of stages K."""
        return self._native.num_stages

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self._native.num_classes

    @staticmethod
    def _obs(t: tuple[int, np.ndarray, np.ndarray, float]) -> ObsDict:
        stage, features, probs, cost = t
        return {
            "stage": np.int64(stage),
            "features": features,
            "probs": probs,
            "cost_so_far": np.array([cost], dtype=np.float32),
        }

    @staticmethod
    def _info(t: tuple[bool, bool, int, float, float, int, Any]) -> dict[str, Any]:
        stop, forward, sample, cost, raw_cost, feature_dim, outcome = t
        info: dict[str, Any] = {
            "action_mask": np.array([stop, forward], dtype=np.int8),
            "sample": sample,
            "cost": cost,
            "raw_cost": raw_cost,
            "feature_dim": feature_dim,
        }
        if outcome is not None:
            info["prediction"], info["label"], info["loss"] = outcome
        return info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsDict, dict[str, Any]]:
        """Starts an episode on a uniformly drawn input (or ``options["sample"]``).

        Args:
            seed: Reseeds the env's random stream (an int >= 0); None continues it.
            options: ``{"sample": i}`` plays input i; other keys are refused.

        Returns:
            The first observation (stage 0 has run) and its info.
        """
        super().reset(seed=seed)
        sample = None
        if options:
            unknown = set(options) - {"sample"}
            if unknown:
                raise ValueError(f"unknown reset options {sorted(unknown)}: only 'sample' is understood")
            sample = options.get("sample")
            if sample is not None:
                sample = operator.index(sample)
                if sample < 0:
                    raise ValueError(f"reset option sample must be >= 0, got {sample}")
        obs, info = self._native.reset(seed, sample)
        return self._obs(obs), self._info(info)

    def step(self, action: Any) -> tuple[ObsDict, float, bool, bool, dict[str, Any]]:
        """Takes ``action`` (0 = stop, 1 = forward).

        Returns:
            ``(obs, reward, terminated, truncated, info)``; on stop the
            observation is the one stopped at.

        Raises:
            ValueError: An action other than 0 or 1, or forward at the last stage.
            RuntimeError: No running episode (before reset, after termination).
        """
        obs, reward, terminated, info = self._native.step(operator.index(action))
        return self._obs(obs), reward, terminated, False, self._info(info)


# Action dtypes the Rust step reads without a conversion.
_NATIVE_ACTION_DTYPES = (np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.int8), np.dtype(np.bool_))

_MODES = {
    AutoresetMode.NEXT_STEP: "next-step",
    AutoresetMode.SAME_STEP: "same-step",
    AutoresetMode.DISABLED: "disabled",
}


def _autoreset_mode(mode: AutoresetMode | str) -> AutoresetMode:
    if isinstance(mode, AutoresetMode):
        return mode
    if isinstance(mode, str):
        key = mode.replace("-", "").replace("_", "").lower()
        for m in AutoresetMode:
            if m.value.lower() == key or m.name.replace("_", "").lower() == key:
                return m
    raise ValueError(
        f"unknown autoreset_mode {mode!r}: expected an AutoresetMode or one of "
        "'next-step', 'same-step', 'disabled'"
    )


class CascadeStoppingVectorEnv(gym.vector.VectorEnv):
    """n episodes of CascadeStopping-v0 stepped together in Rust.

    Made by ``gymnasium.make_vec("CascadeStopping-v0", num_envs=n,
    vectorization_mode="vector_entry_point", trace=PATH, ...)``; sub-env i
    behaves exactly like a :class:`CascadeStoppingEnv` reset with seed
    ``seed + i`` (Gymnasium's convention), as under ``SyncVectorEnv``.

    Args:
        num_envs: Number of sub-envs n.
        trace, alpha, loss, cost, prediction: As for :class:`CascadeStoppingEnv`.
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` (the default, as in
            Gymnasium), ``SAME_STEP`` or ``DISABLED`` (or their names).
        copy: True (the default, as ``SyncVectorEnv``'s ``copy``): every
            call returns fresh arrays that nothing writes again. False:
            the arrays are reused, for speed; a call's observation and info
            arrays are overwritten two calls later, its rewards,
            terminations and outcomes by the next step (``truncated`` and
            the masks are shared read-only arrays). Copy what you keep.
        render_mode: Must be None.

    Spaces:
        ``single_observation_space``/``single_action_space`` are those of
        :class:`CascadeStoppingEnv`; the batched ones come from
        ``gymnasium.vector.utils.batch_space``: ``stage`` ``int64 [n]``,
        ``features`` ``float32 [n, max_d]``, ``probs`` ``float32 [n, C]``,
        ``cost_so_far`` ``float32 [n, 1]``; actions ``MultiDiscrete([2] * n)``,
        any integer dtype.

    The arrays are filled by Rust, without a per-sub-env Python loop and
    with the GIL released; with ``copy=True`` every call returns fresh
    ones.

    Info (a dict of arrays, each key with its ``_key`` boolean mask):
        ``action_mask`` ``int8 [n, 2]``, ``sample``, ``cost``,
        ``raw_cost``, ``feature_dim`` for every sub-env (masks all true).
        Under ``NEXT_STEP`` and ``DISABLED``, ``prediction``, ``label`` and
        ``loss`` of the episodes that terminated in this step (mask =
        ``terminated``, zeros elsewhere). Under ``SAME_STEP``, where a
        terminated sub-env's returned observation is already its next
        episode's first: ``final_info`` (the same keys as a single env's
        final info, each masked by ``terminated``) and ``final_obs``, the
        observation stopped at. Unlike ``SyncVectorEnv``'s object array of
        per-env dicts, ``final_obs`` is batched like the observations (the
        rows where ``_final_obs`` is true are valid): it is the observation
        dict returned by the previous call, the same arrays.

    Autoreset:
        ``NEXT_STEP``: a terminated sub-env's next action is ignored and it
        restarts (reward 0, not terminated). ``SAME_STEP``: it restarts in
        the terminating step. ``DISABLED``: it stays done (actions ignored,
        reward 0, observation frozen) until
        ``reset(options={"reset_mask": mask})`` restarts the sub-envs where
        ``mask`` is true (reseeding them with ``seed + i`` when a seed is
        given).
    """

    def __init__(
        self,
        num_envs: int,
        trace: str | os.PathLike[str],
        alpha: float = 0.1,
        loss: str = "zero-one",
        cost: str = "cumulative",
        prediction: str = "argmax",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        copy: bool = True,
        render_mode: str | None = None,
    ) -> None:
        _check_render_mode(render_mode)
        mode = _autoreset_mode(autoreset_mode)
        num_envs = operator.index(num_envs)
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self._native = _native.VecEnv(
            os.fspath(trace), num_envs, _MODES[mode], float(alpha), loss, cost, prediction, bool(copy)
        )
        self.copy = bool(copy)
        self.trace_path: str = os.fspath(trace)
        self.num_envs = num_envs
        self.render_mode = None
        self.metadata = {"autoreset_mode": mode, "render_modes": []}
        self.autoreset_mode = mode
        self.single_observation_space = _observation_space(self._native)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        #: Feature width ``d_t`` per stage.
        self.feature_dims: list[int] = self._native.feature_dims
        #: Normalised ``Cost(t+1)`` per 0-based stage t.
        self.stage_costs: list[float] = self._native.stage_costs
        #: The trace header.
        self.header: dict[str, Any] = json.loads(self._native.header_json)
        self._all = _read_only(np.ones(num_envs, dtype=np.bool_))
        self._false = _read_only(np.zeros(num_envs, dtype=np.bool_))
        self._no_actions = _read_only(np.zeros((num_envs, 2), dtype=np.int8))
        self._last_obs: ObsDict | None = None

    @property
    def num_stages(self) -> int:
        """Number of stages K."""
        return self._native.num_stages

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self._native.num_classes

    @staticmethod
    def _obs(t: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> ObsDict:
        stage, features, probs, cost = t
        return {"stage": stage, "features": features, "probs": probs, "cost_so_far": cost}

    def _info(self, t: tuple[np.ndarray, ...]) -> dict[str, Any]:
        action_mask, sample, cost, raw_cost, feature_dim = t
        a = self._all
        return {
            "action_mask": action_mask,
            "_action_mask": a,
            "sample": sample,
            "_sample": a,
            "cost": cost,
            "_cost": a,
            "raw_cost": raw_cost,
            "_raw_cost": a,
            "feature_dim": feature_dim,
            "_feature_dim": a,
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsDict, dict[str, Any]]:
        """Resets every sub-env, or those of ``options["reset_mask"]``.

        Args:
            seed: An int >= 0: sub-env i is reseeded with ``seed + i``; None
                continues each sub-env's stream.
            options: ``{"reset_mask": m}`` with ``m`` a ``bool [n]`` array
                (at least one true) restarts only those sub-envs, done or
                not; other keys are refused.

        Returns:
            The batched observations and info.
        """
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(
                f"seed must be an int or None (sub-env i uses seed + i), got {type(seed).__name__}"
            )
        super().reset(seed=seed)
        mask = None
        if options:
            unknown = set(options) - {"reset_mask"}
            if unknown:
                raise ValueError(f"unknown reset options {sorted(unknown)}: only 'reset_mask' is understood")
            mask = options["reset_mask"]
            if not isinstance(mask, np.ndarray):
                raise TypeError(f"options['reset_mask'] must be a numpy array, got {type(mask).__name__}")
            if mask.shape != (self.num_envs,):
                raise ValueError(f"options['reset_mask'] must have shape ({self.num_envs},), got {mask.shape}")
            if mask.dtype != np.bool_:
                raise TypeError(f"options['reset_mask'] must have dtype bool, got {mask.dtype}")
            if not mask.any():
                raise ValueError("options['reset_mask'] must have at least one true entry")
        obs_t, info_t = self._native.reset(None if seed is None else int(seed), mask)
        obs = self._obs(obs_t)
        self._last_obs = obs
        return obs, self._info(info_t)

    def step(
        self, actions: Any
    ) -> tuple[ObsDict, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Takes one action per sub-env (0 = stop, 1 = forward).

        Args:
            actions: Integers ``[n]`` (any integer or bool dtype).

        Returns:
            ``(obs, rewards float64 [n], terminated bool [n], truncated bool [n]
            (all false), info)``.

        Raises:
            ValueError: An action not 0 or 1, forward at the last stage for a
                running sub-env, or the wrong number of actions; nothing
                changes then.
            RuntimeError: Before the first reset.
        """
        a = np.asarray(actions)
        if a.dtype not in _NATIVE_ACTION_DTYPES:
            if a.dtype.kind not in "iub":
                raise TypeError(f"actions must be integers, got dtype {a.dtype}")
            a = a.astype(np.int64)
        if a.ndim != 1:
            raise ValueError(f"actions must have shape ({self.num_envs},), got {a.shape}")
        obs_t, rewards, terminated, info_t, outcome = self._native.step(a)
        obs = self._obs(obs_t)
        info = self._info(info_t)
        done = _read_only(terminated.copy())
        prediction, label, loss, finals = outcome
        if finals is None:
            info.update(
                prediction=prediction,
                _prediction=done,
                label=label,
                _label=done,
                loss=loss,
                _loss=done,
            )
        else:
            sample, cost, raw_cost, feature_dim = finals
            info["final_info"] = {
                "action_mask": self._no_actions if not self.copy else np.zeros((self.num_envs, 2), dtype=np.int8),
                "_action_mask": done,
                "sample": sample,
                "_sample": done,
                "cost": cost,
                "_cost": done,
                "raw_cost": raw_cost,
                "_raw_cost": done,
                "feature_dim": feature_dim,
                "_feature_dim": done,
                "prediction": prediction,
                "_prediction": done,
                "label": label,
                "_label": done,
                "loss": loss,
                "_loss": done,
            }
            info["_final_info"] = done
            info["final_obs"] = self._last_obs
            info["_final_obs"] = done
        self._last_obs = obs
        truncated = self._false if not self.copy else np.zeros(self.num_envs, dtype=np.bool_)
        return obs, rewards, terminated, truncated, info
