//! GPU checks: the classifier zoo on CUDA against the CPU, an end-to-end
//! cascade trained on the GPU, and the GPU benchmark of the `fmnist-4`
//! stages.
//!
//! Every test here is `#[ignore]`d and named `gpu_*`, so the ordinary test
//! run (which has no GPU) skips them. On a CUDA machine:
//!
//! ```text
//! cargo test --release --features cascade-rl/cuda -p cascade-tests --test gpu \
//!     -- --ignored gpu_ --test-threads 1 --show-output
//! ```
//!
//! or `scripts/gpu-check.sh` (docs/gpu.md). Without a usable GPU every test
//! fails at once with a message that says so.
//!
//! What is checked, and to which tolerance (all float32):
//!
//! - `gpu_ops_match_cpu`: each op of `cascade_rl::ops` (custom kernels on the
//!   CPU, candle's own ops on CUDA), forward and gradients, within
//!   `1e-4 * max(1, max |cpu|)`.
//! - `gpu_fmnist4_forward_matches_cpu`: every `fmnist-4` stage, built with
//!   identical weights on both devices, on one batch of 64: features and
//!   logits in train and eval mode within `1e-3 * max(1, max |cpu|)`.
//! - `gpu_fmnist4_training_matches_cpu`: three steps of the stage's own
//!   optimiser (AdamW) on both devices. Per step, the losses agree within
//!   `1e-3` relative. After the three steps the weight change of the whole
//!   model agrees: `|dw_gpu - dw_cpu| / |dw_cpu| <= 1e-2` (Euclidean norms
//!   over all trainable parameters). The update is compared as a whole, not
//!   per element, because AdamW divides each gradient component by its own
//!   running RMS: a component whose gradient is pure rounding noise takes a
//!   full-size step whose sign the rounding decides, on either device. The
//!   batch-norm running statistics agree within `1e-3 * max(1, max |cpu|)`,
//!   and so do the eval-mode logits after training.
//! - `gpu_synthetic_cascade_trained_on_gpu`: `synthetic-3` pretrained on the
//!   GPU; its checkpoints loaded on the CPU and on the GPU give the same
//!   stage outputs (probabilities within `1e-4`).
//! - `gpu_bench_fmnist4`: training-step time and inference throughput of
//!   each `fmnist-4` stage at batch 128, GPU against CPU in the same run;
//!   prints a Markdown table and writes it to `$CASCADE_GPU_BENCH_OUT` when
//!   that is set.

use std::fmt::Write as _;

use candle_core::{DType, Device, Tensor, Var};
use cascade_rl::data::{SplitConfig, Splits, SyntheticConfig};
use cascade_rl::device::{device_name, parse_device};
use cascade_rl::models::Model;
use cascade_rl::presets::Preset;
use cascade_rl::train::{bench_preset, derive_seed, AnyOptimizer, BenchResult};

const SEED: u64 = 20180713;

/// The GPU, or a panic that says why there is none.
fn gpu() -> Device {
    match parse_device("cuda:0") {
        Ok(d) => d,
        Err(e) => panic!(
            "no usable CUDA device: {e}\n(these gpu_* tests need an NVIDIA GPU with its driver \
             and a build with `--features cascade-rl/cuda`; see docs/gpu.md)"
        ),
    }
}

/// `n` deterministic values, uniform in [-1, 1).
fn uniform(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| (derive_seed(seed, i) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
        .collect()
}

fn uniform_tensor(shape: &[usize], seed: u64, device: &Device) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(uniform(n, seed), shape, device).unwrap()
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `(max |a - b|, max |a|)` over two tensors of the same shape, on any
/// devices.
fn max_diff(a: &Tensor, b: &Tensor) -> (f32, f32) {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let (a, b) = (to_vec(a), to_vec(b));
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = a.iter().map(|x| x.abs()).fold(0f32, f32::max);
    (diff, scale)
}

/// Compares `gpu` to `cpu` within `rel * max(1, max |cpu|)`; returns a line
/// describing a failure, or `None`.
fn close(what: &str, cpu: &Tensor, gpu: &Tensor, rel: f32) -> Option<String> {
    let (diff, scale) = max_diff(cpu, gpu);
    let tol = rel * scale.max(1.0);
    let line =
        format!("{what}: max |gpu - cpu| = {diff:.3e} (scale {scale:.3e}, tolerance {tol:.1e})");
    println!("  {line}");
    (diff > tol || diff.is_nan()).then_some(line)
}

fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} check(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// Mean cross-entropy of `logits` against class indices `y`.
///
/// # Shapes
/// `logits: [b, k]`, `y: [b]` (u32) -> scalar
fn cross_entropy(logits: &Tensor, y: &Tensor) -> Tensor {
    let picked = logits
        .gather(&y.unsqueeze(1).unwrap(), 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    (logits.log_sum_exp(1).unwrap() - picked)
        .unwrap()
        .mean_all()
        .unwrap()
}

/// The same stage model on the CPU and on `gpu`, with identical weights:
/// initialised on the CPU, every variable copied to the GPU.
fn model_pair(preset: &Preset, stage: usize, gpu: &Device) -> (Model, Model) {
    let (shape, classes) = preset.input_spec().unwrap();
    let cfg = &preset.stages[stage].model;
    let seed = derive_seed(SEED, stage as u64);
    let cpu = Model::new(cfg, shape, classes, seed, &Device::Cpu).unwrap();
    // Built with another seed, so that the copy below is what makes the
    // weights equal.
    let dev = Model::new(cfg, shape, classes, seed ^ 1, gpu).unwrap();
    let cpu_vars = cpu.named_vars().unwrap();
    let dev_vars = dev.named_vars().unwrap();
    let names = |v: &[(String, Var)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&cpu_vars),
        names(&dev_vars),
        "{cfg}: variable names differ"
    );
    for ((name, c), (_, g)) in cpu_vars.iter().zip(&dev_vars) {
        g.set(&c.as_tensor().to_device(gpu).unwrap()).unwrap();
        assert_eq!(
            to_vec(c.as_tensor()),
            to_vec(g.as_tensor()),
            "{cfg}: {name} not copied"
        );
    }
    assert!(dev.varmap().all_vars().iter().all(|v| v.device().is_cuda()));
    (cpu, dev)
}

/// A batch of `n` images of the preset's input shape and labels.
fn batch(preset: &Preset, n: usize, seed: u64) -> (Tensor, Tensor) {
    let ([c, h, w], classes) = preset.input_spec().unwrap();
    let x = uniform_tensor(&[n, c, h, w], seed, &Device::Cpu);
    let y: Vec<u32> = (0..n as u64)
        .map(|i| (derive_seed(seed ^ 0xff, i) % classes as u64) as u32)
        .collect();
    (x, Tensor::from_vec(y, n, &Device::Cpu).unwrap())
}

fn fmnist4() -> Preset {
    Preset::by_name("fmnist-4").unwrap()
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored gpu_"]
fn gpu_ops_match_cpu() {
    use cascade_rl::ops;
    let gpu = gpu();
    let cpu = Device::Cpu;
    let mut failures = Vec::new();
    // Each case: named inputs (shape), and a function of them returning the
    // outputs. The loss `sum(out * r)` with a fixed random `r` gives
    // gradients of every input.
    type OpFn = fn(&[Tensor]) -> Vec<Tensor>;
    let cases: [(&str, Vec<Vec<usize>>, OpFn); 9] = [
        (
            "conv2d 3x3 s1 p1",
            vec![vec![4, 3, 12, 12], vec![8, 3, 3, 3]],
            |t| vec![ops::conv2d(&t[0], &t[1], None, 1, 1).unwrap()],
        ),
        (
            "conv2d 3x3 s2 p1 bias",
            vec![vec![4, 3, 12, 12], vec![8, 3, 3, 3], vec![8]],
            |t| vec![ops::conv2d(&t[0], &t[1], Some(&t[2]), 2, 1).unwrap()],
        ),
        (
            "conv2d 1x1 s2",
            vec![vec![4, 8, 12, 12], vec![16, 8, 1, 1]],
            |t| vec![ops::conv2d(&t[0], &t[1], None, 2, 0).unwrap()],
        ),
        (
            "batch_norm_train",
            vec![vec![4, 8, 6, 6], vec![8], vec![8]],
            |t| {
                let (y, m, v) = ops::batch_norm_train(&t[0], &t[1], &t[2], 1e-5).unwrap();
                vec![y, m, v]
            },
        ),
        (
            "batch_norm_relu_train",
            vec![vec![4, 8, 6, 6], vec![8], vec![8]],
            |t| {
                let (y, m, v) = ops::batch_norm_relu_train(&t[0], &t[1], &t[2], 1e-5).unwrap();
                vec![y, m, v]
            },
        ),
        (
            "batch_norm_relu_eval",
            vec![vec![4, 8, 6, 6], vec![8], vec![8], vec![8], vec![8]],
            |t| {
                // The statistics are constants (no gradient) on every
                // path; the variance positive.
                let var = (t[4].detach().abs().unwrap() + 0.5).unwrap();
                vec![
                    ops::batch_norm_relu_eval(&t[0], &t[1], &t[2], &t[3].detach(), &var, 1e-5)
                        .unwrap(),
                ]
            },
        ),
        ("max_pool2d 2", vec![vec![4, 8, 12, 12]], |t| {
            vec![ops::max_pool2d(&t[0], 2).unwrap()]
        }),
        ("relu", vec![vec![4, 8, 5, 5]], |t| {
            vec![ops::relu(&t[0]).unwrap()]
        }),
        ("add_relu", vec![vec![4, 8, 5, 5], vec![4, 8, 5, 5]], |t| {
            vec![ops::add_relu(&t[0], &t[1]).unwrap()]
        }),
    ];
    for (k, (name, shapes, f)) in cases.into_iter().enumerate() {
        println!("{name}");
        let run = |dev: &Device| {
            let vars: Vec<Var> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    Var::from_tensor(&uniform_tensor(s, derive_seed(k as u64, i as u64), dev))
                        .unwrap()
                })
                .collect();
            let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let outs = f(&ts);
            let r = uniform_tensor(outs[0].dims(), 99 + k as u64, dev);
            let loss = (&outs[0] * r).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let g: Vec<Tensor> = ts
                .iter()
                .map(|t| grads.get(t).cloned().unwrap_or(t.zeros_like().unwrap()))
                .collect();
            (outs, g)
        };
        let (co, cg) = run(&cpu);
        let (go, gg) = run(&gpu);
        assert!(go[0].device().is_cuda(), "{name}: output left the GPU");
        for (i, (c, g)) in co.iter().zip(&go).enumerate() {
            failures.extend(close(&format!("{name} output {i}"), c, g, 1e-4));
        }
        for (i, (c, g)) in cg.iter().zip(&gg).enumerate() {
            failures.extend(close(&format!("{name} d/d input {i}"), c, g, 1e-4));
        }
    }
    assert_no_failures(&failures);
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored gpu_"]
fn gpu_fmnist4_forward_matches_cpu() {
    let gpu = gpu();
    let preset = fmnist4();
    let mut failures = Vec::new();
    for stage in 0..preset.stages.len() {
        let (cpu_m, gpu_m) = model_pair(&preset, stage, &gpu);
        let name = preset.stages[stage].model.name();
        println!("stage {} {name}", stage + 1);
        let (x, _) = batch(&preset, 64, derive_seed(SEED, 100 + stage as u64));
        let xg = x.to_device(&gpu).unwrap();
        // Eval first: train mode moves the running statistics.
        for train in [false, true] {
            let mode = if train { "train" } else { "eval" };
            let c = cpu_m.forward_t(&x, train).unwrap();
            let g = gpu_m.forward_t(&xg, train).unwrap();
            assert!(g.logits.device().is_cuda());
            assert_eq!(c.logits.dims(), &[64, 10]);
            failures.extend(close(
                &format!("{name} {mode} logits"),
                &c.logits,
                &g.logits,
                1e-3,
            ));
            failures.extend(close(
                &format!("{name} {mode} features"),
                &c.features,
                &g.features,
                1e-3,
            ));
        }
    }
    assert_no_failures(&failures);
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored gpu_"]
fn gpu_fmnist4_training_matches_cpu() {
    let gpu = gpu();
    let preset = fmnist4();
    let mut failures = Vec::new();
    for stage in 0..preset.stages.len() {
        let (cpu_m, gpu_m) = model_pair(&preset, stage, &gpu);
        let name = preset.stages[stage].model.name();
        let opt_cfg = &preset.stages[stage].train.optimizer;
        println!("stage {} {name}, {opt_cfg:?}", stage + 1);
        let w0: Vec<Vec<f32>> = cpu_m
            .trainable_vars()
            .unwrap()
            .iter()
            .map(|v| to_vec(v.as_tensor()))
            .collect();
        let mut cpu_opt = AnyOptimizer::new(opt_cfg, cpu_m.trainable_vars().unwrap()).unwrap();
        let mut gpu_opt = AnyOptimizer::new(opt_cfg, gpu_m.trainable_vars().unwrap()).unwrap();
        for step in 0..3u64 {
            let (x, y) = batch(
                &preset,
                64,
                derive_seed(SEED, 200 + 10 * stage as u64 + step),
            );
            let (xg, yg) = (x.to_device(&gpu).unwrap(), y.to_device(&gpu).unwrap());
            let lc = cross_entropy(&cpu_m.forward_t(&x, true).unwrap().logits, &y);
            let lg = cross_entropy(&gpu_m.forward_t(&xg, true).unwrap().logits, &yg);
            cpu_opt.backward_step(&lc).unwrap();
            gpu_opt.backward_step(&lg).unwrap();
            let (a, b) = (
                lc.to_scalar::<f32>().unwrap(),
                lg.to_scalar::<f32>().unwrap(),
            );
            let rel = (a - b).abs() / a.abs().max(1e-6);
            println!("  step {step}: loss cpu {a:.6} gpu {b:.6} (relative difference {rel:.2e})");
            if rel > 1e-3 || rel.is_nan() {
                failures.push(format!("{name} step {step}: loss cpu {a} gpu {b}, relative difference {rel:.2e} > 1e-3"));
            }
        }
        // The weight change of the whole model.
        let (mut d_cpu, mut d_diff) = (0f64, 0f64);
        let cpu_vars = cpu_m.trainable_vars().unwrap();
        let gpu_vars = gpu_m.trainable_vars().unwrap();
        for ((c, g), w) in cpu_vars.iter().zip(&gpu_vars).zip(&w0) {
            let (c, g) = (to_vec(c.as_tensor()), to_vec(g.as_tensor()));
            for ((c, g), w) in c.iter().zip(&g).zip(w) {
                d_cpu += ((c - w) as f64).powi(2);
                d_diff += ((g - c) as f64).powi(2);
            }
        }
        let rel = d_diff.sqrt() / d_cpu.sqrt().max(1e-12);
        println!(
            "  |dw_gpu - dw_cpu| / |dw_cpu| = {rel:.3e} (|dw_cpu| = {:.3e})",
            d_cpu.sqrt()
        );
        if rel > 1e-2 || rel.is_nan() {
            failures.push(format!(
                "{name}: weight change differs, |dw_gpu - dw_cpu| / |dw_cpu| = {rel:.3e} > 1e-2"
            ));
        }
        // Running statistics, then eval-mode logits after training.
        for ((n, c), (_, g)) in cpu_m
            .named_vars()
            .unwrap()
            .iter()
            .zip(&gpu_m.named_vars().unwrap())
        {
            if n.ends_with("running_mean") || n.ends_with("running_var") {
                failures.extend(close(
                    &format!("{name} {n}"),
                    c.as_tensor(),
                    g.as_tensor(),
                    1e-3,
                ));
            }
        }
        let (x, _) = batch(&preset, 64, derive_seed(SEED, 300 + stage as u64));
        let c = cpu_m.forward_t(&x, false).unwrap().logits;
        let g = gpu_m
            .forward_t(&x.to_device(&gpu).unwrap(), false)
            .unwrap()
            .logits;
        failures.extend(close(
            &format!("{name} eval logits after training"),
            &c,
            &g,
            1e-3,
        ));
    }
    assert_no_failures(&failures);
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored gpu_"]
fn gpu_synthetic_cascade_trained_on_gpu() {
    use cascade_rl::backend::CandleBackend;
    use cascade_rl::cascade::Cascade;
    use cascade_rl::train::{pretrain, PretrainOptions};

    let gpu = gpu();
    let dir = tempfile::tempdir().unwrap();
    let split = SplitConfig {
        synthetic: SyntheticConfig {
            n_train: 2000,
            n_test: 400,
            ..Default::default()
        },
        ..Default::default()
    };
    let preset = Preset::by_name("synthetic-3").unwrap();
    let mut opts = PretrainOptions::new(dir.path());
    opts.epochs = Some(3);
    opts.split = split;
    opts.device = gpu.clone();
    let summary = pretrain(&preset, &opts).unwrap();
    assert_eq!(summary.manifest.device, "cuda:0");
    let classes = summary.manifest.num_classes;
    for (t, r) in summary.reports.iter().enumerate() {
        println!(
            "stage {}: best val error {:.2}%",
            t + 1,
            100.0 * r.best_val_error
        );
        assert!(
            r.best_val_error < 1.0 - 1.0 / classes as f64,
            "stage {}: val error {} is no better than chance",
            t + 1,
            r.best_val_error
        );
    }

    // The GPU-trained checkpoints, loaded on each device, give the same
    // stage outputs.
    let splits = Splits::load(
        "synthetic",
        None,
        &SplitConfig {
            val_fraction: preset.val_fraction,
            seed: opts.seed,
            ..split
        },
    )
    .unwrap();
    let on = |dev: &Device| {
        let c = Cascade::load(dir.path(), dev, Some("synthetic-3"), None).unwrap();
        CandleBackend::new(&c, &splits.val, 128).unwrap()
    };
    let (bc, bg) = (on(&Device::Cpu), on(&gpu));
    let samples: Vec<usize> = (0..splits.val.len().min(256)).collect();
    let mut failures = Vec::new();
    for stage in 0..preset.stages.len() {
        let (fc, pc) = bc.forward_samples(stage, &samples).unwrap();
        let (fg, pg) = bg.forward_samples(stage, &samples).unwrap();
        assert!(pg.device().is_cuda());
        failures.extend(close(&format!("stage {} probs", stage + 1), &pc, &pg, 1e-4));
        failures.extend(close(
            &format!("stage {} features", stage + 1),
            &fc,
            &fg,
            1e-3,
        ));
    }
    assert_no_failures(&failures);
}

fn iters_from_env(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{var}='{s}' is not a positive integer")),
        Err(_) => default,
    }
}

/// The benchmark table, GPU against CPU.
fn bench_markdown(
    cpu: &[BenchResult],
    gpu: &[BenchResult],
    gpu_dev: &Device,
    iters: (usize, usize),
) -> String {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`fmnist-4` stages at batch {}: median of {} GPU and {} CPU iterations after one warm-up; \
         training step = forward, cross-entropy, backward, AdamW update (train-mode batch norm); \
         inference = eval-mode forward. {} against the CPU ({threads} threads), same run.\n",
        cpu.first().map_or(0, |r| r.batch),
        iters.0,
        iters.1,
        device_name(gpu_dev)
    );
    let _ = writeln!(
        s,
        "| stage | model | MACs/img | train ms CPU | train ms GPU | train speed-up | infer img/s CPU | infer img/s GPU | infer speed-up |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, (c, g)) in cpu.iter().zip(gpu).enumerate() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {:.2} | {:.1}x | {:.0} | {:.0} | {:.1}x |",
            i + 1,
            c.model,
            c.macs,
            c.train_ms,
            g.train_ms,
            c.train_ms / g.train_ms,
            c.infer_img_per_s,
            g.infer_img_per_s,
            g.infer_img_per_s / c.infer_img_per_s
        );
    }
    s
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored gpu_"]
fn gpu_bench_fmnist4() {
    let gpu = gpu();
    let preset = fmnist4();
    let batch = 128;
    let gpu_iters = iters_from_env("CASCADE_GPU_BENCH_ITERS", 30);
    let cpu_iters = iters_from_env("CASCADE_CPU_BENCH_ITERS", 5);
    let g = bench_preset(&preset, batch, gpu_iters, SEED, &gpu).unwrap();
    let c = bench_preset(&preset, batch, cpu_iters, SEED, &Device::Cpu).unwrap();
    assert_eq!(g.len(), preset.stages.len());
    for r in g.iter().chain(&c) {
        assert!(r.train_ms > 0.0 && r.infer_ms > 0.0, "{r:?}");
    }
    let md = bench_markdown(&c, &g, &gpu, (gpu_iters, cpu_iters));
    println!("{md}");
    if let Ok(path) = std::env::var("CASCADE_GPU_BENCH_OUT") {
        let path = std::path::PathBuf::from(path);
        cascade_rl::fsutil::write_atomic(&path, md.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        println!("written to {}", path.display());
    }
}
