//! Studies: sweeps of stopping agents over alphas (or budgets) and seeds on
//! one pretrained cascade, written to a resumable, shardable run folder.
//!
//! - [`StudyConfig`]: the resolved configuration and the presets
//!   (`default`, `quick`, `fmnist`, `cifar10`).
//! - [`run_study`]: the driver (see [`run`] for the run folder's layout,
//!   resuming and sharding).
//! - [`StudyArgs`]: the command-line flags shared by `joint_vs_frozen`
//!   and `alpha_sweep`.

pub mod args;
mod cache;
pub mod config;
pub mod data;
pub mod oracle_curve;
mod plan;
mod progress;
pub mod record;
pub mod run;
mod units;

pub use args::{AlphaSweepArgs, JointVsFrozenArgs, StudyArgs};
pub use config::{log_grid, PretrainConfig, StudyConfig, STUDY_PRESETS};
pub use data::{load_study_data, StudyData};
pub use oracle_curve::oracle_at;
pub use record::{
    read_run_record, CascadeInfo, RunOptions, RunRecord, StudyOutcome, AGENTS_DIR, CASCADE_DIR,
    CONFIG_FILE, TRACES_DIR, TRAIN_LOG_FILE,
};
pub use run::run_study;

// `units` imports `oracle_curve` by its former name.
use oracle_curve as oracle;
