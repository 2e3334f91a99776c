//! The run folder's names and records: [`RunRecord`] (`config.json`),
//! [`CascadeInfo`], [`RunOptions`] and [`StudyOutcome`].

use std::path::{Path, PathBuf};

use cascade_rl::cascade::Cascade;
use cascade_rl::device::DeviceSpec;
use serde::{Deserialize, Serialize};

use super::config::StudyConfig;
use crate::error::{read_json, Result};
use crate::results::Shard;

/// File name of the resolved configuration in a run folder.
pub const CONFIG_FILE: &str = "config.json";
/// Folder of the pretrained cascade in a run folder.
pub const CASCADE_DIR: &str = "cascade";
/// Folder of the recorded traces in a run folder.
pub const TRACES_DIR: &str = "traces";
/// Folder of the agents in a run folder.
pub const AGENTS_DIR: &str = "agents";
/// The per-epoch log in an agent folder.
pub use cascade_rl::checkpoint::TRAIN_LOG_FILE;

/// How a study runs (nothing here changes its numbers).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run folder.
    pub out: PathBuf,
    /// Device of the classifiers (pretraining, traces, joint training).
    pub device: DeviceSpec,
    /// Data folder (default: discovery).
    pub data_dir: Option<PathBuf>,
    /// Run one shard of the sweep.
    pub shard: Option<Shard>,
    /// Stop after pretraining and recording the traces.
    pub pretrain_only: bool,
    /// Progress bars (on a terminal) or one line per unit (otherwise).
    pub progress: bool,
    /// Draw figures and write the summary at the end (unsharded runs).
    pub report: bool,
}

impl RunOptions {
    /// Defaults: CPU, discovered data, unsharded, quiet, with the report.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        RunOptions {
            out: out.into(),
            device: DeviceSpec::Cpu,
            data_dir: None,
            shard: None,
            pretrain_only: false,
            progress: false,
            report: true,
        }
    }
}

/// Facts about the cascade a study ran on, for reports and figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeInfo {
    /// Cascade preset name.
    pub preset: String,
    /// Data set name.
    pub dataset: String,
    /// Built-in synthetic data.
    pub synthetic: bool,
    /// The synthetic-data notice, when synthetic.
    pub notice: Option<String>,
    /// Where the data came from.
    pub data_source: String,
    /// Model name of each stage, cheapest first.
    pub stage_names: Vec<String>,
    /// MACs per image of each stage run alone.
    pub stage_macs: Vec<u64>,
    /// Class names.
    pub class_names: Vec<String>,
    /// Split sizes `[train, val, test]`.
    pub split_sizes: [usize; 3],
}

impl CascadeInfo {
    pub(super) fn of(c: &Cascade) -> Self {
        let m = c.manifest();
        CascadeInfo {
            preset: m.preset.clone(),
            dataset: m.dataset.clone(),
            synthetic: m.synthetic,
            notice: m.notice.clone(),
            data_source: m.data_source.clone(),
            stage_names: m.stages.iter().map(|s| s.name.clone()).collect(),
            stage_macs: m.stages.iter().map(|s| s.macs).collect(),
            class_names: m.class_names.clone(),
            split_sizes: [m.split.n_train, m.split.n_val, m.split.n_test],
        }
    }

    /// A human name of the data set for titles (`Fashion-MNIST`, ...),
    /// with `SYNTHETIC` when it is the built-in set.
    pub fn dataset_title(&self) -> String {
        match self.dataset.as_str() {
            "fashion-mnist" => "Fashion-MNIST".into(),
            "mnist" => "MNIST".into(),
            "kmnist" => "KMNIST".into(),
            "cifar10" => "CIFAR-10".into(),
            "cifar100" => "CIFAR-100".into(),
            "synthetic" => "SYNTHETIC data".into(),
            other => other.to_string(),
        }
    }
}

/// What `config.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The resolved study configuration.
    pub config: StudyConfig,
    /// The cascade it ran on.
    pub cascade: CascadeInfo,
    /// The device of the last run in the folder.
    pub device: String,
    /// The learned agents' training images (held out from pretraining).
    #[serde(default)]
    pub agent_images: usize,
    /// Threads of the CPU kernels in the last run in the folder (0: not
    /// recorded). Sums split over threads round differently, so a run's
    /// numbers are reproduced bit for bit at the same thread count.
    #[serde(default)]
    pub threads: usize,
}

/// Reads `run_dir/config.json`.
pub fn read_run_record(run_dir: &Path) -> Result<RunRecord> {
    read_json(&run_dir.join(CONFIG_FILE))
}

/// What a study run did.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyOutcome {
    /// The run folder.
    pub run_dir: PathBuf,
    /// The results file written (`results.csv`, or the shard's file).
    pub results_file: PathBuf,
    /// Whether the cascade was pretrained in this run (false: reused).
    pub pretrained: bool,
    /// Result rows computed in this run.
    pub computed: usize,
    /// Result rows skipped because they were already present.
    pub skipped: usize,
    /// Work units run / skipped / owned by other shards.
    pub units_run: usize,
    /// Work units skipped (all rows present).
    pub units_skipped: usize,
    /// Figures written (PNG paths; an SVG lies beside each).
    pub figures: Vec<PathBuf>,
    /// The summary written.
    pub summary: Option<PathBuf>,
    /// True when the data is the built-in synthetic set.
    pub synthetic: bool,
    /// Wall time, seconds.
    pub seconds: f64,
}
