//! Pretraining a cascade: every stage of a [`Preset`] trained in turn, and
//! the checkpoint folder written (see [`crate::checkpoint`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use super::eval::evaluate;
use super::fit::{train_model, EpochRecord, Progress, TrainReport};
use crate::checkpoint::{self, CascadeManifest, StageRecord, MANIFEST_VERSION};
use crate::data::{SplitConfig, Splits, SYNTHETIC_NOTICE};
use crate::error::{Error, Result};
use crate::flops;
use crate::folder::{NewFolder, Replace, CASCADE_FOLDER};
use crate::models::Model;
use crate::presets::Preset;
use cascade_env::rng::derive_seed;

/// Options of [`pretrain`].
#[derive(Debug, Clone)]
pub struct PretrainOptions {
    /// Output folder: written beside and swapped in whole when every file
    /// is written (see [`crate::folder`]).
    pub out_dir: PathBuf,
    /// Replace a cascade already in `out_dir` (otherwise refused).
    pub overwrite: bool,
    /// The run seed: split, initialisation, batch order, augmentation.
    pub seed: u64,
    /// Override every stage's epoch count.
    pub epochs: Option<usize>,
    /// Data folder (default: discovery).
    pub data_dir: Option<PathBuf>,
    /// Device to train on.
    pub device: Device,
    /// Split settings beyond the preset's validation fraction and the seed
    /// (caps such as `max_train` for quick runs, synthetic sizes).
    pub split: SplitConfig,
    /// Progress output.
    pub progress: Progress,
}

impl PretrainOptions {
    /// Defaults: seed 0, preset epochs, discovered data, CPU, quiet.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self {
            out_dir: out_dir.into(),
            overwrite: false,
            seed: 0,
            epochs: None,
            data_dir: None,
            device: Device::Cpu,
            split: SplitConfig::default(),
            progress: Progress::Quiet,
        }
    }
}

/// What [`pretrain`] produced.
#[derive(Debug, Clone)]
pub struct PretrainSummary {
    /// The manifest written as `cascade.json`.
    pub manifest: CascadeManifest,
    /// Per-stage training reports.
    pub reports: Vec<TrainReport>,
    /// The static table (Markdown), as written to `static.md`.
    pub static_markdown: String,
    /// Total wall time, seconds.
    pub seconds: f64,
}

/// Trains every stage of `preset` and writes `out_dir/stage{t}.safetensors`
/// (t = 1..K), `cascade.json`, `train_log.csv`, `static.md` and
/// `static.csv`. The files are written into a staging folder beside
/// `out_dir` that replaces it whole once complete, so `out_dir` never holds
/// files of two runs; a folder already holding a cascade is refused unless
/// `opts.overwrite`, and so is a folder holding other files. Checked
/// before any data is loaded or any stage trained.
pub fn pretrain(preset: &Preset, opts: &PretrainOptions) -> Result<PretrainSummary> {
    let started = Instant::now();
    let preset = match opts.epochs {
        Some(e) => preset.clone().with_epochs(e),
        None => preset.clone(),
    };
    preset.validate()?;
    let replace = if opts.overwrite {
        Replace::SameKind
    } else {
        Replace::Nothing
    };
    let folder = NewFolder::begin(&opts.out_dir, CASCADE_FOLDER, replace)?;
    let out_dir = folder.path().to_path_buf();
    let split = SplitConfig {
        val_fraction: preset.val_fraction,
        seed: opts.seed,
        ..opts.split
    };
    let splits = Splits::load(&preset.dataset, opts.data_dir.as_deref(), &split)?;
    let synthetic = splits.is_synthetic();
    if synthetic && opts.progress != Progress::Quiet {
        eprintln!("{SYNTHETIC_NOTICE}");
    }
    let shape = splits.train.shape;
    let classes = splits.train.num_classes();

    let mut stages = Vec::with_capacity(preset.stages.len());
    let mut reports = Vec::with_capacity(preset.stages.len());
    let mut log: Vec<EpochRecord> = Vec::new();
    for (i, sp) in preset.stages.iter().enumerate() {
        let t = i + 1;
        let fl = flops::count(&sp.model, shape, classes)?;
        let model = Model::new(
            &sp.model,
            shape,
            classes,
            derive_seed(opts.seed, 2 * t as u64),
            &opts.device,
        )?;
        let report = train_model(
            &model,
            &splits.train,
            &splits.val,
            &sp.train,
            derive_seed(opts.seed, 2 * t as u64 + 1),
            t,
            opts.progress,
        )?;
        let test = evaluate(&model, &splits.test, sp.train.eval_batch_size)?;
        let file = checkpoint::stage_file_name(t);
        let path = out_dir.join(&file);
        checkpoint::save_model(&model, &path)?;
        let content_hash = Some(crate::hash::file_hash(&path)?);
        if opts.progress != Progress::Quiet {
            eprintln!(
                "stage {t} {}: best epoch {}, val error {:.2}%, test error {:.2}%, {:.1} s",
                sp.model,
                report.best_epoch,
                100.0 * report.best_val_error,
                100.0 * test.error,
                report.seconds
            );
        }
        log.extend(report.epochs.iter().cloned());
        stages.push(StageRecord {
            stage: t,
            name: sp.model.name(),
            file,
            model: sp.model.clone(),
            train: sp.train.clone(),
            macs: fl.macs,
            params: fl.params,
            feature_dim: fl.feature_dim,
            best_epoch: report.best_epoch,
            val_error: report.best_val_error,
            val_loss: report.best_val_loss,
            test_error: test.error,
            test_loss: test.loss,
            train_seconds: report.seconds,
            temperature: 1.0,
            content_hash,
        });
        reports.push(report);
    }

    let manifest = CascadeManifest {
        format_version: MANIFEST_VERSION,
        preset: preset.name.clone(),
        dataset: preset.dataset.clone(),
        synthetic,
        notice: synthetic.then(|| SYNTHETIC_NOTICE.to_string()),
        data_source: splits.train.source.to_string(),
        input_shape: shape,
        num_classes: classes,
        class_names: splits.train.class_names.clone(),
        normalization: splits.normalization.clone(),
        seed: opts.seed,
        split: checkpoint::SplitRecord {
            val_fraction: split.val_fraction,
            n_train: splits.train.len(),
            n_val: splits.val.len(),
            n_test: splits.test.len(),
        },
        device: crate::device::device_name(&opts.device),
        stages,
        calibration: None,
        roles: None,
    };
    write_train_log(&out_dir.join(checkpoint::TRAIN_LOG_FILE), &log, synthetic)?;
    let (md, csv) = (
        crate::cascade::static_markdown(&manifest),
        crate::cascade::static_csv(&manifest),
    );
    write_text(&out_dir.join("static.md"), &md)?;
    write_text(&out_dir.join("static.csv"), &csv)?;
    checkpoint::write_manifest(&out_dir, &manifest)?;
    folder.commit()?;
    Ok(PretrainSummary {
        manifest,
        reports,
        static_markdown: md,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|e| Error::io(path, e))
}

/// The columns of pretraining's `train_log.csv`, in order: the agents'
/// metric names where the quantity is the same (see the table in
/// [`crate::checkpoint`]).
pub const PRETRAIN_LOG_COLUMNS: [&str; 10] = [
    "stage",
    "epoch",
    "losses/classifier",
    "charts/error",
    "val/loss",
    "val/error",
    "charts/learning_rate",
    "charts/seconds",
    "charts/sps",
    "synthetic",
];

fn write_train_log(path: &Path, log: &[EpochRecord], synthetic: bool) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(PRETRAIN_LOG_COLUMNS)
        .map_err(|e| Error::Csv {
            path: path.into(),
            source: e,
        })?;
    for r in log {
        w.write_record([
            r.stage.to_string(),
            r.epoch.to_string(),
            format!("{:.6}", r.train_loss),
            format!("{:.6}", r.train_error),
            format!("{:.6}", r.val_loss),
            format!("{:.6}", r.val_error),
            format!("{:.6e}", r.lr),
            format!("{:.3}", r.seconds),
            format!("{:.1}", r.train_img_per_s),
            synthetic.to_string(),
        ])
        .map_err(|e| Error::Csv {
            path: path.into(),
            source: e,
        })?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    crate::fsutil::write_atomic(path, &bytes).map_err(|e| Error::io(path, e))
}
