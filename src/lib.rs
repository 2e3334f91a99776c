//! cascade-rl: a cascade of deep classifiers of increasing cost, framed as an
//! optimal-stopping MDP.
//!
//! This crate holds the data sets, the candle classifier zoo, analytic FLOP
//! counts, supervised pretraining, checkpoints and the cascade they load
//! into (with temperature calibration), device choice and the lazy candle
//! backend that implements [`cascade_env::StageBackend`]. The MDP itself
//! lives in the `cascade-env` crate, which has no candle in it.

pub mod alloc;
pub mod backend;
pub mod cascade;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod flops;
pub mod folder;
pub mod hash;
pub mod models;
pub mod nn;
pub mod ops;
pub mod presets;
pub mod threads;
pub mod train;

pub use cascade_env::fsutil;
pub use error::{Error, Result};
