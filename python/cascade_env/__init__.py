"""CascadeStopping-v0 for Gymnasium, backed by the Rust crate ``cascade-env``.

A cascade of K classifiers of increasing cost classifies one input per
episode. After stage t has run, the agent sees the stage's features and
label probabilities and either stops (action 0) and predicts with that
stage, or forwards (action 1) to the next, stronger and dearer stage.
Stopping at stage k pays ``-L(yhat, y) - alpha * Cost(k)``; forwarding pays 0.
Episodes replay a recorded trace file (every stage's outputs on a data
split), so stepping costs no neural-network work.

Importing the package registers ``CascadeStopping-v0``::

    import gymnasium as gym
    import cascade_env

    env = gym.make("CascadeStopping-v0", trace="val.safetensors", alpha=0.1)
    envs = gym.make_vec("CascadeStopping-v0", num_envs=1024,
                        vectorization_mode="vector_entry_point", trace="val.safetensors")

See :class:`CascadeStoppingEnv` (the single env) and
:class:`CascadeStoppingVectorEnv` (the native vector env) for the spaces,
the info keys and the autoreset modes; ``cascade_env.sb3.CascadeVecEnv``
(where Stable-Baselines3 is installed) is an SB3 ``VecEnv`` over the
native vector env; :func:`load_trace` reads a trace
into numpy arrays, :func:`write_trace` writes one from any framework's
arrays and :func:`write_synthetic_trace` writes the crate's synthetic one;
:mod:`cascade_env.agents` fits, evaluates, saves and loads the stopping
agents (threshold, ann, backward induction, REINFORCE, ...) on traces.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple, Sequence

import gymnasium
import numpy as np

from . import _native
from .envs import MAX_NUM_ENVS, RENDER_MODES, CascadeStoppingEnv, CascadeStoppingVectorEnv

__all__ = [
    "ENV_ID",
    "MAX_NUM_ENVS",
    "RENDER_MODES",
    "TRACE_FORMAT_VERSION",
    "CascadeStoppingEnv",
    "CascadeStoppingVectorEnv",
    "Trace",
    "agents",
    "load_trace",
    "write_synthetic_trace",
    "to_minari",
    "write_trace",
    "__version__",
]

#: The Gymnasium id, ``"CascadeStopping-v0"``.
ENV_ID: str = _native.ENV_ID
#: The trace file format version this build reads and writes.
TRACE_FORMAT_VERSION: int = _native.TRACE_FORMAT_VERSION
__version__: str = _native.__version__


class Trace(NamedTuple):
    """A trace file's content, as returned by :func:`load_trace`.

    Attributes:
        header: The JSON header as a dict: ``format_version``, ``dataset``,
            ``split``, ``cascade``, ``cost_unit``, ``num_samples`` (N),
            ``num_classes`` (C), ``stages`` (a list of
            ``{"name", "cost", "feature_dim"}``) and ``content_sha256``
            (the SHA-256 of the numbers, see the README; computed on load
            for files written before it existed).
        features: Per stage t, the features ``float32 [N, d_t]``.
        probs: Per stage t, the label probabilities ``float32 [N, C]``.
        labels: The true labels, ``int64 [N]``.
        costs: The raw stage costs ``F_t``, ``float64 [K]``.
    """

    header: dict[str, Any]
    features: list[np.ndarray]
    probs: list[np.ndarray]
    labels: np.ndarray
    costs: np.ndarray


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Reads and validates a trace file (safetensors, format version 1).

    Args:
        path: The trace file.

    Returns:
        The header as a dict and the tensors as numpy arrays (copies).

    Raises:
        FileNotFoundError: The file does not exist (other ``OSError``
            subclasses for other file errors).
        ValueError: The file is not a valid trace, or its content does not
            hash to its header's ``content_sha256``; the message names the
            file and the problem.
    """
    header, features, probs, labels, costs = _native.load_trace(os.fspath(path))
    return Trace(json.loads(header), list(features), list(probs), labels, costs)


def _non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def write_synthetic_trace(
    path: str | os.PathLike[str],
    *,
    num_samples: int = 2000,
    seed: int = 0,
    num_classes: int = 10,
    feature_dims: Sequence[int] = (16, 32, 64),
    stage_costs: Sequence[float] = (1.0, 4.0, 16.0),
    hopeless_fraction: float = 0.1,
) -> dict[str, Any]:
    """Writes the ``cascade-env`` synthetic trace (data set ``"synthetic"``).

    Each sample draws a label and a difficulty h: stages ``t >= h`` put
    probability in [0.91, 0.99) on the label, earlier ones put [0.55, 0.85)
    on a wrong class; a ``hopeless_fraction`` of samples is never right.
    So "stop once the top probability exceeds 0.9" stops at h. Feature 0 is
    a noisy hint of h, feature 1 says whether the stage is right, the rest
    is noise. The file is written atomically.

    Args:
        path: Where to write the trace (parent folders are created).
        num_samples: N (>= 1).
        seed: Seed of the generator; the same seed writes the same trace.
        num_classes: C (>= 2).
        feature_dims: Feature width per stage (each >= 2); its length is K.
        stage_costs: Raw cost per stage, ``[K]``.
        hopeless_fraction: Fraction of samples no stage gets right, in [0, 1].

    Returns:
        The header written, as a dict.

    Raises:
        ValueError: A bad argument (the message names it).
        OSError: The file cannot be written.
    """
    header = _native.write_synthetic_trace(
        os.fspath(path),
        _non_negative_int("num_samples", num_samples),
        _non_negative_int("seed", seed),
        _non_negative_int("num_classes", num_classes),
        [_non_negative_int("feature_dims entry", d) for d in feature_dims],
        [float(c) for c in stage_costs],
        float(hopeless_fraction),
    )
    return json.loads(header)


#: Probability rows must sum to 1 within this (as the env checks them).
PROB_SUM_TOLERANCE: float = 1e-3


def _array(name: str, value: Any, kind: str, ndim: int) -> np.ndarray:
    """``value`` as an array of dtype kind ``kind`` ("real": float or int;
    "int": integer) and ``ndim`` dimensions; the error names the array."""
    a = np.asarray(value)
    if kind == "int":
        ok = a.dtype.kind in "iu"
        want = "an integer dtype"
    else:
        ok = a.dtype.kind in "fiu"
        want = "a real (float or integer) dtype"
    if not ok:
        raise TypeError(f"{name} has dtype {a.dtype}, expected {want}")
    if a.ndim != ndim:
        raise ValueError(f"{name} has shape {a.shape}, expected {ndim} dimensions")
    return a


def write_trace(
    path: str | os.PathLike[str],
    *,
    features: Sequence[Any],
    probs: Sequence[Any] | None = None,
    logits: Sequence[Any] | None = None,
    labels: Any,
    costs: Sequence[float],
    temperature: float = 1.0,
    dataset: str = "custom",
    split: str = "all",
    cascade: str = "custom",
    cost_unit: str = "arbitrary",
    class_names: Sequence[str] | None = None,
    stage_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Writes a trace from any framework's arrays (one per stage, in
    cascade order), after checking every one of them.

    Give either ``probs`` or ``logits`` (turned into probabilities by
    ``softmax(logits / temperature)``, computed in float64 and stored as
    float32). Features and probabilities are stored as float32: what
    :func:`load_trace` reads back is bit-identical to
    ``np.asarray(x, np.float32)`` of what was given.

    Args:
        path: Where to write (parent folders are created; atomic).
        features: Per stage t, ``[N, d_t]`` features (e.g. pooled
            penultimate activations), float or integer.
        probs: Per stage t, ``[N, C]`` label probabilities: in [0, 1], each
            row summing to 1 within :data:`PROB_SUM_TOLERANCE`.
        logits: Per stage t, ``[N, C]`` logits (instead of ``probs``).
        labels: ``[N]`` true labels, integers in ``0..C``.
        costs: ``[K]`` cost of each stage (e.g. MACs of running it), finite
            and > 0. With ``cost_unit="MACs"`` the learned agents' own MACs
            are counted into the cost by default.
        temperature: Softmax temperature for ``logits`` (> 0).
        dataset, split, cascade, cost_unit: Descriptive header fields.
        class_names: ``[C]`` class names (optional).
        stage_names: ``[K]`` stage names (default ``stage1``, ...).

    Returns:
        The header written, as a dict (``content_sha256`` included).

    Raises:
        TypeError: An array of the wrong dtype (the message names it).
        ValueError: A bad input, naming the array, the stage and the first
            bad index: fewer than 2 stages, a mismatched sample count
            between stages, a non-finite value, probabilities outside
            [0, 1] or not summing to 1, a cost that is not positive, a
            label out of range. Nothing is written then.
        OSError: The file cannot be written.
    """
    if (probs is None) == (logits is None):
        raise ValueError("give exactly one of probs= and logits=")
    scores_name = "probs" if probs is not None else "logits"
    scores_in = list(probs if probs is not None else logits)  # type: ignore[arg-type]
    features_in = list(features)
    k = len(features_in)
    if len(scores_in) != k:
        raise ValueError(f"{k} feature arrays but {len(scores_in)} {scores_name} arrays: give one per stage")
    costs_list = [float(c) for c in np.asarray(costs, dtype=np.float64).reshape(-1)]
    if len(costs_list) != k:
        raise ValueError(f"costs has {len(costs_list)} entries for {k} stages")
    names = [f"stage{t + 1}" for t in range(k)] if stage_names is None else [str(s) for s in stage_names]
    if len(names) != k:
        raise ValueError(f"stage_names has {len(names)} entries for {k} stages")
    feats = [
        np.ascontiguousarray(_array(f"stage{t}.features", f, "real", 2), dtype=np.float32)
        for t, f in enumerate(features_in)
    ]
    scores = [
        np.ascontiguousarray(_array(f"stage{t}.{scores_name}", p, "real", 2), dtype=np.float32)
        for t, p in enumerate(scores_in)
    ]
    labels_a = np.ascontiguousarray(_array("labels", labels, "int", 1), dtype=np.int64)
    header = _native.write_trace(
        os.fspath(path),
        feats,
        scores,
        logits is not None,
        labels_a,
        costs_list,
        float(temperature),
        None,
        None if class_names is None else [str(c) for c in class_names],
        names,
        str(dataset),
        str(split),
        str(cascade),
        str(cost_unit),
    )
    return json.loads(header)


# After the functions above: the agents module is a submodule of the package.
from . import agents  # noqa: E402


def to_minari(trace: str | os.PathLike[str], policy: Any, dataset_id: str, **kwargs: Any) -> Any:
    """Writes a policy's episodes over ``trace`` as a Minari dataset, with
    every stage's stopping reward in the infos; see
    :func:`cascade_env.offline.to_minari` (needs ``minari``)."""
    from .offline import to_minari as _to_minari

    return _to_minari(trace, policy, dataset_id, **kwargs)


if ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=ENV_ID,
        entry_point="cascade_env.envs:CascadeStoppingEnv",
        vector_entry_point="cascade_env.envs:CascadeStoppingVectorEnv",
        nondeterministic=False,
    )
