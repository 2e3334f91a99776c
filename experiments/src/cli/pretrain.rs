//! `cascade pretrain`: supervised training of every stage of a cascade
//! preset; writes checkpoints, `cascade.json` and the static table into a
//! new folder, or over a cascade with `--overwrite` (swapped in whole; see
//! [`cascade_rl::folder`]).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use cascade_rl::data::{SplitConfig, SYNTHETIC_NOTICE};
use cascade_rl::device::DeviceSpec;
use cascade_rl::presets::{Preset, PRESET_NAMES};
use cascade_rl::train::{pretrain, PretrainOptions, Progress};
use clap::Args;

/// `cascade pretrain`.
#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Cascade preset (fmnist-4, mnist-4, synthetic-3, cifar10-resnet).
    #[arg(long)]
    pub preset: String,
    /// Output folder (e.g. runs/fmnist): a new or empty folder, or one
    /// holding a cascade with --overwrite.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the cascade already in --out (the new one is built beside
    /// it and swapped in whole when complete).
    #[arg(long)]
    pub overwrite: bool,
    /// Train every stage for this many epochs instead of the preset's.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Run seed (split, initialisation, batch order, augmentation).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder holding the data set (overrides discovery).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Use at most this many training images (quick runs).
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Use at most this many validation images (quick runs).
    #[arg(long)]
    pub max_val: Option<usize>,
    /// Use at most this many test images (quick runs).
    #[arg(long)]
    pub max_test: Option<usize>,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `cascade pretrain`.
pub fn run(args: &PretrainArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let preset = Preset::by_name(&args.preset)
        .with_context(|| format!("known presets: {}", PRESET_NAMES.join(", ")))?;
    let device = args.device.parse::<DeviceSpec>()?.open()?;
    let opts = PretrainOptions {
        out_dir: args.out.clone(),
        overwrite: args.overwrite,
        seed: args.seed,
        epochs: args.epochs,
        data_dir: args.data_dir.clone(),
        device,
        split: SplitConfig {
            max_train: args.max_train,
            max_val: args.max_val,
            max_test: args.max_test,
            ..Default::default()
        },
        progress: if args.quiet {
            Progress::Quiet
        } else {
            Progress::Bar
        },
    };
    let summary = pretrain(&preset, &opts)
        .with_context(|| format!("pretraining preset '{}'", preset.name))?;
    if summary.manifest.synthetic {
        println!("{SYNTHETIC_NOTICE}\n");
    }
    print!("{}", summary.static_markdown);
    println!(
        "\nwrote {} (cascade.json, stage1..{}.safetensors, static.md, static.csv, train_log.csv) in {:.1} s",
        args.out.display(),
        summary.manifest.stages.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
