//! `cascade bench`: time one training step and one inference batch of each
//! stage of a preset (fresh weights, random inputs); with `--epoch`, one
//! real training epoch per stage on the preset's data set, through the
//! training loop pretraining uses.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use cascade_rl::data::{SplitConfig, Splits};
use cascade_rl::device::DeviceSpec;
use cascade_rl::models::{Model, ModelConfig};
use cascade_rl::presets::Preset;
use cascade_rl::train::{bench_epoch, bench_model, bench_preset, derive_seed, TrainConfig};
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
    /// Batch size (default 128; with --epoch, the recipe's).
    #[arg(long)]
    pub batch: Option<usize>,
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
    /// Time one training epoch on the preset's real data set instead: the
    /// training loop pretraining uses (shuffling, batches with the recipe's
    /// augmentation, forward, backward, optimiser step, then validation),
    /// one fresh model per stage, or only --model with the recipe of the
    /// preset's stage of that model (else of its last stage).
    #[arg(long)]
    pub epoch: bool,
    /// Folder holding the data set, with --epoch (overrides discovery).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// With --epoch: use at most this many training images (quick runs).
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Time one training epoch of the stopping policy instead: REINFORCE
    /// (policy only, the default settings) on a replay trace with the
    /// shapes of the preset's cascade (its stages' feature widths, classes
    /// and MACs; generated values, so no data set or pretrained cascade is
    /// needed).
    #[arg(long, conflicts_with = "epoch")]
    pub policy: bool,
    /// With --policy: trajectories in the training trace (the validation
    /// trace has a tenth as many).
    #[arg(long, default_value_t = 8100)]
    pub samples: usize,
}

/// Runs `cascade bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    // Must happen before the first parallel kernel starts the thread pool.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_default();
    let device = args.device.parse::<DeviceSpec>()?.open()?;
    if args.epoch {
        return run_epoch(args, &threads, &device);
    }
    if args.policy {
        return run_policy(args, &threads);
    }
    let batch = args.batch.unwrap_or(128);
    let (label, rows) = match &args.model {
        Some(name) => {
            let cfg: ModelConfig = name.parse()?;
            let shape = super::flops::parse_shape(&args.input)?;
            let model = Model::new(&cfg, shape, args.classes, args.seed, &device)?;
            let r = bench_model(&model, batch, args.iters, args.seed)
                .with_context(|| format!("benchmarking {cfg}"))?;
            (format!("model {cfg}"), vec![r])
        }
        None => {
            let preset = Preset::by_name(&args.preset)?;
            let rows = bench_preset(&preset, batch, args.iters, args.seed, &device)
                .with_context(|| format!("benchmarking preset '{}'", preset.name))?;
            (format!("preset {}", preset.name), rows)
        }
    };
    if args.json {
        let out = serde_json::json!({
            "what": label,
            "device": args.device,
            "threads": threads,
            "batch": batch,
            "stages": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{}, device {}, {} threads, batch {}, median of {} (training step = forward + backward + AdamW)",
        label, args.device, threads, batch, args.iters
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

/// The models `cascade bench --epoch` times, each with its recipe and the
/// stage (1-based) the recipe comes from.
fn epoch_jobs(
    preset: &Preset,
    model: Option<&str>,
) -> anyhow::Result<Vec<(ModelConfig, TrainConfig, usize)>> {
    let Some(name) = model else {
        return Ok(preset
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.model.clone(), s.train.clone(), i + 1))
            .collect());
    };
    let cfg: ModelConfig = name.parse()?;
    let (i, stage) = preset
        .stages
        .iter()
        .enumerate()
        .rev()
        .find(|(_, s)| s.model == cfg)
        .or_else(|| preset.stages.iter().enumerate().next_back())
        .with_context(|| format!("preset '{}' has no stages", preset.name))?;
    Ok(vec![(cfg, stage.train.clone(), i + 1)])
}

/// `cascade bench --epoch`.
fn run_epoch(args: &BenchArgs, threads: &str, device: &Device) -> anyhow::Result<()> {
    let preset = Preset::by_name(&args.preset)?;
    let mut jobs = epoch_jobs(&preset, args.model.as_deref())?;
    if let Some(b) = args.batch {
        for (_, recipe, _) in &mut jobs {
            recipe.batch_size = b;
        }
    }
    let t0 = Instant::now();
    let split = SplitConfig {
        max_train: args.max_train,
        ..preset.split_config(args.seed)
    };
    let splits = Splits::load(&preset.dataset, args.data_dir.as_deref(), &split)
        .with_context(|| format!("loading the data set of preset '{}'", preset.name))?;
    let load_s = t0.elapsed().as_secs_f64();
    let mut rows = Vec::with_capacity(jobs.len());
    for (cfg, recipe, stage) in &jobs {
        let r = bench_epoch(
            cfg,
            &splits.train,
            &splits.val,
            recipe,
            derive_seed(args.seed, *stage as u64),
            device,
        )
        .with_context(|| format!("one epoch of {cfg}"))?;
        rows.push((*stage, r));
    }
    if args.json {
        let epochs: Vec<_> = rows
            .iter()
            .map(|(stage, r)| serde_json::json!({ "recipe_of_stage": stage, "result": r }))
            .collect();
        let out = serde_json::json!({
            "what": format!("preset {}", preset.name),
            "dataset": preset.dataset,
            "device": args.device,
            "threads": threads,
            "load_s": load_s,
            "epochs": epochs,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "preset {}, {} ({} training, {} validation images, read and split in {:.1} s), device {}, {} threads; one epoch each",
        preset.name,
        preset.dataset,
        splits.train.len(),
        splits.val.len(),
        load_s,
        args.device,
        threads
    );
    println!(
        "{:<14} {:>6} {:>6} {:>6} {:>10} {:>10} {:>12} {:>10} {:>12}",
        "model",
        "recipe",
        "batch",
        "steps",
        "train s",
        "epoch s",
        "train img/s",
        "val err %",
        "infer img/s"
    );
    for (stage, r) in &rows {
        println!(
            "{:<14} {:>6} {:>6} {:>6} {:>10.2} {:>10.2} {:>12.0} {:>10.2} {:>12.0}",
            r.model,
            format!("st. {stage}"),
            r.recipe.batch_size,
            r.steps,
            r.train_s,
            r.epoch_s,
            r.train_img_per_s,
            100.0 * r.val_error,
            r.infer_img_per_s
        );
    }
    println!(
        "train s: the training pass; epoch s: with validation and keeping the best weights; \
         infer img/s: one more validation pass in inference mode, timed alone"
    );
    Ok(())
}

/// `cascade bench --policy`: one REINFORCE epoch of the stopping policy.
fn run_policy(args: &BenchArgs, threads: &str) -> anyhow::Result<()> {
    use cascade_agents::{Agent, ReinforceAgent, ReinforceConfig, TrainData, TrainOptions};
    use cascade_env::{ReplayBackend, SyntheticTraceConfig};

    let preset = Preset::by_name(&args.preset)?;
    let (shape, classes) = preset.input_spec()?;
    let feature_dims: Vec<usize> = preset
        .stages
        .iter()
        .map(|s| s.model.feature_dim(shape))
        .collect();
    let stage_costs = preset
        .stages
        .iter()
        .map(|s| Ok(cascade_rl::flops::count(&s.model, shape, classes)?.macs as f64))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let trace = |n: usize, seed: u64| {
        ReplayBackend::synthetic(&SyntheticTraceConfig {
            num_samples: n,
            num_classes: classes,
            feature_dims: feature_dims.clone(),
            stage_costs: stage_costs.clone(),
            seed,
            ..Default::default()
        })
    };
    let mut train = trace(args.samples, derive_seed(args.seed, 0))?;
    let mut val = trace((args.samples / 10).max(1), derive_seed(args.seed, 1))?;
    let config = ReinforceConfig {
        epochs: 1,
        patience: 0,
        ..ReinforceConfig::mlp()
    };
    let mut agent = ReinforceAgent::new(config.clone(), &feature_dims, classes)?;
    let opts = TrainOptions {
        seed: args.seed,
        quiet: true,
        ..Default::default()
    };
    let t0 = Instant::now();
    let summary = agent.train(
        TrainData {
            train: &mut train,
            val: &mut val,
        },
        &opts,
    )?;
    let total_s = t0.elapsed().as_secs_f64();
    let epoch = summary
        .history
        .first()
        .context("the policy trained no epoch")?;
    let train_s = args.samples as f64 / epoch.sps.max(1e-12);
    let steps = epoch.global_step;
    if args.json {
        let out = serde_json::json!({
            "what": format!("policy of preset {}", preset.name),
            "threads": threads,
            "samples": args.samples,
            "num_classes": classes,
            "feature_dims": feature_dims,
            "stage_costs": stage_costs,
            "alpha": opts.spec.alpha,
            "config": config,
            "steps": steps,
            "train_s": train_s,
            "sps": epoch.sps,
            "total_s": total_s,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "policy of preset {} ({} stages, feature widths {:?}, {} classes), {} threads: \
         one REINFORCE epoch of {} trajectories in {} steps of {}: {:.3} s ({:.0} trajectories/s); \
         with the trace recording, initial and end-of-epoch validation {:.3} s",
        preset.name,
        feature_dims.len(),
        feature_dims,
        classes,
        threads,
        args.samples,
        steps,
        config.batch_size,
        train_s,
        epoch.sps,
        total_s
    );
    Ok(())
}
