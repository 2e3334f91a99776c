//! Benchmark of the lazy live backend: classify a split with a fixed policy
//! that stops half the samples at stage 1 (those whose stage-1 confidence is
//! above its median) and forwards the other half to the last stage, against
//! running every stage on every sample.
//!
//! `cargo run --release --example live_backend -- runs/fmnist-4 [test|val] [repeats]`

use std::time::Instant;

use candle_core::Device;
use cascade_env::{Action, AutoReset, RewardSpec, StageBackend, VecEnv};
use cascade_rl::backend::{cascade_splits, CandleBackend, DEFAULT_BATCH};
use cascade_rl::cascade::Cascade;

/// Errors print as one `error: ...` line (their `Display`), exit status 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or("usage: live_backend CASCADE_DIR [test|val] [repeats]")?;
    let split = args.get(2).map(String::as_str).unwrap_or("test");
    let repeats: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let cascade = Cascade::load(dir.as_ref(), &Device::Cpu, None, None)?;
    let splits = cascade_splits(&cascade, None)?;
    let ds = if split == "val" {
        &splits.val
    } else {
        &splits.test
    };
    let samples: Vec<usize> = (0..ds.len()).collect();
    let k = cascade.len();

    // The median stage-1 confidence, so that exactly half the samples stop.
    let mut probe = CandleBackend::new(&cascade, ds, DEFAULT_BATCH)?;
    let c = probe.num_classes();
    let first = probe.run_stage(0, &samples)?;
    let mut conf: Vec<f32> = first
        .probs
        .chunks_exact(c)
        .map(|p| p.iter().copied().fold(0.0, f32::max))
        .collect();
    conf.sort_by(f32::total_cmp);
    let median = conf[conf.len() / 2];

    let mut half = Vec::new();
    let mut all = Vec::new();
    for _ in 0..repeats {
        // Lazy: even samples stop at stage 1, odd ones go to the last stage.
        let backend = CandleBackend::new(&cascade, ds, DEFAULT_BATCH)?;
        let mut env = VecEnv::new(backend, RewardSpec::default(), 1024, AutoReset::Disabled)?;
        let t = Instant::now();
        let eval = env.evaluate(&samples, 0, |obs, actions| {
            for (i, a) in actions.iter_mut().enumerate() {
                let stage = obs.stage()[i] as usize;
                let confident = obs.probs_of(i).iter().copied().fold(0.0, f32::max) >= median;
                *a = if stage + 1 == k || (stage == 0 && confident) {
                    Action::Stop
                } else {
                    Action::Forward
                };
            }
            Ok(())
        })?;
        half.push(t.elapsed().as_secs_f64());
        let runs = env.backend().stage_runs().to_vec();
        // Eager reference: every stage on every sample.
        let mut backend = CandleBackend::new(&cascade, ds, DEFAULT_BATCH)?;
        let t = Instant::now();
        for stage in 0..k {
            backend.run_stage(stage, &samples)?;
        }
        all.push(t.elapsed().as_secs_f64());
        println!(
            "lazy {:.3} s (error {:.4}, mean cost {:.3}, stage runs {runs:?}) | all stages {:.3} s",
            half.last().unwrap_or(&0.0),
            eval.error_rate,
            eval.mean_cost,
            all.last().unwrap_or(&0.0)
        );
    }
    half.sort_by(f64::total_cmp);
    all.sort_by(f64::total_cmp);
    let (h, a) = (half[half.len() / 2], all[all.len() / 2]);
    println!(
        "{} samples of {split}: median lazy {h:.3} s, all stages {a:.3} s, ratio {:.2}x",
        ds.len(),
        a / h
    );
    Ok(())
}
