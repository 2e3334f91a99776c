"""The Gymnasium classes of CascadeStopping-v0 over the Rust env.

:class:`CascadeStoppingEnv` wraps the Rust ``OptimalStoppingEnv`` (one
episode at a time); :class:`CascadeStoppingVectorEnv` wraps the Rust
``VecEnv`` (n episodes in lock step, stepped in Rust without the GIL, the
results written into fresh numpy arrays). Both replay a trace file.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
import secrets
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from . import _native

ObsDict = dict[str, Any]

#: The render modes both env classes accept (besides None).
RENDER_MODES = ["ansi", "rgb_array"]
#: The most sub-envs a native vector env may have (its buffers are also
#: limited to 16 GiB, which a wide trace reaches with fewer).
MAX_NUM_ENVS = 1 << 24
#: The largest seed: seeds are unsigned 64-bit integers.
MAX_SEED = (1 << 64) - 1
_LAST_STAGE_FORWARD = ("error", "stop")
_FINAL_OBS_LAYOUTS = ("batched", "per-env")


def _observation_space(native: _native.Env | _native.VecEnv, mask_in_obs: bool) -> spaces.Dict:
    costs = native.stage_costs
    entries: dict[str, spaces.Space[Any]] = {
        "stage": spaces.Discrete(native.num_stages),
        "features": spaces.Box(-np.inf, np.inf, (max(native.feature_dims),), np.float32),
        "probs": spaces.Box(0.0, 1.0, (native.num_classes,), np.float32),
        "cost_so_far": spaces.Box(0.0, np.float32(costs[-1]), (1,), np.float32),
    }
    if mask_in_obs:
        entries["action_mask"] = spaces.MultiBinary(2)
    return spaces.Dict(entries)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _check_render_mode(render_mode: str | None) -> None:
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(
            f"CascadeStopping-v0 does not render in mode {render_mode!r}: "
            f"expected None, {RENDER_MODES[0]!r} or {RENDER_MODES[1]!r}"
        )


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}: expected one of {', '.join(map(repr, choices))}")
    return value


def _check_seed(seed: Any, num_envs: int = 1) -> int | None:
    """None, or an int with ``seed + num_envs - 1 <= 2**64 - 1``."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    seed = int(seed)
    if seed < 0 or seed > MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**64 - 1], got {seed}")
    if seed + num_envs - 1 > MAX_SEED:
        raise ValueError(
            f"seed {seed} is too large for {num_envs} sub-envs: sub-env i uses seed + i, which must "
            f"stay <= 2**64 - 1; give a seed <= {MAX_SEED - (num_envs - 1)}"
        )
    return seed


def _entropy_seed(num_envs: int = 1) -> int:
    """A seed from OS entropy, small enough that ``seed + num_envs - 1`` fits."""
    return secrets.randbelow(MAX_SEED - num_envs + 2)


def _check_pin(path: str, header: dict[str, Any], trace_sha256: str | None) -> str:
    have = str(header["content_sha256"])
    if trace_sha256 is not None and str(trace_sha256).lower() != have:
        raise ValueError(
            f"trace {path}: its content_sha256 is {have}, not the pinned trace_sha256 {trace_sha256}"
        )
    return have


def _pinned_spec(spec: Any, sha: str) -> Any:
    """The spec ``gymnasium.make`` sets, with the trace's hash in its kwargs."""
    if spec is None or "trace" not in spec.kwargs or spec.kwargs.get("trace_sha256") == sha:
        return spec
    return dataclasses.replace(spec, kwargs={**spec.kwargs, "trace_sha256": sha})


def render_text(stage: int, num_stages: int, probs: np.ndarray, cost: float, sample: int,
                outcome: tuple[int, int, float] | None) -> str:
    """One line describing a sub-env's state (the ``"ansi"`` render)."""
    top = int(np.argmax(probs))
    line = (
        f"sample {sample}: stage {stage + 1}/{num_stages} ran, cost {cost:.4g}, "
        f"top class {top} (p {float(probs[top]):.3f})"
    )
    if outcome is not None:
        pred, label, loss = outcome
        line += f"; stopped: predicted {pred}, label {label}, loss {loss:.4g}"
    return line + "\n"


def render_image(stage: int, num_stages: int, probs: np.ndarray, outcome: tuple[int, int, float] | None) -> np.ndarray:
    """A small picture of a sub-env's state (the ``"rgb_array"`` render).

    ``uint8 [64, 8 * (K + 1 + C), 3]``: on the left one column per stage,
    green for the stages run, grey for the others; on the right one bar per
    class, its height the stage's probability (blue; after a stop the
    prediction's bar is green when right and red when wrong).
    """
    k, c = num_stages, len(probs)
    h, w = 64, 8
    img = np.full((h, w * (k + 1 + c), 3), 255, dtype=np.uint8)
    for t in range(k):
        img[8:h - 8, t * w + 1:(t + 1) * w - 1] = (60, 170, 60) if t <= stage else (200, 200, 200)
    base = (k + 1) * w
    for j in range(c):
        top = h - int(round(float(probs[j]) * (h - 4)))
        color = (50, 90, 200)
        if outcome is not None and j == outcome[0]:
            color = (60, 170, 60) if outcome[0] == outcome[1] else (210, 50, 50)
        img[top:h, base + j * w + 1:base + (j + 1) * w - 1] = color
    return img


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
        render_mode: None, ``"ansi"`` (``render()`` returns a line of
            text) or ``"rgb_array"`` (a small ``uint8 [64, W, 3]`` picture:
            the stages run and the stage's probabilities).
        last_stage_forward: ``"error"`` (the default: forward at the last
            stage raises ``ValueError``, as the MDP says) or ``"stop"``
            (forward at the last stage is taken as stop, with stop's reward
            and outcome: for learners that sample actions without the mask,
            such as Stable-Baselines3's PPO).
        action_mask_in_obs: Adds the action mask to the observation, as
            ``action_mask`` (``MultiBinary(2)``, ``int8``: stop, forward).
        trace_sha256: The trace's expected ``content_sha256``: a trace
            with other content is refused (``ValueError``). ``gymnasium.make``
            records the trace's hash under this key in ``env.spec.kwargs``,
            so ``gymnasium.make(env.spec)`` remakes the env on the same data.

    Action space:
        ``Discrete(2)``: 0 = stop and predict, 1 = forward to the next
        stage. :meth:`action_masks` and ``info["action_mask"]`` (``int8
        [2]``, stop then forward) say which are legal; forward at the last
        stage raises ``ValueError`` unless ``last_stage_forward="stop"``
        (never clamped otherwise), as does any other action value.

    Observation space:
        ``Dict`` with ``stage`` (``Discrete(K)``, the 0-based stage that
        has run last), ``features`` (``float32 [max_t d_t]``: the stage's
        ``d_t`` features, zero-padded to the widest stage; the true width
        is ``info["feature_dim"]`` and ``feature_dims[stage]``), ``probs``
        (``float32 [C]``, the stage's label probabilities),
        ``cost_so_far`` (``float32 [1]``, the normalised cost spent) and,
        with ``action_mask_in_obs=True``, ``action_mask`` (``int8 [2]``).

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
        ``reset(seed=s)`` (``0 <= s <= 2**64 - 1``) reseeds the Rust env's
        own random stream (which draws the input and, with
        ``prediction="sample"``, the prediction); ``reset()`` continues it.
        An env whose first reset has no seed draws one from OS entropy, as
        Gymnasium's envs do, so unseeded envs play different inputs.
        ``reset(options={"sample": i})`` plays input i.

    Pickling:
        ``pickle`` and ``copy.deepcopy`` rebuild the env from its
        arguments (re-reading the trace, which must still hash to the
        same ``content_sha256``) and restore its random stream and its
        running episode (input, stage, or terminated), so a copy steps
        exactly as the original would.

    Errors:
        Stepping before ``reset`` or after termination raises
        ``RuntimeError`` (``gymnasium.make`` wraps the env in
        ``OrderEnforcing``, which raises ``gymnasium.error.ResetNeeded``
        before the first reset); so does any call after :meth:`close`.

    Version history:
        v0: the Rust env's episodes, random streams and rewards. Within
        v0, seeded envs play the same episodes on every build (pinned by
        the tests); an env's first reset without a seed draws its seed
        from OS entropy (it used seed 0 once), and the options above
        (``last_stage_forward``, ``action_mask_in_obs``, renders) are
        opt-in, leaving the default env as it was.
    """

    metadata: dict[str, Any] = {"render_modes": list(RENDER_MODES), "render_fps": 4}

    def __init__(
        self,
        trace: str | os.PathLike[str],
        alpha: float = 0.1,
        loss: str = "zero-one",
        cost: str = "cumulative",
        prediction: str = "argmax",
        render_mode: str | None = None,
        last_stage_forward: str = "error",
        action_mask_in_obs: bool = False,
        trace_sha256: str | None = None,
    ) -> None:
        _check_render_mode(render_mode)
        _check_choice("last_stage_forward", last_stage_forward, _LAST_STAGE_FORWARD)
        path = os.fspath(trace)
        self._kwargs: dict[str, Any] = dict(
            trace=path, alpha=alpha, loss=loss, cost=cost, prediction=prediction,
            render_mode=render_mode, last_stage_forward=last_stage_forward,
            action_mask_in_obs=bool(action_mask_in_obs), trace_sha256=trace_sha256,
        )
        self.render_mode = render_mode
        self._native: _native.Env | None = _native.Env(
            path, float(alpha), loss, cost, prediction, last_stage_forward
        )
        self.trace_path: str = path
        #: Forward at the last stage: ``"error"`` or ``"stop"``.
        self.last_stage_forward: str = last_stage_forward
        self.action_mask_in_obs: bool = bool(action_mask_in_obs)
        self.observation_space = _observation_space(self._native, self.action_mask_in_obs)
        self.action_space = spaces.Discrete(2)
        #: Feature width ``d_t`` per stage.
        self.feature_dims: list[int] = self._native.feature_dims
        #: Normalised ``Cost(t+1)`` per 0-based stage t.
        self.stage_costs: list[float] = self._native.stage_costs
        #: The trace header (with its ``content_sha256``).
        self.header: dict[str, Any] = json.loads(self._native.header_json)
        #: The trace's content hash (``header["content_sha256"]``).
        self.trace_sha256: str = _check_pin(path, self.header, trace_sha256)
        self._num_stages: int = self._native.num_stages
        self._num_classes: int = self._native.num_classes
        self._spec: Any = None
        self._entropy_pending = True
        # (sample, stage, terminated) of the episode, for pickling; the
        # last observation and info, for rendering.
        self._episode: tuple[int, int, bool] | None = None
        self._last: tuple[ObsDict, dict[str, Any]] | None = None

    @property
    def spec(self) -> Any:  # type: ignore[override]
        """The ``EnvSpec`` ``gymnasium.make`` made this env from, with the
        trace's ``content_sha256`` as ``kwargs["trace_sha256"]``."""
        return self._spec

    @spec.setter
    def spec(self, value: Any) -> None:
        self._spec = _pinned_spec(value, self.trace_sha256)

    @property
    def num_stages(self) -> int:
        """Number of stages K."""
        return self._num_stages

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self._num_classes

    def _live(self) -> _native.Env:
        if self._native is None:
            raise RuntimeError("CascadeStopping-v0: the env is closed; make a new one")
        return self._native

    def _obs(self, t: tuple[int, np.ndarray, np.ndarray, float], mask: np.ndarray) -> ObsDict:
        stage, features, probs, cost = t
        obs = {
            "stage": np.int64(stage),
            "features": features,
            "probs": probs,
            "cost_so_far": np.array([cost], dtype=np.float32),
        }
        if self.action_mask_in_obs:
            obs["action_mask"] = mask.copy()
        return obs

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

    def _record(self, obs_t: Any, info_t: Any, terminated: bool) -> tuple[ObsDict, dict[str, Any]]:
        info = self._info(info_t)
        obs = self._obs(obs_t, info["action_mask"])
        self._episode = (info["sample"], int(obs_t[0]), terminated)
        self._last = (obs, info)
        return obs, info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsDict, dict[str, Any]]:
        """Starts an episode on a uniformly drawn input (or ``options["sample"]``).

        Args:
            seed: Reseeds the env's random stream (an int in ``[0, 2**64 - 1]``);
                None continues it (the first time, it seeds from OS entropy).
            options: ``{"sample": i}`` plays input i; other keys are refused.

        Returns:
            The first observation (stage 0 has run) and its info.
        """
        native = self._live()
        seed = _check_seed(seed)
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
        native_seed = seed
        if native_seed is None and self._entropy_pending:
            native_seed = _entropy_seed()
        obs, info = native.reset(native_seed, sample)
        self._entropy_pending = False
        return self._record(obs, info, False)

    def step(self, action: Any) -> tuple[ObsDict, float, bool, bool, dict[str, Any]]:
        """Takes ``action`` (0 = stop, 1 = forward).

        Returns:
            ``(obs, reward, terminated, truncated, info)``; on stop the
            observation is the one stopped at.

        Raises:
            ValueError: An action other than 0 or 1, or forward at the last
                stage (unless ``last_stage_forward="stop"``).
            RuntimeError: No running episode (before reset, after
                termination), or the env is closed.
        """
        obs_t, reward, terminated, info_t = self._live().step(operator.index(action))
        obs, info = self._record(obs_t, info_t, terminated)
        return obs, reward, terminated, False, info

    def action_masks(self) -> np.ndarray:
        """The legal actions now, ``bool [2]`` (stop, forward): what
        sb3-contrib's ``MaskablePPO`` reads. Both false before the first
        reset and after termination."""
        return np.array(self._live().action_mask(), dtype=np.bool_)

    def render(self) -> str | np.ndarray | None:  # type: ignore[override]
        """The current state as text (``"ansi"``) or a picture (``"rgb_array"``);
        None without a render mode."""
        if self.render_mode is None:
            gym.logger.warn("render() without a render_mode: make the env with render_mode='ansi' or 'rgb_array'")
            return None
        self._live()
        if self._last is None:
            stage, probs, cost, sample, outcome = 0, np.zeros(self._num_classes, np.float32), 0.0, -1, None
        else:
            obs, info = self._last
            stage, probs, cost, sample = int(obs["stage"]), obs["probs"], info["cost"], info["sample"]
            outcome = (info["prediction"], info["label"], info["loss"]) if "prediction" in info else None
        if self.render_mode == "ansi":
            if self._last is None:
                return "no episode yet (call reset)\n"
            return render_text(stage, self._num_stages, probs, cost, sample, outcome)
        return render_image(stage if self._last is not None else -1, self._num_stages, probs, outcome)

    def close(self) -> None:
        """Frees the trace; any later call but ``close`` raises ``RuntimeError``."""
        self._native = None
        super().close()

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            # The copy reads the trace again: it must hold the same data.
            "kwargs": {**self._kwargs, "trace_sha256": self.trace_sha256},
            "closed": self._native is None,
            "entropy_pending": self._entropy_pending,
            "episode": self._episode,
            "last": self._last,
            "spec": self._spec,
            "np_random": self._np_random,
            "np_random_seed": self._np_random_seed,
        }
        if self._native is not None:
            state["rng"] = self._native.rng_state()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["kwargs"])  # type: ignore[misc]
        self._spec = state["spec"]
        self._np_random = state["np_random"]
        self._np_random_seed = state["np_random_seed"]
        self._entropy_pending = state["entropy_pending"]
        if state["closed"]:
            self.close()
            return
        native = self._live()
        episode = state["episode"]
        if episode is not None:
            # Replay the episode (no random draw: the sample is given and
            # forward draws nothing; a stop's draw is undone below).
            sample, stage, terminated = episode
            native.reset(None, sample)
            for _ in range(stage):
                native.step(1)
            if terminated:
                native.step(0)
        self._episode, self._last = episode, state["last"]
        native.set_rng_state(*state["rng"])


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


# Attributes of the single env that get_attr reads from the vector env
# under another name.
_SINGLE_NAMES = {"observation_space": "single_observation_space", "action_space": "single_action_space"}
# Attributes a single env has, one value shared by every sub-env here.
_SHARED_ATTRS = (
    "feature_dims", "stage_costs", "header", "trace_path", "trace_sha256", "num_stages",
    "num_classes", "render_mode", "last_stage_forward", "action_mask_in_obs", "metadata",
)


class CascadeStoppingVectorEnv(gym.vector.VectorEnv):
    """n episodes of CascadeStopping-v0 stepped together in Rust.

    Made by ``gymnasium.make_vec("CascadeStopping-v0", num_envs=n,
    vectorization_mode="vector_entry_point", trace=PATH, ...)``; sub-env i
    behaves exactly like a :class:`CascadeStoppingEnv` reset with seed
    ``seed + i`` (Gymnasium's convention), as under ``SyncVectorEnv``.

    Args:
        num_envs: Number of sub-envs n, at most ``MAX_NUM_ENVS`` (2**24),
            and fewer where their buffers would pass 16 GiB (the error
            says how much a count needs); larger counts are refused before
            anything is allocated.
        trace, alpha, loss, cost, prediction, last_stage_forward,
            action_mask_in_obs, trace_sha256: As for :class:`CascadeStoppingEnv`.
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` (the default, as in
            Gymnasium), ``SAME_STEP`` or ``DISABLED`` (or their names).
        copy: True (the default, as ``SyncVectorEnv``'s ``copy``): every
            call returns fresh arrays that nothing writes again. False:
            the arrays are reused, for speed; a call's observation and info
            arrays are overwritten two calls later, its rewards,
            terminations and outcomes by the next step (``truncated`` and
            the masks are shared read-only arrays). Copy what you keep.
        final_obs_layout: Under ``SAME_STEP``, the layout of
            ``info["final_obs"]``: ``"batched"`` (the default: the
            observation dict of the previous call, arrays ``[n, ...]``) or
            ``"per-env"`` (``SyncVectorEnv``'s: an object array of n entries,
            each sub-env's observation dict where it terminated and None
            elsewhere).
        render_mode: None, ``"ansi"`` or ``"rgb_array"``: ``render()``
            returns a tuple of each sub-env's render.

    Spaces:
        ``single_observation_space``/``single_action_space`` are those of
        :class:`CascadeStoppingEnv`; the batched ones come from
        ``gymnasium.vector.utils.batch_space``: ``stage`` ``int64 [n]``,
        ``features`` ``float32 [n, max_d]``, ``probs`` ``float32 [n, C]``,
        ``cost_so_far`` ``float32 [n, 1]`` (and ``action_mask`` ``int8
        [n, 2]``); actions ``MultiDiscrete([2] * n)``, any integer dtype.

    The arrays are filled by Rust, without a per-sub-env Python loop and
    with the GIL released; with ``copy=True`` every call returns fresh
    ones. One vector env serves one thread at a time: a call while another
    thread's step or reset runs raises ``RuntimeError``.

    Info (a dict of arrays, each key with its ``_key`` boolean mask):
        ``action_mask`` ``int8 [n, 2]``, ``sample``, ``cost``,
        ``raw_cost``, ``feature_dim`` for every sub-env (masks all true).
        Under ``NEXT_STEP`` and ``DISABLED``, ``prediction``, ``label`` and
        ``loss`` of the episodes that terminated in this step (mask =
        ``terminated``, zeros elsewhere). Under ``SAME_STEP``, where a
        terminated sub-env's returned observation is already its next
        episode's first: ``final_info`` (the same keys as a single env's
        final info, each masked by ``terminated``) and ``final_obs``, the
        observation stopped at, in the ``final_obs_layout``.

    Autoreset:
        ``NEXT_STEP``: a terminated sub-env's next action is ignored and it
        restarts (reward 0, not terminated). ``SAME_STEP``: it restarts in
        the terminating step. ``DISABLED``: it stays done (actions ignored,
        reward 0, observation frozen) until
        ``reset(options={"reset_mask": mask})`` restarts the sub-envs where
        ``mask`` is true (reseeding them with ``seed + i`` when a seed is
        given).

    Seeding:
        ``reset(seed=s)`` seeds sub-env i with ``s + i``; a seed for which
        ``s + n - 1`` passes ``2**64 - 1`` is refused (``ValueError``), as
        it would wrap around. A first reset without a seed draws ``s``
        from OS entropy.

    Sub-env attributes:
        ``get_attr``, ``set_attr`` and ``call`` work as ``SyncVectorEnv``'s:
        the single env's attributes (the same value for every sub-env),
        ``call("action_masks")`` (each sub-env's mask) and ``call("render")``;
        ``set_attr`` stores per-sub-env values of new attributes and
        refuses to overwrite the env's own.

    Pickling:
        ``pickle`` and ``copy.deepcopy`` rebuild the vector env from its
        arguments (the trace must still hash to the same
        ``content_sha256``); its episodes and random streams are not restored, so
        the copy must be reset (with a seed, to be reproducible) first.
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
        last_stage_forward: str = "error",
        action_mask_in_obs: bool = False,
        final_obs_layout: str = "batched",
        trace_sha256: str | None = None,
    ) -> None:
        _check_render_mode(render_mode)
        _check_choice("last_stage_forward", last_stage_forward, _LAST_STAGE_FORWARD)
        _check_choice("final_obs_layout", final_obs_layout, _FINAL_OBS_LAYOUTS)
        mode = _autoreset_mode(autoreset_mode)
        num_envs = operator.index(num_envs)
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if num_envs > MAX_NUM_ENVS:
            raise ValueError(f"num_envs {num_envs} is above the limit of {MAX_NUM_ENVS} sub-envs (2**24)")
        path = os.fspath(trace)
        self._kwargs: dict[str, Any] = dict(
            num_envs=num_envs, trace=path, alpha=alpha, loss=loss, cost=cost, prediction=prediction,
            autoreset_mode=mode, copy=bool(copy), render_mode=render_mode,
            last_stage_forward=last_stage_forward, action_mask_in_obs=bool(action_mask_in_obs),
            final_obs_layout=final_obs_layout, trace_sha256=trace_sha256,
        )
        self._native: _native.VecEnv | None = _native.VecEnv(
            path, num_envs, _MODES[mode], float(alpha), loss, cost, prediction, bool(copy), last_stage_forward
        )
        self.copy = bool(copy)
        self.trace_path: str = path
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.metadata = {"autoreset_mode": mode, "render_modes": list(RENDER_MODES)}
        self.autoreset_mode = mode
        self.last_stage_forward: str = last_stage_forward
        self.action_mask_in_obs: bool = bool(action_mask_in_obs)
        self.final_obs_layout: str = final_obs_layout
        self.single_observation_space = _observation_space(self._native, self.action_mask_in_obs)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        #: Feature width ``d_t`` per stage.
        self.feature_dims: list[int] = self._native.feature_dims
        #: Normalised ``Cost(t+1)`` per 0-based stage t.
        self.stage_costs: list[float] = self._native.stage_costs
        #: The trace header (with its ``content_sha256``).
        self.header: dict[str, Any] = json.loads(self._native.header_json)
        #: The trace's content hash (``header["content_sha256"]``).
        self.trace_sha256: str = _check_pin(path, self.header, trace_sha256)
        self._num_stages: int = self._native.num_stages
        self._num_classes: int = self._native.num_classes
        self._all = _read_only(np.ones(num_envs, dtype=np.bool_))
        self._false = _read_only(np.zeros(num_envs, dtype=np.bool_))
        self._no_actions = _read_only(np.zeros((num_envs, 2), dtype=np.int8))
        self._last_obs: ObsDict | None = None
        self._last_info: dict[str, Any] | None = None
        self._entropy_pending = True
        self._spec_value: Any = None
        # Values set_attr stored, per name: one per sub-env.
        self._sub_attrs: dict[str, list[Any]] = {}

    @property
    def spec(self) -> Any:  # type: ignore[override]
        """The ``EnvSpec`` this vector env was made from, with the trace's
        ``content_sha256`` as ``kwargs["trace_sha256"]``."""
        return self._spec_value

    @spec.setter
    def spec(self, value: Any) -> None:
        self._spec_value = _pinned_spec(value, self.trace_sha256)

    @property
    def num_stages(self) -> int:
        """Number of stages K."""
        return self._num_stages

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self._num_classes

    def _live(self) -> _native.VecEnv:
        if self._native is None:
            raise RuntimeError("CascadeStopping-v0 vector env: it is closed; make a new one")
        return self._native

    def _obs(self, t: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], mask: np.ndarray) -> ObsDict:
        stage, features, probs, cost = t
        obs = {"stage": stage, "features": features, "probs": probs, "cost_so_far": cost}
        if self.action_mask_in_obs:
            obs["action_mask"] = mask.copy() if self.copy else mask
        return obs

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
            seed: An int with ``seed + n - 1 <= 2**64 - 1``: sub-env i is
                reseeded with ``seed + i``; None continues each sub-env's
                stream (the first time, from a seed drawn from OS entropy).
            options: ``{"reset_mask": m}`` with ``m`` a ``bool [n]`` array
                (at least one true) restarts only those sub-envs, done or
                not; other keys are refused.

        Returns:
            The batched observations and info.
        """
        native = self._live()
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(
                f"seed must be an int or None (sub-env i uses seed + i), got {type(seed).__name__}"
            )
        seed = _check_seed(seed, self.num_envs)
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
        native_seed = seed
        if native_seed is None and mask is None and self._entropy_pending:
            native_seed = _entropy_seed(self.num_envs)
        obs_t, info_t = native.reset(native_seed, mask)
        if mask is None:
            self._entropy_pending = False
        info = self._info(info_t)
        obs = self._obs(obs_t, info["action_mask"])
        self._last_obs, self._last_info = obs, info
        return obs, info

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
                running sub-env (unless ``last_stage_forward="stop"``), or
                the wrong number of actions; nothing changes then.
            RuntimeError: Before the first reset, after ``close()``, or
                while another thread's call runs.
        """
        native = self._live()
        a = np.asarray(actions)
        if a.dtype not in _NATIVE_ACTION_DTYPES:
            if a.dtype.kind not in "iub":
                raise TypeError(f"actions must be integers, got dtype {a.dtype}")
            if a.dtype.kind == "u" and a.size and int(a.max()) > 1:
                # Refused here: a cast to int64 would wrap 2**63 and up to
                # negative numbers and report those instead.
                i = int(np.argmax(a.reshape(-1) > 1))
                raise ValueError(
                    f"action {int(a.reshape(-1)[i])} of sub-env {i} is not in Discrete(2) (0 = stop, 1 = forward)"
                )
            a = a.astype(np.int64)
        if a.ndim != 1:
            raise ValueError(f"actions must have shape ({self.num_envs},), got {a.shape}")
        obs_t, rewards, terminated, info_t, outcome = native.step(a)
        info = self._info(info_t)
        obs = self._obs(obs_t, info["action_mask"])
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
            info["final_obs"] = self._final_obs(self._last_obs, done)
            info["_final_obs"] = done
        self._last_obs, self._last_info = obs, info
        truncated = self._false if not self.copy else np.zeros(self.num_envs, dtype=np.bool_)
        return obs, rewards, terminated, truncated, info

    def _final_obs(self, last: ObsDict | None, done: np.ndarray) -> Any:
        if self.final_obs_layout == "batched" or last is None:
            return last
        out = np.full(self.num_envs, None, dtype=object)
        for i in np.flatnonzero(done):
            one = {key: value[i].copy() for key, value in last.items()}
            if self.action_mask_in_obs:
                # The observation stopped at has no legal action left.
                one["action_mask"] = np.zeros(2, dtype=np.int8)
            out[i] = one
        return out

    def action_masks(self) -> np.ndarray:
        """The legal actions of every sub-env now, ``bool [n, 2]`` (stop,
        forward; both false for a done sub-env and before the first reset)."""
        return self._live().action_masks()

    def _sub_env_render(self, i: int) -> str | np.ndarray:
        obs, info = self._last_obs, self._last_info
        if obs is None or info is None:
            if self.render_mode == "ansi":
                return "no episode yet (call reset)\n"
            return render_image(-1, self._num_stages, np.zeros(self._num_classes, np.float32), None)
        stage, probs = int(obs["stage"][i]), obs["probs"][i]
        if self.render_mode == "ansi":
            return render_text(stage, self._num_stages, probs, float(info["cost"][i]), int(info["sample"][i]), None)
        return render_image(stage, self._num_stages, probs, None)

    def render(self) -> tuple[Any, ...] | None:
        """Each sub-env's render (text or picture, as for the single env) of
        the last returned observations; None without a render mode."""
        if self.render_mode is None:
            gym.logger.warn("render() without a render_mode: make the env with render_mode='ansi' or 'rgb_array'")
            return None
        self._live()
        return tuple(self._sub_env_render(i) for i in range(self.num_envs))

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Each sub-env's attribute ``name``, called with the arguments if
        it is a method: ``action_masks`` and ``render`` per sub-env, the
        single env's other attributes (one value shared by all), and what
        :meth:`set_attr` stored."""
        self._live()
        n = self.num_envs
        if name == "action_masks":
            masks = self.action_masks()
            return tuple(masks[i] for i in range(n))
        if name == "render":
            return tuple(self._sub_env_render(i) for i in range(n)) if self.render_mode else (None,) * n
        if name in self._sub_attrs:
            values = self._sub_attrs[name]
            return tuple(v(*args, **kwargs) if callable(v) else v for v in values)
        if name in _SINGLE_NAMES:
            return (getattr(self, _SINGLE_NAMES[name]),) * n
        if name in _SHARED_ATTRS:
            return (getattr(self, name),) * n
        raise AttributeError(
            f"the sub-envs of the native vector env have no attribute {name!r} "
            f"(they have {', '.join(sorted(('action_masks', 'render', *_SINGLE_NAMES, *_SHARED_ATTRS)))})"
        )

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Each sub-env's attribute ``name`` (see :meth:`call`)."""
        return self.call(name)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        """Sets attribute ``name`` of each sub-env: ``values`` is one value
        per sub-env, or one value for all. The env's own attributes (its
        settings and trace properties) cannot be set: make a new env."""
        self._live()
        own = {"action_masks", "render", *_SINGLE_NAMES, *_SHARED_ATTRS}
        if name in own or hasattr(CascadeStoppingEnv, name):
            raise AttributeError(
                f"cannot set {name!r}: it is an attribute of the env itself, fixed when it is made "
                "(make a new env with other arguments)"
            )
        if isinstance(values, (list, tuple)):
            if len(values) != self.num_envs:
                raise ValueError(f"set_attr({name!r}): {len(values)} values for {self.num_envs} sub-envs")
            self._sub_attrs[name] = list(values)
        else:
            self._sub_attrs[name] = [values] * self.num_envs

    def close_extras(self, **kwargs: Any) -> None:
        """Frees the trace and the buffers; any later step or reset raises."""
        self._native = None

    def __getstate__(self) -> dict[str, Any]:
        # The copy reads the trace again: it must hold the same data.
        return {"kwargs": {**self._kwargs, "trace_sha256": self.trace_sha256},
                "closed": self._native is None, "spec": self._spec_value, "sub_attrs": self._sub_attrs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["kwargs"])  # type: ignore[misc]
        self._spec_value = state["spec"]
        self._sub_attrs = state["sub_attrs"]
        if state["closed"]:
            self.close()
