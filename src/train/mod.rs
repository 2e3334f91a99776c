//! Supervised training of the stage classifiers, and cascade pretraining.
//!
//! [`train_model`] trains one [`Model`] with cross-entropy, evaluates the
//! validation split after every epoch and keeps the weights of the epoch
//! with the lowest validation error (model selection on validation only; the
//! test split is evaluated once, by [`pretrain`], for the report).
//! [`pretrain`] does this for every stage of a [`Preset`] and writes a
//! checkpoint folder (see [`crate::checkpoint`]).
//!
//! Optimisers: AdamW (candle's update rule, fused in place:
//! [`crate::ops::AdamW`]) and SGD with momentum and weight decay
//! ([`SgdMomentum`], PyTorch's semantics), with constant, cosine or step
//! learning-rate schedules and optional linear warm-up. Augmentation: random
//! horizontal flips and random crops from a zero-padded image (zero is the
//! training mean, since images are normalised).
//!
//! Everything is driven by one seed: model initialisation, batch order and
//! augmentation of stage `t` use seeds derived from the run seed and `t`.
//!
//! One file a job: `optim` (optimisers and schedules), `batch` (batches and
//! augmentation), `eval` (evaluation), `fit` (the training loop), `pretrain`
//! (a whole cascade and its files) and `bench` (throughput).
//!
//! [`Model`]: crate::models::Model
//! [`Preset`]: crate::presets::Preset

mod batch;
mod bench;
mod eval;
mod fit;
mod optim;
mod pretrain;

pub use batch::{make_batch, Augment};
pub use bench::{bench_epoch, bench_model, bench_preset, BenchResult, EpochBenchResult};
pub use eval::{evaluate, EvalResult};
pub use fit::{train_model, EpochRecord, Progress, TrainConfig, TrainReport};
pub use optim::{AnyOptimizer, LrSchedule, OptimizerConfig, ParamsSgd, SgdMomentum};
pub use pretrain::{pretrain, PretrainOptions, PretrainSummary, PRETRAIN_LOG_COLUMNS};

/// Derives a sub-seed from a run seed and a stream id (the env crate's
/// SplitMix64 derivation, re-exported so the toolkit has one).
pub use cascade_env::rng::derive_seed;
