"""The stopping agents of ``cascade-agents`` on traces, from Python.

The agents are the Rust ones the ``cascade`` command line trains (the same
code, linked into this package): :func:`fit` runs what ``cascade train
--train-trace T --val-trace V`` runs, :meth:`Agent.save` writes the folder
it writes and :func:`load` reads any agent folder back, so an agent fitted
here and one fitted by the CLI with the same arguments make the same
decisions::

    from cascade_env import agents
    ann = agents.fit("ann", "train.safetensors", "val.safetensors", alpha=0.05)
    print(agents.evaluate(ann, "test.safetensors").error)
    ann.save("agents/ann")

An :class:`Agent` is also a policy for ``CascadeStopping-v0``: ``agent(obs)``
(or :meth:`Agent.act`) takes the env's observation dict, single or batched,
and returns the action (0 stop, 1 forward)::

    env = gymnasium.make("CascadeStopping-v0", trace="test.safetensors", alpha=0.05)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(ann(obs))

Agents on traces (:data:`AGENTS`): ``static-K`` (always stop at stage K),
``oracle`` (reads the label: the bound), ``threshold``,
``threshold-per-stage``, ``threshold-entropy``, ``backward-induction``,
``ann`` and ``reinforce-frozen`` (a REINFORCE policy on the recorded
outputs; its settings through ``reinforce={...}``, the fields of the Rust
``ReinforceConfig``, e.g. ``{"epochs": 10, "hidden": 0}``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from . import _native

__all__ = ["AGENTS", "Agent", "Evaluation", "evaluate", "fit", "load"]

#: The agents :func:`fit` fits (``static-K``: ``static-1``, ``static-2``, ...),
#: as the Rust library lists them.
AGENTS: tuple[str, ...] = tuple(_native.TRACE_AGENTS)

PathLike = str | os.PathLike[str]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """An agent's outcome on every sample of a trace (greedy actions).

    Attributes:
        agent: The agent's name.
        split: The trace's split.
        n: Samples N.
        error: Fraction of wrong predictions.
        mean_reward: Mean reward ``-L - alpha * Cost(k)``.
        mean_cost: Mean cost as a fraction of the largest stage's cost.
        stop_share: ``[K]`` fraction of samples stopping at each stage.
        exits: ``int64 [N]`` 0-based stage each sample stopped at.
        correct: ``bool [N]`` whether its prediction was right.
        predictions: ``int64 [N]`` the predicted class.
        report: The full report (the ``eval_*.json`` of ``cascade eval``).
    """

    agent: str
    split: str
    n: int
    error: float
    mean_reward: float
    mean_cost: float
    stop_share: list[float]
    exits: np.ndarray
    correct: np.ndarray
    predictions: np.ndarray
    report: dict[str, Any]


class Agent:
    """A fitted stopping agent (from :func:`fit` or :func:`load`).

    Attributes:
        name: E.g. ``"ann"``, ``"static-2"``.
        num_stages: K.
        params: The agent's parameters (thresholds, ...), a dict.
        summary: What training did (validation error and cost, the alpha
            selected under a budget, ...), a dict or None.
        record: How it was fitted (options, the traces by content hash),
            a dict or None for agents trained on a cascade.
    """

    def __init__(self, native: _native.Agent) -> None:
        self._native = native

    @property
    def name(self) -> str:
        return self._native.name

    @property
    def num_stages(self) -> int:
        return self._native.num_stages

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self._native.params_json)

    @property
    def summary(self) -> dict[str, Any] | None:
        return json.loads(self._native.summary_json)

    @property
    def record(self) -> dict[str, Any] | None:
        return json.loads(self._native.record_json)

    def __repr__(self) -> str:
        return f"<cascade_env.agents.Agent {self.name} ({self.num_stages} stages)>"

    def stop_probs(self, obs: dict[str, Any], labels: Any = None) -> np.ndarray:
        """Stop probabilities ``pi_t`` at observations of ``CascadeStopping-v0``.

        Args:
            obs: The env's observation dict, single (``stage`` an int) or
                batched (``stage [n]``): ``stage``, ``features`` (padded to
                the widest stage), ``probs``, ``cost_so_far``; other keys
                (``action_mask``) are ignored.
            labels: The true labels, read only by the oracle.

        Returns:
            ``float32 [n]`` (a float for a single observation); 1 at the
            last stage.
        """
        stage = np.asarray(obs["stage"])
        single = stage.ndim == 0
        stage = np.atleast_1d(stage).astype(np.int64)
        n = stage.shape[0]
        features = np.ascontiguousarray(np.asarray(obs["features"], np.float32).reshape(n, -1))
        probs = np.ascontiguousarray(np.asarray(obs["probs"], np.float32).reshape(n, -1))
        cost = np.ascontiguousarray(np.asarray(obs.get("cost_so_far", np.zeros(n)), np.float32).reshape(n))
        lab = None if labels is None else np.atleast_1d(np.asarray(labels)).astype(np.int64)
        p = self._native.stop_probs(stage, features, probs, cost, lab)
        return float(p[0]) if single else p

    def act(self, obs: dict[str, Any], labels: Any = None) -> Any:
        """Greedy actions: 0 (stop) where ``pi_t >= 1/2``, else 1 (forward);
        an int for a single observation, ``int64 [n]`` for a batch."""
        p = self.stop_probs(obs, labels)
        if isinstance(p, float):
            return 0 if p >= 0.5 else 1
        return np.where(p >= 0.5, 0, 1).astype(np.int64)

    __call__ = act

    def save(self, path: PathLike) -> None:
        """Writes the agent folder ``path`` in the format ``cascade train``
        writes (``cascade eval --agent PATH --trace T`` reads it)."""
        self._native.save(os.fspath(path))


def fit(
    name: str,
    train_trace: PathLike,
    val_trace: PathLike,
    *,
    alpha: float = 0.1,
    budget: float | None = None,
    seed: int = 0,
    loss: str = "zero-one",
    cost: str = "cumulative",
    prediction: str = "argmax",
    count_policy_cost: bool | None = None,
    reinforce: dict[str, Any] | None = None,
    quiet: bool = True,
) -> Agent:
    """Fits agent ``name`` (see :data:`AGENTS`) on a training trace, with
    every choice (thresholds, early stopping, the budget's alpha) made on
    the validation trace. The same as ``cascade train --train-trace
    TRAIN --val-trace VAL --agent NAME --alpha ALPHA [--budget B] --seed
    SEED``.

    Args:
        alpha: Price of compute, loss per full-model cost (the starting
            multiplier with ``budget``).
        budget: Mean cost bound as a fraction of the largest stage's cost.
        count_policy_cost: Count the policy's own MACs into the cost
            (default: when the traces' cost unit is ``MACs``).
        reinforce: ``reinforce-frozen`` settings (``ReinforceConfig``
            fields: ``epochs``, ``hidden``, ``lr``, ``batch_size``, ...),
            given over the shipped learner that ``cascade train --agent
            reinforce-frozen`` also starts from (a linear head on the
            confidences started from ``ann``'s rule, 100 epochs, lr 1e-3).
            A head that rule cannot fill (``hidden`` > 0, feature inputs)
            starts fresh unless ``init`` says otherwise.

    Raises:
        ValueError: An unknown agent, bad options, traces of different
            cascades, or a bad trace file.
    """
    return Agent(
        _native.fit_agent(
            str(name),
            os.fspath(train_trace),
            os.fspath(val_trace),
            float(alpha),
            None if budget is None else float(budget),
            int(seed),
            loss,
            cost,
            prediction,
            count_policy_cost,
            None if reinforce is None else json.dumps(reinforce),
            bool(quiet),
        )
    )


def load(path: PathLike, trace: PathLike | None = None) -> Agent:
    """Reads an agent folder written by :meth:`Agent.save` or ``cascade
    train``. ``trace`` (any trace of the cascade) gives the feature widths
    an agent trained on a cascade rather than on traces needs to act."""
    return Agent(_native.load_agent(os.fspath(path), None if trace is None else os.fspath(trace)))


def evaluate(agent: Agent, trace: PathLike, *, alpha: float | None = None) -> Evaluation:
    """Plays every sample of ``trace`` once with ``agent`` (greedy), under
    the reward it was trained with (at the alpha selected under a budget)
    or at ``alpha``; the same as ``cascade eval --agent DIR --trace TRACE``."""
    name, split, n, error, reward, cost, share, exits, correct, preds, report = agent._native.evaluate(
        os.fspath(trace), None if alpha is None else float(alpha)
    )
    return Evaluation(
        agent=name,
        split=split,
        n=n,
        error=error,
        mean_reward=reward,
        mean_cost=cost,
        stop_share=list(share),
        exits=exits,
        correct=correct.astype(bool),
        predictions=preds,
        report=json.loads(report),
    )
