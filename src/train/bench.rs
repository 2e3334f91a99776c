//! Training and inference throughput of one model, or of every stage of a
//! preset.

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::optim::{AnyOptimizer, OptimizerConfig};
use crate::error::{Error, Result};
use crate::flops;
use crate::models::Model;
use crate::presets::Preset;
use cascade_env::rng::derive_seed;

/// Timings of one model at one batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Canonical model name.
    pub model: String,
    /// Batch size.
    pub batch: usize,
    /// MACs per image.
    pub macs: u64,
    /// Median milliseconds per training step (forward, cross-entropy,
    /// backward, AdamW update, train-mode batch norm).
    pub train_ms: f64,
    /// Training images per second at the median.
    pub train_img_per_s: f64,
    /// Median milliseconds per inference batch (eval mode).
    pub infer_ms: f64,
    /// Inference images per second at the median.
    pub infer_img_per_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Times `iters` training steps and `iters` inference batches of `model`
/// on random data of batch size `batch` (after one warm-up of each) and
/// returns the medians.
pub fn bench_model(model: &Model, batch: usize, iters: usize, seed: u64) -> Result<BenchResult> {
    if batch == 0 || iters == 0 {
        return Err(Error::Config(
            "bench: batch and iters must be positive".into(),
        ));
    }
    let [c, h, w] = model.classifier().input_shape();
    let classes = model.classifier().num_classes();
    let mut rng = StdRng::seed_from_u64(seed);
    let xs: Vec<f32> = (0..batch * c * h * w)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let ys: Vec<u32> = (0..batch)
        .map(|_| rng.random_range(0..classes as u32))
        .collect();
    let x = Tensor::from_vec(xs, (batch, c, h, w), model.device())?;
    let y = Tensor::from_vec(ys, batch, model.device())?;
    let mut opt = AnyOptimizer::new(&OptimizerConfig::adamw(1e-3, 0.0), model.trainable_vars()?)?;
    let mut train = Vec::with_capacity(iters);
    for i in 0..=iters {
        let t0 = Instant::now();
        let out = model.forward_t(&x, true)?;
        let loss = candle_nn::loss::cross_entropy(&out.logits, &y)?;
        opt.backward_step(&loss)?;
        model.device().synchronize()?;
        if i > 0 {
            train.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut infer = Vec::with_capacity(iters);
    for i in 0..=iters {
        let t0 = Instant::now();
        let out = model.forward_t(&x, false)?;
        // Force the computation to finish.
        out.logits.sum_all()?.to_scalar::<f32>()?;
        if i > 0 {
            infer.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (train_ms, infer_ms) = (median(train), median(infer));
    Ok(BenchResult {
        model: model.config().name(),
        batch,
        macs: flops::count(model.config(), [c, h, w], classes)?.macs,
        train_ms,
        train_img_per_s: batch as f64 / (train_ms / 1e3),
        infer_ms,
        infer_img_per_s: batch as f64 / (infer_ms / 1e3),
    })
}

/// Benchmarks every stage of `preset` (freshly initialised with `seed`) on
/// `device`.
pub fn bench_preset(
    preset: &Preset,
    batch: usize,
    iters: usize,
    seed: u64,
    device: &Device,
) -> Result<Vec<BenchResult>> {
    let (shape, classes) = preset.input_spec()?;
    preset
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let m = Model::new(
                &s.model,
                shape,
                classes,
                derive_seed(seed, i as u64),
                device,
            )?;
            bench_model(&m, batch, iters, seed)
        })
        .collect()
}
