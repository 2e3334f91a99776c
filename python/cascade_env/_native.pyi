"""Type stubs of the Rust extension module ``cascade_env._native``.

The Gymnasium classes in :mod:`cascade_env.envs` are the public interface;
these are the raw tuples they are built from. Every error of the Rust env
is raised as a Python exception carrying its message: ``ValueError`` (bad
argument, corrupt trace, illegal action), ``FileNotFoundError``,
``PermissionError``, ``IsADirectoryError`` or ``OSError`` (file errors),
``RuntimeError`` (no running episode, or a vector env in use by another
thread).
"""

from os import PathLike

import numpy as np
import numpy.typing as npt

ENV_ID: str
TRACE_FORMAT_VERSION: int
TRACE_AGENTS: list[str]
__version__: str

# (stage, features float32 [max_d] zero-padded, probs float32 [C], cost_so_far)
_Obs = tuple[int, npt.NDArray[np.float32], npt.NDArray[np.float32], float]
# (mask_stop, mask_forward, sample, cost, raw_cost, feature_dim,
#  (prediction, label, loss) once terminated)
_Info = tuple[bool, bool, int, float, float, int, tuple[int, int, float] | None]
# (stage int64 [n], features float32 [n, max_d], probs float32 [n, C],
#  cost_so_far float32 [n, 1])
_BatchObs = tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]
]
# (action_mask int8 [n, 2], sample int64 [n], cost float64 [n],
#  raw_cost float64 [n], feature_dim int64 [n])
_BatchInfo = tuple[
    npt.NDArray[np.int8],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
]
# (sample, cost, raw_cost, feature_dim) of the terminated episodes
_Finals = tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]
]
# (prediction int64 [n], label int64 [n], loss float64 [n], finals under same-step autoreset)
_Outcome = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64], _Finals | None]

class Env:
    """The Rust ``OptimalStoppingEnv`` over a replay trace."""

    def __init__(
        self,
        trace: str | PathLike[str],
        alpha: float = 0.1,
        loss: str = "zero-one",
        cost: str = "cumulative",
        prediction: str = "argmax",
        last_stage_forward: str = "error",
    ) -> None: ...
    def reset(self, seed: int | None = None, sample: int | None = None) -> tuple[_Obs, _Info]: ...
    def step(self, action: int) -> tuple[_Obs, float, bool, _Info]: ...
    def action_mask(self) -> tuple[bool, bool]: ...
    def rng_state(self) -> tuple[int, int]: ...
    def set_rng_state(self, state: int, increment: int) -> None: ...
    @property
    def num_stages(self) -> int: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def feature_dims(self) -> list[int]: ...
    @property
    def num_samples(self) -> int: ...
    @property
    def header_json(self) -> str: ...
    @property
    def stage_costs(self) -> list[float]: ...

class VecEnv:
    """The Rust ``VecEnv`` over a replay trace; step and reset release the GIL."""

    def __init__(
        self,
        trace: str | PathLike[str],
        num_envs: int,
        autoreset: str = "next-step",
        alpha: float = 0.1,
        loss: str = "zero-one",
        cost: str = "cumulative",
        prediction: str = "argmax",
        copy: bool = True,
        last_stage_forward: str = "error",
    ) -> None: ...
    def action_masks(self) -> npt.NDArray[np.bool_]: ...
    def reset(
        self, seed: int | None = None, mask: npt.NDArray[np.bool_] | None = None
    ) -> tuple[_BatchObs, _BatchInfo]: ...
    def step(
        self, actions: npt.NDArray[np.int64]
    ) -> tuple[_BatchObs, npt.NDArray[np.float64], npt.NDArray[np.bool_], _BatchInfo, _Outcome]: ...
    @property
    def num_envs(self) -> int: ...
    @property
    def num_stages(self) -> int: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def feature_dims(self) -> list[int]: ...
    @property
    def num_samples(self) -> int: ...
    @property
    def header_json(self) -> str: ...
    @property
    def stage_costs(self) -> list[float]: ...

def load_trace(
    path: str | PathLike[str],
) -> tuple[
    str,
    list[npt.NDArray[np.float32]],
    list[npt.NDArray[np.float32]],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
]: ...
def write_synthetic_trace(
    path: str | PathLike[str],
    num_samples: int,
    seed: int,
    num_classes: int,
    feature_dims: list[int],
    stage_costs: list[float],
    hopeless_fraction: float,
) -> str: ...
def write_trace(
    path: str | PathLike[str],
    features: list[npt.NDArray[np.float32]],
    scores: list[npt.NDArray[np.float32]],
    logits: bool,
    labels: npt.NDArray[np.int64],
    costs: list[float],
    temperature: float,
    num_classes: int | None,
    class_names: list[str] | None,
    stage_names: list[str],
    dataset: str,
    split: str,
    cascade: str,
    cost_unit: str,
) -> str: ...

class Agent:
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def num_stages(self) -> int: ...
    @property
    def params_json(self) -> str: ...
    @property
    def summary_json(self) -> str: ...
    @property
    def record_json(self) -> str: ...
    @property
    def uses_labels(self) -> bool: ...
    def save(self, path: str) -> None: ...
    def stop_probs(
        self,
        stage: npt.NDArray[np.int64],
        features: npt.NDArray[np.float32],
        probs: npt.NDArray[np.float32],
        cost_so_far: npt.NDArray[np.float32],
        labels: npt.NDArray[np.int64] | None = None,
    ) -> npt.NDArray[np.float32]: ...
    def evaluate(
        self, trace: str, alpha: float | None = None
    ) -> tuple[
        str,
        str,
        int,
        float,
        float,
        float,
        list[float],
        npt.NDArray[np.int64],
        npt.NDArray[np.uint8],
        npt.NDArray[np.int64],
        str,
    ]: ...

def fit_agent(
    name: str,
    train_trace: str,
    val_trace: str,
    alpha: float,
    budget: float | None,
    seed: int,
    loss: str,
    cost: str,
    prediction: str,
    count_policy_cost: bool | None,
    reinforce: str | None,
    quiet: bool,
) -> Agent: ...
def load_agent(path: str, trace: str | None = None) -> Agent: ...
def stop_rewards(
    trace: str, alpha: float, loss: str, cost: str, prediction: str
) -> npt.NDArray[np.float64]: ...
