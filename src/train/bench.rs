//! Training and inference throughput of one model, or of every stage of a
//! preset.

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::eval::evaluate;
use super::fit::{train_model, Progress, TrainConfig};
use super::optim::{AnyOptimizer, OptimizerConfig};
use crate::data::Dataset;
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

/// Timings of one real training epoch of one model (see [`bench_epoch`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochBenchResult {
    /// Canonical model name.
    pub model: String,
    /// The recipe the epoch ran with (its `epochs` is 1).
    pub recipe: TrainConfig,
    /// Images in the training split.
    pub train_images: usize,
    /// Images in the validation split.
    pub val_images: usize,
    /// Optimiser steps in the epoch.
    pub steps: usize,
    /// Seconds of the training pass: shuffling, batch assembly with
    /// augmentation, forward, cross-entropy, backward, optimiser step and
    /// the per-step loss and error read-back.
    pub train_s: f64,
    /// Seconds of the whole [`train_model`] call: the training pass, the
    /// validation pass and keeping the best weights.
    pub epoch_s: f64,
    /// Training images per second over the training pass.
    pub train_img_per_s: f64,
    /// Mean training cross-entropy over the epoch.
    pub train_loss: f64,
    /// Validation error after the epoch.
    pub val_error: f64,
    /// Seconds of one more pass over the validation split in inference
    /// mode after the epoch ([`evaluate`] at the recipe's
    /// `eval_batch_size`: forward, cross-entropy and error count), timed
    /// alone; the epoch's own validation pass has already run every shape
    /// once.
    pub infer_s: f64,
    /// Validation images per second over that pass.
    pub infer_img_per_s: f64,
}

/// Trains a fresh `model` (initialised with `seed`) for one epoch of
/// `recipe` on `train` with [`train_model`], validating on `val`, and
/// returns how long it took. Building the model is not timed.
pub fn bench_epoch(
    model: &crate::models::ModelConfig,
    train: &Dataset,
    val: &Dataset,
    recipe: &TrainConfig,
    seed: u64,
    device: &Device,
) -> Result<EpochBenchResult> {
    let recipe = TrainConfig {
        epochs: 1,
        ..recipe.clone()
    };
    recipe.validate()?;
    let m = Model::new(
        model,
        train.shape,
        train.num_classes(),
        derive_seed(seed, 0),
        device,
    )?;
    let t0 = Instant::now();
    let report = train_model(
        &m,
        train,
        val,
        &recipe,
        derive_seed(seed, 1),
        0,
        Progress::Quiet,
    )?;
    device.synchronize()?;
    let epoch_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    evaluate(&m, val, recipe.eval_batch_size)?;
    device.synchronize()?;
    let infer_s = t1.elapsed().as_secs_f64();
    let rec = report
        .epochs
        .first()
        .ok_or_else(|| Error::Training("no epoch was run".into()))?;
    let n = train.len();
    let steps = recipe.steps_per_epoch(n);
    let seen = (steps * recipe.batch_size).min(n);
    Ok(EpochBenchResult {
        model: model.name(),
        train_images: n,
        val_images: val.len(),
        steps,
        train_s: seen as f64 / rec.train_img_per_s.max(1e-12),
        epoch_s,
        train_img_per_s: rec.train_img_per_s,
        train_loss: rec.train_loss,
        val_error: rec.val_error,
        infer_s,
        infer_img_per_s: val.len() as f64 / infer_s.max(1e-12),
        recipe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{SplitConfig, Splits};
    use crate::train::Augment;

    #[test]
    fn bench_epoch_runs_one_epoch_of_the_recipe() {
        let cfg = SplitConfig {
            synthetic: crate::data::SyntheticConfig {
                n_train: 300,
                n_test: 50,
                ..Default::default()
            },
            ..Default::default()
        };
        let s = Splits::load("synthetic", None, &cfg).unwrap();
        let recipe = TrainConfig {
            epochs: 7,
            batch_size: 32,
            augment: Augment {
                hflip: true,
                crop_padding: 2,
            },
            ..Default::default()
        };
        let model = "mlp-16".parse().unwrap();
        let r = bench_epoch(&model, &s.train, &s.val, &recipe, 3, &Device::Cpu).unwrap();
        assert_eq!(r.model, "mlp-16");
        assert_eq!(r.recipe.epochs, 1);
        assert_eq!(r.recipe.augment, recipe.augment);
        assert_eq!((r.train_images, r.val_images), (s.train.len(), s.val.len()));
        let n = s.train.len();
        assert_eq!(r.steps, n / 32 + usize::from(n % 32 > 1));
        assert!(r.train_s > 0.0 && r.train_s <= r.epoch_s, "{r:?}");
        assert!(r.infer_s > 0.0, "{r:?}");
        let img_s = r.val_images as f64 / r.infer_s;
        assert!((r.infer_img_per_s - img_s).abs() <= 1e-6 * img_s, "{r:?}");
        assert!(r.train_loss.is_finite() && (0.0..=1.0).contains(&r.val_error));
        let bad = TrainConfig {
            batch_size: 0,
            ..recipe
        };
        assert!(bench_epoch(&model, &s.train, &s.val, &bad, 3, &Device::Cpu).is_err());
    }
}
