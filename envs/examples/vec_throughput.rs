//! Throughput of the replay [`VecEnv`]: env-steps per second at a batch of
//! 1024 with a fixed threshold policy (stop once the top probability
//! exceeds 0.9, or at the last stage), the bytes of observation it moves,
//! and a memcpy bandwidth measured in the same process for reference.
//! `bench/env_throughput.py` does the same work with Gymnasium.
//!
//! ```text
//! cargo run --release -p cascade-env --example vec_throughput -- \
//!     [TRACE.safetensors] [--batch 1024] [--seconds 5] \
//!     [--write-synthetic PATH] [--samples 10000]
//! ```
//! Without a trace it builds the synthetic trace (`--samples` samples,
//! widths 16/32/64, 10 classes), and `--write-synthetic` saves it so the
//! Python benchmark can read the same file.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use cascade_env::{
    Action, AutoReset, BatchObservation, ReplayBackend, RewardSpec, StageBackend,
    SyntheticTraceConfig, VecEnv,
};

struct Args {
    trace: Option<PathBuf>,
    batch: usize,
    seconds: f64,
    write_synthetic: Option<PathBuf>,
    samples: usize,
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn parse_args() -> AnyResult<Args> {
    let mut a = Args {
        trace: None,
        batch: 1024,
        seconds: 5.0,
        write_synthetic: None,
        samples: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--batch" => a.batch = value("--batch")?.parse()?,
            "--seconds" => a.seconds = value("--seconds")?.parse()?,
            "--samples" => a.samples = value("--samples")?.parse()?,
            "--write-synthetic" => a.write_synthetic = Some(value("--write-synthetic")?.into()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}").into()),
            s => a.trace = Some(s.into()),
        }
    }
    Ok(a)
}

/// Stop once the top probability exceeds 0.9, or at the last stage.
#[inline]
fn threshold(obs: &BatchObservation, actions: &mut [Action]) {
    let last = obs.num_stages() as u32 - 1;
    let c = obs.num_classes();
    for ((a, p), &t) in actions
        .iter_mut()
        .zip(obs.probs().chunks_exact(c))
        .zip(obs.stage())
    {
        let top = p.iter().fold(0.0f32, |m, &x| m.max(x));
        *a = if top > 0.9 || t == last {
            Action::Stop
        } else {
            Action::Forward
        };
    }
}

/// On-CPU time of this (main) thread in seconds, from the Linux scheduler
/// statistics; `None` where unavailable. Rates per CPU second are robust
/// when other processes share the cores; rates per wall second are what a
/// quiet machine shows.
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns * 1e-9)
}

/// A wall clock and a CPU clock started together.
struct Clocks {
    wall: Instant,
    cpu: Option<f64>,
}

impl Clocks {
    fn start() -> Self {
        Clocks {
            wall: Instant::now(),
            cpu: cpu_seconds(),
        }
    }

    /// (wall seconds, CPU seconds) since start.
    fn elapsed(&self) -> (f64, Option<f64>) {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = self.cpu.zip(cpu_seconds()).map(|(a, b)| b - a);
        (wall, cpu)
    }
}

/// Single-threaded memcpy bandwidth (bytes read + written per second) over
/// buffers of `bytes` bytes.
/// (per wall second, per CPU second).
fn memcpy_bandwidth(bytes: usize, min_seconds: f64) -> (f64, Option<f64>) {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src); // fault the pages in
    let clocks = Clocks::start();
    let mut copies = 0usize;
    while clocks.wall.elapsed().as_secs_f64() < min_seconds {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
        copies += 1;
    }
    let moved = 2.0 * (bytes * copies) as f64;
    let (wall, cpu) = clocks.elapsed();
    (moved / wall, cpu.map(|c| moved / c))
}

/// `x` as "1.23e6 (wall) / 4.56e6 (CPU)".
fn both(wall: f64, cpu: Option<f64>, scale: f64) -> String {
    match cpu {
        Some(c) => format!(
            "{:.3e} per wall s / {:.3e} per CPU s",
            wall / scale,
            c / scale
        ),
        None => format!("{:.3e} per wall s", wall / scale),
    }
}

/// Errors print as one `error: ...` line (their `Display`), exit status 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> AnyResult<()> {
    let args = parse_args()?;
    let backend = match &args.trace {
        Some(p) => ReplayBackend::load(p)?,
        None => {
            let b = ReplayBackend::synthetic(&SyntheticTraceConfig {
                num_samples: args.samples,
                ..Default::default()
            })?;
            if let Some(p) = &args.write_synthetic {
                b.save(p)?;
                println!("wrote the synthetic trace to {}", p.display());
            }
            b
        }
    };
    let (k, c, n) = (backend.num_stages(), backend.num_classes(), args.batch);
    let dims = backend.feature_dims().to_vec();
    println!(
        "trace: {} / {} / {}, N = {}, C = {c}, feature widths {dims:?}",
        backend.meta().dataset,
        backend.meta().split,
        backend.meta().cascade,
        backend.num_samples()
    );
    let spec = RewardSpec::default();

    // Exact score of the policy on the whole split (cross-checks Python).
    let mut venv = VecEnv::new(backend, spec, n, AutoReset::SameStep)?;
    let start = Instant::now();
    let ev = venv.evaluate_all(0, |obs, a| {
        threshold(obs, a);
        Ok(())
    })?;
    let eval_s = start.elapsed().as_secs_f64();
    println!(
        "evaluate (whole split, alpha {}): mean return {:.6}, error {:.4}, mean cost {:.4}, stop fractions {:?} ({:.1} ms)",
        spec.alpha,
        ev.mean_return,
        ev.error_rate,
        ev.mean_cost,
        ev.stop_fraction.iter().map(|f| (f * 1e4).round() / 1e4).collect::<Vec<_>>(),
        eval_s * 1e3
    );

    // Throughput: SameStep autoreset, so every env-step is a transition.
    let mut actions = vec![Action::Stop; n];
    venv.reset(Some(0))?;
    for _ in 0..200 {
        threshold(venv.obs(), &mut actions);
        venv.step(&actions)?;
    }
    let (mut steps, mut episodes, mut ret_sum) = (0u64, 0u64, 0.0f64);
    let mut rows_per_stage = vec![0u64; k];
    let clocks = Clocks::start();
    let (elapsed, cpu) = loop {
        for _ in 0..256 {
            threshold(venv.obs(), &mut actions);
            let step = venv.step(&actions)?;
            for (&t, &r) in step.terminated.iter().zip(step.rewards) {
                if t {
                    episodes += 1;
                    ret_sum += r;
                }
            }
            // Every live sub-env got a fresh row at its current stage.
            for (t, rows) in rows_per_stage.iter_mut().enumerate() {
                *rows += step.obs.envs_at_stage(t).len() as u64;
            }
        }
        steps += 256;
        let (wall, cpu) = clocks.elapsed();
        if wall >= args.seconds {
            break (wall, cpu);
        }
    };
    let env_steps = steps * n as u64;
    let sps = env_steps as f64 / elapsed;
    let sps_cpu = cpu.map(|c| env_steps as f64 / c);
    // Bytes per env-step: the new feature+probability row is read from the
    // trace and written into the batch (x2); stage (4), cost (4), reward
    // (8), terminated (1) and sample (8) are written per sub-env.
    let row_bytes: u64 = rows_per_stage
        .iter()
        .zip(&dims)
        .map(|(&r, &d)| r * 4 * (d + c) as u64)
        .sum();
    let bytes_per_step = (2 * row_bytes) as f64 / env_steps as f64 + 25.0;
    println!(
        "VecEnv batch {n}: {steps} steps in {elapsed:.2} s wall{}: env-steps/s {}",
        cpu.map_or(String::new(), |c| format!(" ({c:.2} s CPU)")),
        both(sps, sps_cpu, 1.0)
    );
    println!(
        "  {:.3e} episodes/s (wall), mean episode length {:.3}, mean return {:.4}",
        episodes as f64 / elapsed,
        env_steps as f64 / episodes as f64,
        ret_sum / episodes as f64
    );
    let (dram, dram_cpu) = memcpy_bandwidth(256 << 20, 1.0);
    let (cache, cache_cpu) = memcpy_bandwidth(4 << 20, 1.0);
    let pct = |moved: Option<f64>, bw: Option<f64>| match (moved, bw) {
        (Some(m), Some(b)) => format!("{:.1}%", 100.0 * m / b),
        _ => "n/a".into(),
    };
    println!(
        "  observation bytes moved per env-step {bytes_per_step:.1} B -> GB/s {}",
        both(
            bytes_per_step * sps,
            sps_cpu.map(|s| s * bytes_per_step),
            1e9
        )
    );
    println!(
        "  memcpy (read+write) 256 MiB: GB/s {}; 4 MiB: GB/s {}",
        both(dram, dram_cpu, 1e9),
        both(cache, cache_cpu, 1e9)
    );
    let moved_cpu = sps_cpu.map(|s| s * bytes_per_step);
    println!(
        "  env traffic / memcpy bandwidth (per CPU s): {} of 256 MiB memcpy, {} of 4 MiB memcpy",
        pct(moved_cpu, dram_cpu),
        pct(moved_cpu, cache_cpu)
    );
    println!(
        "RESULT rust_env_steps_per_wall_s={sps:.0} rust_env_steps_per_cpu_s={:.0}",
        sps_cpu.unwrap_or(f64::NAN)
    );
    Ok(())
}
