//! The training loop: [`train_model`] trains one [`Model`] with
//! cross-entropy, validates after every epoch and keeps the weights of the
//! best epoch; [`TrainConfig`] says how, [`TrainReport`] what happened.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::batch::{make_batch, Augment};
use super::eval::{count_wrong, evaluate, EvalResult};
use super::optim::{AnyOptimizer, LrSchedule, OptimizerConfig};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::nn;

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
    /// Optimiser steps in an epoch of `n` images: full batches and the
    /// short last one, unless it holds one image (a batch of one breaks
    /// batch norm, so it is dropped).
    pub fn steps_per_epoch(&self, n: usize) -> usize {
        n / self.batch_size + usize::from(n % self.batch_size > 1)
    }

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
        self.schedule.validate()?;
        self.optimizer.validate()
    }

    /// The learning rate at `step` of `total` steps with `per_epoch` steps
    /// per epoch.
    pub fn lr_at(&self, step: usize, total: usize, per_epoch: usize) -> f64 {
        let warm = self.warmup_epochs * per_epoch as f64;
        self.schedule.lr_at(self.optimizer.lr(), step, total, warm)
    }
}

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
    let per_epoch = cfg.steps_per_epoch(n);
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
            wrong += count_wrong(&out.logits, &y)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{SplitConfig, Splits};
    use candle_core::Device;

    fn params(model: &Model) -> Vec<Vec<f32>> {
        model
            .named_vars()
            .unwrap()
            .into_iter()
            .map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
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
}
