//! `cascade export-trace`: record every stage's outputs on a split into a
//! replay trace file (safetensors + JSON header) that `cascade-env` replays
//! without candle, and Python reads with the `safetensors` package.

use std::path::PathBuf;

use anyhow::Context;
use cascade_rl::backend::{cascade_splits, CandleBackend, DEFAULT_BATCH};
use cascade_rl::cascade::Cascade;
use cascade_rl::device::parse_device;
use clap::Args;

/// `cascade export-trace`.
#[derive(Debug, Args)]
pub struct ExportTraceArgs {
    /// Folder of a pretrained cascade (holding cascade.json).
    #[arg(long)]
    pub cascade: PathBuf,
    /// Split to record: train, val or test.
    #[arg(long, default_value = "val")]
    pub split: String,
    /// Output trace file (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Folder holding the data set (overrides discovery).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Samples per forward pass.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
}

/// Runs `cascade export-trace`.
pub fn run(args: &ExportTraceArgs) -> anyhow::Result<()> {
    cascade_rl::folder::check_utf8(&args.out)?;
    if args.out.is_dir() {
        anyhow::bail!(
            "{}: a folder; --out names the trace file to write",
            args.out.display()
        );
    }
    let device = parse_device(&args.device)?;
    let cascade = Cascade::load(&args.cascade, &device, None, None)
        .with_context(|| format!("loading the cascade in {}", args.cascade.display()))?;
    let splits = cascade_splits(&cascade, args.data_dir.as_deref())?;
    let ds = match args.split.as_str() {
        "train" => &splits.train,
        "val" | "validation" => &splits.val,
        "test" => &splits.test,
        other => anyhow::bail!("unknown split '{other}': use train, val or test"),
    };
    if cascade.is_synthetic() {
        eprintln!("{}", cascade_rl::data::SYNTHETIC_NOTICE);
    }
    let started = std::time::Instant::now();
    let mut backend = CandleBackend::new(&cascade, ds, args.batch)?;
    let trace = backend.record_trace(&args.split)?;
    trace.save(&args.out)?;
    println!(
        "wrote {} ({} samples, {} stages, {:.1} s)",
        args.out.display(),
        ds.len(),
        cascade.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
