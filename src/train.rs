//! Supervised training of the stage classifiers, and cascade pretraining.
//!
//! [`train_model`] trains one [`Model`] with cross-entropy, evaluates the
//! validation split after every epoch and keeps the weights of the epoch
//! with the lowest validation error (model selection on validation only; the
//! test split is evaluated once, by [`pretrain`], for the report).
//! [`pretrain`] does this for every stage of a [`Preset`] and writes a
//! checkpoint folder (see [`crate::checkpoint`]).
//!
//! Optimisers: AdamW (candle's) and SGD with momentum and weight decay
//! ([`SgdMomentum`], PyTorch's semantics), with constant, cosine or step
//! learning-rate schedules and optional linear warm-up. Augmentation: random
//! horizontal flips and random crops from a zero-padded image (zero is the
//! training mean, since images are normalised).
//!
//! Everything is driven by one seed: model initialisation, batch order and
//! augmentation of stage `t` use seeds derived from the run seed and `t`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::ops::AdamW;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CascadeManifest, StageRecord, MANIFEST_VERSION};
use crate::data::{Dataset, SplitConfig, Splits, SYNTHETIC_NOTICE};
use crate::error::{Error, Result};
use crate::flops;
use crate::models::Model;
use crate::nn;
use crate::presets::Preset;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// The optimiser and its hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// AdamW (decoupled weight decay).
    AdamW {
        /// Peak learning rate.
        lr: f64,
        /// Decoupled weight decay.
        weight_decay: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator epsilon.
        eps: f64,
    },
    /// SGD with momentum and L2 weight decay (PyTorch's `torch.optim.SGD`).
    Sgd {
        /// Peak learning rate.
        lr: f64,
        /// Momentum factor.
        momentum: f64,
        /// L2 penalty added to the gradient.
        weight_decay: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
}

impl OptimizerConfig {
    /// AdamW with the usual betas and epsilon.
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        OptimizerConfig::AdamW {
            lr,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// The peak learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::AdamW { lr, .. } | OptimizerConfig::Sgd { lr, .. } => *lr,
        }
    }

    /// Refuses non-positive rates and out-of-range factors.
    pub fn validate(&self) -> Result<()> {
        let lr = self.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::Config(format!(
                "learning rate must be positive, got {lr}"
            )));
        }
        let unit = |name: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::Config(format!("{name} must be in [0, 1), got {v}")))
            }
        };
        match *self {
            OptimizerConfig::AdamW {
                weight_decay,
                beta1,
                beta2,
                eps,
                ..
            } => {
                unit("beta1", beta1)?;
                unit("beta2", beta2)?;
                if !(weight_decay >= 0.0 && eps > 0.0) {
                    return Err(Error::Config(format!(
                        "adamw: weight_decay {weight_decay} must be >= 0 and eps {eps} > 0"
                    )));
                }
            }
            OptimizerConfig::Sgd {
                momentum,
                weight_decay,
                nesterov,
                ..
            } => {
                unit("momentum", momentum)?;
                if weight_decay < 0.0 || weight_decay.is_nan() {
                    return Err(Error::Config(format!(
                        "sgd: weight_decay must be >= 0, got {weight_decay}"
                    )));
                }
                if nesterov && momentum == 0.0 {
                    return Err(Error::Config("sgd: nesterov needs momentum > 0".into()));
                }
            }
        }
        Ok(())
    }
}

/// Learning-rate schedule over the whole run (applied per step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LrSchedule {
    /// The peak rate throughout.
    Constant,
    /// Cosine decay from the peak rate to 0.
    Cosine,
    /// Multiply by `gamma` at each fraction of training in `at` (e.g. He et
    /// al.'s 0.5 and 0.75 with gamma 0.1).
    Step {
        /// Fractions of the run, in (0, 1), increasing.
        at: Vec<f64>,
        /// Factor applied at each milestone.
        gamma: f64,
    },
}

/// Data augmentation of training batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Augment {
    /// Random horizontal flips (probability 1/2).
    pub hflip: bool,
    /// Random crops of the original size from the image zero-padded by this
    /// many pixels (0: off).
    pub crop_padding: usize,
}

/// How one classifier is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Passes over the training split.
    pub epochs: usize,
    /// Training batch size.
    pub batch_size: usize,
    /// Optimiser and peak learning rate.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// Linear warm-up from 0 over this many epochs (0: none).
    pub warmup_epochs: f64,
    /// Training augmentation.
    pub augment: Augment,
    /// Batch size for evaluation.
    pub eval_batch_size: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 128,
            optimizer: OptimizerConfig::adamw(1e-3, 0.0),
            schedule: LrSchedule::Cosine,
            warmup_epochs: 0.0,
            augment: Augment::default(),
            eval_batch_size: 500,
        }
    }
}

impl TrainConfig {
    /// Refuses zero sizes and bad hyperparameters.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || self.eval_batch_size == 0 {
            return Err(Error::Config(format!(
                "epochs ({}), batch_size ({}) and eval_batch_size ({}) must be positive",
                self.epochs, self.batch_size, self.eval_batch_size
            )));
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs.is_finite()) {
            return Err(Error::Config(format!(
                "warmup_epochs must be >= 0, got {}",
                self.warmup_epochs
            )));
        }
        if let LrSchedule::Step { at, gamma } = &self.schedule {
            let ok = at.iter().all(|f| *f > 0.0 && *f < 1.0) && at.windows(2).all(|w| w[0] < w[1]);
            if !ok || gamma.is_nan() || *gamma <= 0.0 {
                return Err(Error::Config(format!(
                    "step schedule: milestones {at:?} must be increasing fractions in (0, 1), gamma {gamma} > 0"
                )));
            }
        }
        self.optimizer.validate()
    }

    /// The learning rate at `step` of `total` steps with `per_epoch` steps
    /// per epoch.
    pub fn lr_at(&self, step: usize, total: usize, per_epoch: usize) -> f64 {
        let base = self.optimizer.lr();
        let frac = step as f64 / total.max(1) as f64;
        let mut lr = match &self.schedule {
            LrSchedule::Constant => base,
            LrSchedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos()),
            LrSchedule::Step { at, gamma } => {
                base * gamma.powi(at.iter().filter(|&&m| frac >= m).count() as i32)
            }
        };
        let warm = self.warmup_epochs * per_epoch as f64;
        if warm > 0.0 && (step as f64) < warm {
            lr *= (step as f64 + 1.0) / warm;
        }
        lr
    }
}

// ---------------------------------------------------------------------------
// SGD with momentum
// ---------------------------------------------------------------------------

/// Hyperparameters of [`SgdMomentum`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamsSgd {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0: plain SGD).
    pub momentum: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

/// SGD with momentum and weight decay, PyTorch's update rule:
/// `g = grad + wd * p; buf = mu * buf + g` (`buf = g` on the first step);
/// `d = g + mu * buf` (Nesterov) or `buf`; `p -= lr * d`.
/// Variables without a gradient (batch-norm running statistics) are skipped.
pub struct SgdMomentum {
    vars: Vec<(Var, Option<Var>)>,
    params: ParamsSgd,
}

impl Optimizer for SgdMomentum {
    type Config = ParamsSgd;

    fn new(vars: Vec<Var>, params: ParamsSgd) -> candle_core::Result<Self> {
        let vars = vars
            .into_iter()
            .filter(|v| v.dtype().is_float())
            .map(|v| (v, None))
            .collect();
        Ok(Self { vars, params })
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> candle_core::Result<()> {
        let ParamsSgd {
            lr,
            momentum,
            weight_decay,
            nesterov,
        } = self.params;
        for (var, buf) in &mut self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let mut g = g.detach();
            if weight_decay != 0.0 {
                g = (g + (var.as_tensor().detach() * weight_decay)?)?;
            }
            if momentum != 0.0 {
                let b = match buf {
                    Some(b) => {
                        let next = ((b.as_tensor() * momentum)? + &g)?;
                        b.set(&next)?;
                        b.as_tensor().clone()
                    }
                    None => {
                        let b = Var::from_tensor(&g)?;
                        let t = b.as_tensor().clone();
                        *buf = Some(b);
                        t
                    }
                };
                g = if nesterov {
                    (g + (b * momentum)?)?
                } else {
                    b.detach()
                };
            }
            var.set(&(var.as_tensor().detach() - (g * lr)?)?)?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }
}

/// An optimiser built from an [`OptimizerConfig`].
pub enum AnyOptimizer {
    /// AdamW (the fused in-place update of [`crate::ops::AdamW`]).
    AdamW(AdamW),
    /// SGD with momentum.
    Sgd(SgdMomentum),
}

impl AnyOptimizer {
    /// Builds the optimiser over `vars`.
    pub fn new(cfg: &OptimizerConfig, vars: Vec<Var>) -> Result<Self> {
        cfg.validate()?;
        Ok(match *cfg {
            OptimizerConfig::AdamW {
                lr,
                weight_decay,
                beta1,
                beta2,
                eps,
            } => AnyOptimizer::AdamW(AdamW::new(
                vars,
                ParamsAdamW {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                },
            )?),
            OptimizerConfig::Sgd {
                lr,
                momentum,
                weight_decay,
                nesterov,
            } => AnyOptimizer::Sgd(SgdMomentum::new(
                vars,
                ParamsSgd {
                    lr,
                    momentum,
                    weight_decay,
                    nesterov,
                },
            )?),
        })
    }

    /// Backward pass on `loss` and one update.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        match self {
            AnyOptimizer::AdamW(o) => o.backward_step(loss)?,
            AnyOptimizer::Sgd(o) => o.backward_step(loss)?,
        }
        Ok(())
    }

    /// Sets the learning rate for the next steps.
    pub fn set_learning_rate(&mut self, lr: f64) {
        match self {
            AnyOptimizer::AdamW(o) => o.set_learning_rate(lr),
            AnyOptimizer::Sgd(o) => o.set_learning_rate(lr),
        }
    }
}

// ---------------------------------------------------------------------------
// Batches and evaluation
// ---------------------------------------------------------------------------

/// Derives a sub-seed from a run seed and a stream id (the env crate's
/// SplitMix64 derivation, re-exported so the toolkit has one).
pub use cascade_env::rng::derive_seed;

/// Copies one image into `out` with a random crop offset and flip.
fn augment_into(
    src: &[f32],
    shape: [usize; 3],
    aug: Augment,
    rng: &mut StdRng,
    out: &mut Vec<f32>,
) {
    let [c, h, w] = shape;
    let p = aug.crop_padding as i64;
    let (dy, dx) = if p > 0 {
        (
            rng.random_range(-p..=p) as isize,
            rng.random_range(-p..=p) as isize,
        )
    } else {
        (0, 0)
    };
    let flip = aug.hflip && rng.random_bool(0.5);
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        for y in 0..h as isize {
            let sy = y + dy;
            for x in 0..w as isize {
                let xo = if flip { w as isize - 1 - x } else { x };
                let sx = xo + dx;
                let v = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                    plane[sy as usize * w + sx as usize]
                } else {
                    0.0
                };
                out.push(v);
            }
        }
    }
}

/// A batch of the images at `idx` (augmented when `aug` asks for it).
///
/// # Shapes
/// `-> (images: [n, c, h, w] f32, labels: [n] u32)`
pub fn make_batch(
    ds: &Dataset,
    idx: &[usize],
    aug: Augment,
    rng: &mut StdRng,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let [c, h, w] = ds.shape;
    let mut images = Vec::with_capacity(idx.len() * c * h * w);
    let mut labels = Vec::with_capacity(idx.len());
    let plain = !aug.hflip && aug.crop_padding == 0;
    for &i in idx {
        if plain {
            images.extend_from_slice(ds.image(i));
        } else {
            augment_into(ds.image(i), ds.shape, aug, rng, &mut images);
        }
        labels.push(ds.labels[i]);
    }
    let x = Tensor::from_vec(images, (idx.len(), c, h, w), device)?;
    let y = Tensor::from_vec(labels, idx.len(), device)?;
    Ok((x, y))
}

/// Error rate and mean cross-entropy of a model on a data set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Share of misclassified images.
    pub error: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Images evaluated.
    pub n: usize,
}

/// Evaluates `model` in eval mode (running batch-norm statistics) on `ds`.
pub fn evaluate(model: &Model, ds: &Dataset, batch_size: usize) -> Result<EvalResult> {
    let [c, h, w] = ds.shape;
    let d = c * h * w;
    let n = ds.len();
    if n == 0 {
        return Err(Error::Config(format!(
            "cannot evaluate on the empty set '{}'",
            ds.name
        )));
    }
    let (mut wrong, mut loss) = (0usize, 0f64);
    let mut start = 0;
    while start < n {
        let end = (start + batch_size.max(1)).min(n);
        let b = end - start;
        let x = Tensor::from_slice(&ds.images[start * d..end * d], (b, c, h, w), model.device())?;
        let y = Tensor::from_slice(&ds.labels[start..end], b, model.device())?;
        let out = model.forward_t(&x, false)?;
        let l = candle_nn::loss::cross_entropy(&out.logits, &y)?.to_scalar::<f32>()?;
        loss += l as f64 * b as f64;
        let right = out
            .logits
            .argmax(1)?
            .eq(&y)?
            .to_dtype(DType::F32)?
            .sum_all()?;
        wrong += b - right.to_scalar::<f32>()? as usize;
        start = end;
    }
    Ok(EvalResult {
        error: wrong as f64 / n as f64,
        loss: loss / n as f64,
        n,
    })
}

// ---------------------------------------------------------------------------
// Training one model
// ---------------------------------------------------------------------------

/// What happened in one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Stage number (1-based) within the cascade, 0 when trained alone.
    pub stage: usize,
    /// Epoch number, 1-based.
    pub epoch: usize,
    /// Mean training cross-entropy over the epoch.
    pub train_loss: f64,
    /// Training error over the epoch (train mode, augmented).
    pub train_error: f64,
    /// Validation error at the end of the epoch.
    pub val_error: f64,
    /// Validation cross-entropy.
    pub val_loss: f64,
    /// Learning rate at the last step of the epoch.
    pub lr: f64,
    /// Wall time of the epoch including validation, seconds.
    pub seconds: f64,
    /// Training throughput, images per second.
    pub train_img_per_s: f64,
}

/// The outcome of [`train_model`]; the model holds the weights of
/// `best_epoch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// The epoch (1-based) whose weights were kept.
    pub best_epoch: usize,
    /// Its validation error.
    pub best_val_error: f64,
    /// Its validation cross-entropy.
    pub best_val_loss: f64,
    /// Every epoch.
    pub epochs: Vec<EpochRecord>,
    /// Total wall time, seconds.
    pub seconds: f64,
}

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Nothing is printed.
    #[default]
    Quiet,
    /// A progress bar on a terminal (epoch, loss, throughput) and one line
    /// per epoch on stderr.
    Bar,
}

fn progress_bar(mode: Progress, len: u64, prefix: String) -> ProgressBar {
    match mode {
        Progress::Quiet => ProgressBar::hidden(),
        Progress::Bar => {
            let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} steps {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            pb.set_style(style);
            pb.set_prefix(prefix);
            pb
        }
    }
}

fn say(pb: &ProgressBar, mode: Progress, line: String) {
    match mode {
        Progress::Quiet => {}
        Progress::Bar if pb.is_hidden() => eprintln!("{line}"),
        Progress::Bar => pb.println(line),
    }
}

/// Trains `model` on `train` with cross-entropy, validating on `val` after
/// every epoch, and leaves it holding the weights of the epoch with the
/// lowest validation error. `seed` drives batch order and augmentation;
/// `stage` only labels the records.
pub fn train_model(
    model: &Model,
    train: &Dataset,
    val: &Dataset,
    cfg: &TrainConfig,
    seed: u64,
    stage: usize,
    progress: Progress,
) -> Result<TrainReport> {
    cfg.validate()?;
    if train.shape != model.classifier().input_shape() || val.shape != train.shape {
        return Err(Error::Config(format!(
            "{}: built for input {:?}, data '{}' has {:?}",
            model.config(),
            model.classifier().input_shape(),
            train.name,
            train.shape
        )));
    }
    if train.num_classes() != model.classifier().num_classes() {
        return Err(Error::Config(format!(
            "{}: built for {} classes, data '{}' has {}",
            model.config(),
            model.classifier().num_classes(),
            train.name,
            train.num_classes()
        )));
    }
    let n = train.len();
    // A final batch of one image breaks batch norm; drop it.
    let per_epoch = n / cfg.batch_size + usize::from(n % cfg.batch_size > 1);
    if per_epoch == 0 {
        return Err(Error::Config(format!(
            "training set '{}' has {n} images, too few for a batch",
            train.name
        )));
    }
    let total = per_epoch * cfg.epochs;
    let mut opt = AnyOptimizer::new(&cfg.optimizer, model.trainable_vars()?)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let pb = progress_bar(
        progress,
        total as u64,
        format!("stage {stage} {}", model.config()),
    );
    let started = Instant::now();
    let mut best: Option<(usize, EvalResult, HashMap<String, Tensor>)> = None;
    let mut records = Vec::with_capacity(cfg.epochs);
    let mut order: Vec<usize> = (0..n).collect();
    let mut step = 0usize;
    for epoch in 1..=cfg.epochs {
        let t0 = Instant::now();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut wrong, mut seen) = (0f64, 0usize, 0usize);
        let mut lr = cfg.lr_at(step, total, per_epoch);
        for b in 0..per_epoch {
            let idx = &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(n)];
            let (x, y) = make_batch(train, idx, cfg.augment, &mut rng, model.device())?;
            lr = cfg.lr_at(step, total, per_epoch);
            opt.set_learning_rate(lr);
            let out = model.forward_t(&x, true)?;
            let loss = candle_nn::loss::cross_entropy(&out.logits, &y)?;
            opt.backward_step(&loss)?;
            let l = loss.to_scalar::<f32>()? as f64;
            if !l.is_finite() {
                return Err(Error::Training(format!(
                    "stage {stage} {}: loss is {l} at epoch {epoch}, step {b} (lr {lr:.3e})",
                    model.config()
                )));
            }
            let right = out
                .logits
                .argmax(1)?
                .eq(&y)?
                .to_dtype(DType::F32)?
                .sum_all()?;
            wrong += idx.len() - right.to_scalar::<f32>()? as usize;
            loss_sum += l * idx.len() as f64;
            seen += idx.len();
            step += 1;
            pb.inc(1);
            if b % 10 == 0 || b + 1 == per_epoch {
                let ips = seen as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                pb.set_message(format!(
                    "epoch {epoch}/{} loss {:.4} {:.0} img/s",
                    cfg.epochs,
                    loss_sum / seen as f64,
                    ips
                ));
            }
        }
        let train_secs = t0.elapsed().as_secs_f64();
        let v = evaluate(model, val, cfg.eval_batch_size)?;
        let rec = EpochRecord {
            stage,
            epoch,
            train_loss: loss_sum / seen as f64,
            train_error: wrong as f64 / seen as f64,
            val_error: v.error,
            val_loss: v.loss,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
            train_img_per_s: seen as f64 / train_secs.max(1e-9),
        };
        let improved = best.as_ref().is_none_or(|(_, b, _)| v.error < b.error);
        say(
            &pb,
            progress,
            format!(
                "stage {stage} {} epoch {epoch}/{}: train loss {:.4} err {:.2}% | val loss {:.4} err {:.2}%{} | {:.0} img/s, {:.1} s",
                model.config(),
                cfg.epochs,
                rec.train_loss,
                100.0 * rec.train_error,
                v.loss,
                100.0 * v.error,
                if improved { " (best)" } else { "" },
                rec.train_img_per_s,
                rec.seconds
            ),
        );
        if improved {
            best = Some((epoch, v, nn::snapshot(model.varmap())?));
        }
        records.push(rec);
    }
    pb.finish_and_clear();
    let (best_epoch, best_eval, snap) =
        best.ok_or_else(|| Error::Training("no epoch was run".into()))?;
    nn::restore_snapshot(model.varmap(), &snap)?;
    Ok(TrainReport {
        best_epoch,
        best_val_error: best_eval.error,
        best_val_loss: best_eval.loss,
        epochs: records,
        seconds: started.elapsed().as_secs_f64(),
    })
}

// ---------------------------------------------------------------------------
// Pretraining a cascade
// ---------------------------------------------------------------------------

/// Options of [`pretrain`].
#[derive(Debug, Clone)]
pub struct PretrainOptions {
    /// Output folder (created; files in it are replaced atomically).
    pub out_dir: PathBuf,
    /// The run seed: split, initialisation, batch order, augmentation.
    pub seed: u64,
    /// Override every stage's epoch count.
    pub epochs: Option<usize>,
    /// Data folder (default: discovery).
    pub data_dir: Option<PathBuf>,
    /// Device to train on.
    pub device: Device,
    /// Split settings beyond the preset's validation fraction and the seed
    /// (caps such as `max_train` for quick runs, synthetic sizes).
    pub split: SplitConfig,
    /// Progress output.
    pub progress: Progress,
}

impl PretrainOptions {
    /// Defaults: seed 0, preset epochs, discovered data, CPU, quiet.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self {
            out_dir: out_dir.into(),
            seed: 0,
            epochs: None,
            data_dir: None,
            device: Device::Cpu,
            split: SplitConfig::default(),
            progress: Progress::Quiet,
        }
    }
}

/// What [`pretrain`] produced.
#[derive(Debug, Clone)]
pub struct PretrainSummary {
    /// The manifest written as `cascade.json`.
    pub manifest: CascadeManifest,
    /// Per-stage training reports.
    pub reports: Vec<TrainReport>,
    /// The static table (Markdown), as written to `static.md`.
    pub static_markdown: String,
    /// Total wall time, seconds.
    pub seconds: f64,
}

/// Trains every stage of `preset` and writes `out_dir/stage{t}.safetensors`
/// (t = 1..K), `cascade.json`, `train_log.csv`, `static.md` and
/// `static.csv`, each atomically; `cascade.json` is written last, so a
/// folder with one is complete.
pub fn pretrain(preset: &Preset, opts: &PretrainOptions) -> Result<PretrainSummary> {
    let started = Instant::now();
    let preset = match opts.epochs {
        Some(e) => preset.clone().with_epochs(e),
        None => preset.clone(),
    };
    preset.validate()?;
    let split = SplitConfig {
        val_fraction: preset.val_fraction,
        seed: opts.seed,
        ..opts.split
    };
    let splits = Splits::load(&preset.dataset, opts.data_dir.as_deref(), &split)?;
    let synthetic = splits.is_synthetic();
    if synthetic && opts.progress != Progress::Quiet {
        eprintln!("{SYNTHETIC_NOTICE}");
    }
    let shape = splits.train.shape;
    let classes = splits.train.num_classes();
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))?;

    let mut stages = Vec::with_capacity(preset.stages.len());
    let mut reports = Vec::with_capacity(preset.stages.len());
    let mut log: Vec<EpochRecord> = Vec::new();
    for (i, sp) in preset.stages.iter().enumerate() {
        let t = i + 1;
        let fl = flops::count(&sp.model, shape, classes)?;
        let model = Model::new(
            &sp.model,
            shape,
            classes,
            derive_seed(opts.seed, 2 * t as u64),
            &opts.device,
        )?;
        let report = train_model(
            &model,
            &splits.train,
            &splits.val,
            &sp.train,
            derive_seed(opts.seed, 2 * t as u64 + 1),
            t,
            opts.progress,
        )?;
        let test = evaluate(&model, &splits.test, sp.train.eval_batch_size)?;
        let file = checkpoint::stage_file_name(t);
        checkpoint::save_model(&model, &opts.out_dir.join(&file))?;
        if opts.progress != Progress::Quiet {
            eprintln!(
                "stage {t} {}: best epoch {}, val error {:.2}%, test error {:.2}%, {:.1} s",
                sp.model,
                report.best_epoch,
                100.0 * report.best_val_error,
                100.0 * test.error,
                report.seconds
            );
        }
        log.extend(report.epochs.iter().cloned());
        stages.push(StageRecord {
            stage: t,
            name: sp.model.name(),
            file,
            model: sp.model.clone(),
            train: sp.train.clone(),
            macs: fl.macs,
            params: fl.params,
            feature_dim: fl.feature_dim,
            best_epoch: report.best_epoch,
            val_error: report.best_val_error,
            val_loss: report.best_val_loss,
            test_error: test.error,
            test_loss: test.loss,
            train_seconds: report.seconds,
            temperature: 1.0,
        });
        reports.push(report);
    }

    let manifest = CascadeManifest {
        format_version: MANIFEST_VERSION,
        preset: preset.name.clone(),
        dataset: preset.dataset.clone(),
        synthetic,
        notice: synthetic.then(|| SYNTHETIC_NOTICE.to_string()),
        data_source: splits.train.source.to_string(),
        input_shape: shape,
        num_classes: classes,
        class_names: splits.train.class_names.clone(),
        normalization: splits.normalization.clone(),
        seed: opts.seed,
        split: checkpoint::SplitRecord {
            val_fraction: split.val_fraction,
            n_train: splits.train.len(),
            n_val: splits.val.len(),
            n_test: splits.test.len(),
        },
        device: crate::device::device_name(&opts.device),
        stages,
        calibration: None,
        roles: None,
    };
    write_train_log(&opts.out_dir.join("train_log.csv"), &log, synthetic)?;
    let (md, csv) = (
        checkpoint::static_markdown(&manifest),
        checkpoint::static_csv(&manifest),
    );
    write_text(&opts.out_dir.join("static.md"), &md)?;
    write_text(&opts.out_dir.join("static.csv"), &csv)?;
    checkpoint::write_manifest(&opts.out_dir, &manifest)?;
    Ok(PretrainSummary {
        manifest,
        reports,
        static_markdown: md,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|e| Error::io(path, e))
}

fn write_train_log(path: &Path, log: &[EpochRecord], synthetic: bool) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "stage",
        "epoch",
        "train_loss",
        "train_error",
        "val_loss",
        "val_error",
        "lr",
        "seconds",
        "train_img_per_s",
        "synthetic",
    ])
    .map_err(|e| Error::Csv {
        path: path.into(),
        source: e,
    })?;
    for r in log {
        w.write_record([
            r.stage.to_string(),
            r.epoch.to_string(),
            format!("{:.6}", r.train_loss),
            format!("{:.6}", r.train_error),
            format!("{:.6}", r.val_loss),
            format!("{:.6}", r.val_error),
            format!("{:.6e}", r.lr),
            format!("{:.3}", r.seconds),
            format!("{:.1}", r.train_img_per_s),
            synthetic.to_string(),
        ])
        .map_err(|e| Error::Csv {
            path: path.into(),
            source: e,
        })?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    crate::fsutil::write_atomic(path, &bytes).map_err(|e| Error::io(path, e))
}

// ---------------------------------------------------------------------------
// Benchmark
// ---------------------------------------------------------------------------

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
    let rec = report
        .epochs
        .first()
        .ok_or_else(|| Error::Training("no epoch was run".into()))?;
    let n = train.len();
    let b = recipe.batch_size;
    let steps = n / b + usize::from(n % b > 1);
    let seen = (steps * b).min(n);
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
        recipe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(model: &Model) -> Vec<Vec<f32>> {
        model
            .named_vars()
            .unwrap()
            .into_iter()
            .map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn sgd_momentum_matches_pytorch() {
        // torch: p = torch.tensor([1.0, -2.0], requires_grad=True)
        // opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
        // for _ in range(3): opt.zero_grad(); (p**2).sum().backward(); opt.step()
        // p -> tensor([ 0.0582, -0.1164])
        let p = Var::new(&[1f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = SgdMomentum::new(
            vec![p.clone()],
            ParamsSgd {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.01,
                nesterov: false,
            },
        )
        .unwrap();
        for _ in 0..3 {
            let loss = p.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.backward_step(&loss).unwrap();
        }
        let v: Vec<f32> = p.as_tensor().to_vec1().unwrap();
        // Hand recursion: g = 2.01 p; b1 = g1; b2 = .9 b1 + g2; ...
        let mut pe = [1f64, -2.0];
        let mut b = [0f64; 2];
        for s in 0..3 {
            for k in 0..2 {
                let g = 2.0 * pe[k] + 0.01 * pe[k];
                b[k] = if s == 0 { g } else { 0.9 * b[k] + g };
                pe[k] -= 0.1 * b[k];
            }
        }
        assert!(
            (v[0] as f64 - pe[0]).abs() < 1e-6 && (v[1] as f64 - pe[1]).abs() < 1e-6,
            "{v:?} vs {pe:?}"
        );
        assert!((pe[0] - 0.0581942).abs() < 1e-6, "{pe:?}");
    }

    #[test]
    fn schedules() {
        let mut cfg = TrainConfig {
            optimizer: OptimizerConfig::adamw(0.1, 0.0),
            schedule: LrSchedule::Step {
                at: vec![0.5, 0.75],
                gamma: 0.1,
            },
            ..Default::default()
        };
        assert_eq!(cfg.lr_at(0, 100, 10), 0.1);
        assert!((cfg.lr_at(50, 100, 10) - 0.01).abs() < 1e-12);
        assert!((cfg.lr_at(80, 100, 10) - 0.001).abs() < 1e-12);
        cfg.schedule = LrSchedule::Cosine;
        assert!((cfg.lr_at(50, 100, 10) - 0.05).abs() < 1e-12);
        cfg.warmup_epochs = 1.0;
        assert!(
            (cfg.lr_at(4, 100, 10) - 0.1 * 0.5 * (1.0 + (0.04 * std::f64::consts::PI).cos()) * 0.5)
                .abs()
                < 1e-12
        );
        cfg.schedule = LrSchedule::Step {
            at: vec![0.75, 0.5],
            gamma: 0.1,
        };
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn augmentation_flips_and_shifts() {
        let src: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let mut rng = StdRng::seed_from_u64(0);
        let mut seen_flip = false;
        for _ in 0..20 {
            let mut out = vec![];
            augment_into(
                &src,
                [1, 3, 3],
                Augment {
                    hflip: true,
                    crop_padding: 0,
                },
                &mut rng,
                &mut out,
            );
            assert!(
                out == src || out == vec![2., 1., 0., 5., 4., 3., 8., 7., 6.],
                "{out:?}"
            );
            seen_flip |= out != src;
        }
        assert!(seen_flip);
        let mut out = vec![];
        let mut rng = StdRng::seed_from_u64(1);
        augment_into(
            &src,
            [1, 3, 3],
            Augment {
                hflip: false,
                crop_padding: 1,
            },
            &mut rng,
            &mut out,
        );
        // Every kept pixel is a pixel of the source or zero padding.
        assert!(out.iter().all(|v| src.contains(v)));
    }

    #[test]
    fn training_is_seeded_and_keeps_the_best_epoch() {
        let cfg = SplitConfig {
            synthetic: crate::data::SyntheticConfig {
                n_train: 600,
                n_test: 100,
                ..Default::default()
            },
            ..Default::default()
        };
        let s = Splits::load("synthetic", None, &cfg).unwrap();
        let tc = TrainConfig {
            epochs: 3,
            batch_size: 32,
            optimizer: OptimizerConfig::adamw(3e-3, 0.0),
            ..Default::default()
        };
        let run = || {
            let m = Model::new(
                &"cnn-4-gap".parse().unwrap(),
                s.train.shape,
                4,
                1,
                &Device::Cpu,
            )
            .unwrap();
            let r = train_model(&m, &s.train, &s.val, &tc, 2, 1, Progress::Quiet).unwrap();
            (m, r)
        };
        let (m1, r1) = run();
        let (m2, r2) = run();
        assert_eq!(params(&m1), params(&m2), "same seed, same weights");
        assert_eq!(
            r1,
            TrainReport {
                seconds: r1.seconds,
                epochs: r1.epochs.clone(),
                ..r2.clone()
            }
        );
        let best = r1
            .epochs
            .iter()
            .map(|e| e.val_error)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(r1.best_val_error, best);
        assert_eq!(r1.epochs[r1.best_epoch - 1].val_error, best);
        // The kept weights are those of the best epoch.
        let again = evaluate(&m1, &s.val, 100).unwrap();
        assert_eq!(again.error, best);
    }

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
        assert!(r.train_loss.is_finite() && (0.0..=1.0).contains(&r.val_error));
        let bad = TrainConfig {
            batch_size: 0,
            ..recipe
        };
        assert!(bench_epoch(&model, &s.train, &s.val, &bad, 3, &Device::Cpu).is_err());
    }
}
