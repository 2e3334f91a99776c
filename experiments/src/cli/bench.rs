//! `cascade bench`: time one training step and one inference batch of each
//! stage of a preset (fresh weights, random inputs).

use anyhow::Context;
use cascade_rl::device::DeviceSpec;
use cascade_rl::presets::Preset;
use cascade_rl::train::bench_preset;
use clap::Args;

/// `cascade bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Cascade preset whose stages are timed.
    #[arg(long, default_value = "fmnist-4")]
    pub preset: String,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Timed repetitions per measurement (the median is reported), after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// CPU threads for candle's parallel kernels (sets RAYON_NUM_THREADS unless it is already set).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Seed of the weights and inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `cascade bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    // Must happen before the first parallel kernel starts the thread pool.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_default();
    let preset = Preset::by_name(&args.preset)?;
    let device = args.device.parse::<DeviceSpec>()?.open()?;
    let rows = bench_preset(&preset, args.batch, args.iters, args.seed, &device)
        .with_context(|| format!("benchmarking preset '{}'", preset.name))?;
    if args.json {
        let out = serde_json::json!({
            "preset": preset.name,
            "device": args.device,
            "threads": threads,
            "batch": args.batch,
            "stages": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "preset {}, device {}, {} threads, batch {}, median of {} (training step = forward + backward + AdamW)",
        preset.name, args.device, threads, args.batch, args.iters
    );
    println!(
        "{:>5}  {:<14} {:>12} {:>14} {:>12} {:>14} {:>12}",
        "stage", "model", "MACs", "train ms/step", "train img/s", "infer ms/batch", "infer img/s"
    );
    for (i, r) in rows.iter().enumerate() {
        println!(
            "{:>5}  {:<14} {:>12} {:>14.2} {:>12.0} {:>14.2} {:>12.0}",
            i + 1,
            r.model,
            r.macs,
            r.train_ms,
            r.train_img_per_s,
            r.infer_ms,
            r.infer_img_per_s
        );
    }
    Ok(())
}
