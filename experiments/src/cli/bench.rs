//! `cascade bench`: time one training step and one inference batch of each
//! stage of a preset (fresh weights, random inputs).

use anyhow::Context;
use cascade_rl::device::DeviceSpec;
use cascade_rl::models::{Model, ModelConfig};
use cascade_rl::presets::Preset;
use cascade_rl::train::{bench_model, bench_preset};
use clap::Args;

/// `cascade bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Cascade preset whose stages are timed.
    #[arg(long, default_value = "fmnist-4")]
    pub preset: String,
    /// Time this one model instead of a preset's stages (e.g. resnet-20).
    #[arg(long)]
    pub model: Option<String>,
    /// Input shape C,H,W (with --model).
    #[arg(long, default_value = "1,28,28")]
    pub input: String,
    /// Number of classes (with --model).
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
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
    let device = args.device.parse::<DeviceSpec>()?.open()?;
    let (label, rows) = match &args.model {
        Some(name) => {
            let cfg: ModelConfig = name.parse()?;
            let shape = super::flops::parse_shape(&args.input)?;
            let model = Model::new(&cfg, shape, args.classes, args.seed, &device)?;
            let r = bench_model(&model, args.batch, args.iters, args.seed)
                .with_context(|| format!("benchmarking {cfg}"))?;
            (format!("model {cfg}"), vec![r])
        }
        None => {
            let preset = Preset::by_name(&args.preset)?;
            let rows = bench_preset(&preset, args.batch, args.iters, args.seed, &device)
                .with_context(|| format!("benchmarking preset '{}'", preset.name))?;
            (format!("preset {}", preset.name), rows)
        }
    };
    if args.json {
        let out = serde_json::json!({
            "what": label,
            "device": args.device,
            "threads": threads,
            "batch": args.batch,
            "stages": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{}, device {}, {} threads, batch {}, median of {} (training step = forward + backward + AdamW)",
        label, args.device, threads, args.batch, args.iters
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
