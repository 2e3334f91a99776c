//! cascade-env: a cascade of classifiers as an optimal-stopping MDP
//! (`CascadeStopping-v0`), after Guan, Liu, Liu and Peng, "Energy-efficient
//! amortized inference with cascaded deep classifiers" (IJCAI 2018).
//!
//! No deep-learning dependency: observations are plain `f32` data, and the
//! classifiers sit behind the [`StageBackend`] trait. [`ReplayBackend`]
//! replays recorded stage outputs from a trace file, so an RL researcher
//! can use this crate alone with any learning library.
//!
//! ## Description
//!
//! K classifiers `C_1..C_K` of increasing cost `F_1 < ... < F_K` classify
//! one input x (label y) per episode. After stage t has run, the agent sees
//! the stage's features and label probabilities and decides whether to stop
//! and predict with `C_t`, or to pay for the next, stronger classifier.
//! Stages are 0-based in code: observation `stage` is `t - 1`.
//!
//! ## Action space
//!
//! `Discrete(2)`: [`Action::Stop`] = 0, [`Action::Forward`] = 1, with an
//! [`ActionMask`] in [`Info::action_mask`]. At the last stage only `Stop` is
//! legal; `Forward` there is [`Error::IllegalAction`], never a silent clamp.
//!
//! ## Observation space
//!
//! [`Observation`] `o_t = (t, s_t(x), p_t(x), c_t)`:
//!
//! | field         | type  | shape   | meaning                                                        |
//! |---------------|-------|---------|----------------------------------------------------------------|
//! | `stage`       | usize | scalar  | 0-based index of the last stage run (`t - 1`), in `0..K`       |
//! | `features`    | f32   | `[d_t]` | stage features `s_t(x)` (pooled penultimate activations, ...)  |
//! | `probs`       | f32   | `[C]`   | `p_t(x) = softmax(C_t(x))`, in `[0, 1]`, sums to 1             |
//! | `cost_so_far` | f32   | scalar  | normalised `Cost(t)` spent so far, in `(0, Cost(K)]`           |
//!
//! `d_t` may differ per stage ([`StageBackend::feature_dims`]). The batched
//! layout of [`VecEnv`] is described in [`vector`].
//!
//! ## Reward
//!
//! `Forward`: 0. `Stop` at stage k: the prediction `yhat` is the argmax of
//! `p_k` or a draw from it ([`Prediction`]), and
//! `R = -L(yhat, y) - alpha * Cost(k)`, with `L` the 0-1 loss or the
//! cross-entropy `-ln p_k(y)` ([`Loss`]). `Cost(k)` is normalised by the
//! largest stage's own cost `F_K`, so alpha is "loss per full-model
//! compute": under [`CostModel::Cumulative`] (separate networks, all run;
//! the default) `Cost(k) = (F_1 + ... + F_k) / F_K`, which exceeds 1 when
//! all stages run; under [`CostModel::Exit`] (early-exit branches of one
//! network) `Cost(k) = F_k / F_K`. The return of an episode is its one
//! stopping reward. See [`RewardSpec`] (default: alpha 0.1, 0-1 loss,
//! cumulative cost, argmax prediction).
//!
//! ## Starting state
//!
//! A sample drawn uniformly from the backend's split with the env's own RNG
//! (or the one named by [`ResetOptions::sample`]); stage 0 (`C_1`) has run
//! on it, so the first observation has `stage = 0` and
//! `cost_so_far = Cost(1)`.
//!
//! ## Episode end
//!
//! Terminated on `Stop` (at the latest at the last stage, so an episode
//! has at most K steps). Never truncated. On termination, [`Info`] carries
//! the prediction, the true label, the loss and the cost spent; the
//! returned observation is the one stopped at (no stage runs).
//!
//! ## Arguments
//!
//! [`OptimalStoppingEnv::new`]`(backend, spec)`: any [`StageBackend`] and a
//! [`RewardSpec`] (`alpha`, `loss`, `cost`, `prediction`).
//! [`Env::reset`]`(seed, options)`: `Some(seed)` reseeds the env's
//! [`EnvRng`] (an env never seeded uses seed 0, never OS entropy);
//! `options.sample` picks the input. [`VecEnv::new`]`(backend, spec,
//! num_envs, autoreset)` batches n episodes; see [`AutoReset`].
//!
//! ## Version history
//!
//! - v0: initial version (PCG32 random streams as in [`EnvRng`]).
//!
//! # Crate map
//!
//! - [`OptimalStoppingEnv`], [`Env`], [`Observation`], [`Step`], [`Info`]:
//!   one episode at a time, Gymnasium's contract.
//! - [`VecEnv`], [`BatchObservation`]: n episodes in lock step over flat
//!   buffers; [`VecEnv::evaluate`] scores a batch policy on a split.
//! - [`StageBackend`], [`ReplayBackend`] and its trace file
//!   ([`replay`] documents the format), [`ReplayBackend::synthetic`].
//! - [`RewardSpec`], [`RewardModel`] ([`reward`]); [`spaces`];
//!   [`RecordEpisodeStatistics`]; [`checker`] (shared contract checks);
//!   [`fsutil`] (atomic writes).

pub mod backend;
pub mod checker;
pub mod env;
mod error;
pub mod fsutil;
pub mod replay;
pub mod reward;
pub mod rng;
pub mod size;
pub mod spaces;
pub mod vector;
pub mod wrappers;
pub mod writer;

pub use backend::{StageBackend, StageBatch, StageRows};
pub use env::{Env, Info, Observation, OptimalStoppingEnv, ResetOptions, Step, ENV_ID};
pub use error::{BoxError, Error, Result};
pub use replay::{
    OracleStop, ReplayBackend, StageTrace, SyntheticTraceConfig, TraceHeader, TraceMeta,
    TraceStageInfo, TRACE_FORMAT_VERSION, TRACE_METADATA_KEY,
};
pub use reward::{Action, ActionMask, CostModel, Loss, Prediction, RewardModel, RewardSpec};
pub use rng::EnvRng;
pub use spaces::{ActionSpace, ObservationSpace};
pub use vector::{
    AutoReset, BatchInfo, BatchObservation, Evaluation, SampleOutcome, VecEnv, VecStep,
};
pub use wrappers::{EpisodeStats, RecordEpisodeStatistics};
pub use writer::{StageArrays, StageScores, TraceArrays};

/// The former name of [`reward`]: `cascade_env::spec::...` paths still
/// compile.
pub mod spec {
    pub use crate::reward::*;
}
