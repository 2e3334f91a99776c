//! `reinforce-joint`: the stopping policy and the classifiers learn
//! together by the slides' REINFORCE estimator
//! ([`ReinforceAgent::train_joint`]).
//!
//! Starting from a pretrained [`Cascade`] (and, in the studies, from the
//! policy trained on the frozen classifiers at the same alpha or budget),
//! every minibatch of training images plays one sampled trajectory each,
//! lazily: stage t runs (with gradients) only on the images whose
//! trajectory reached it, the policy decides from its features and
//! probabilities, and a stopping image gets its prediction and reward with
//! the env's semantics ([`cascade_env::RewardModel`]). The loss is the
//! REINFORCE surrogate of `training.rs`:
//!
//! ```text
//! -(1/B) sum_b [ sum_{t<k} log(1 - pi_t(s_t)) + log pi_k(s_k) + log C_k(yhat|x) ] (R_b - b)
//! ```
//!
//! **The prediction is drawn, `yhat ~ C_k(.|x)`, in training**
//! ([`JointConfig::sample_prediction`], on by default): only then is the
//! `log C_k(yhat|x) (R - b)` term a score-function gradient of the expected
//! reward (the test `sampled_reinforce_gradient_matches_the_exact_gradient`
//! checks it against the exact gradient). With the argmax prediction the
//! term is reward-weighted self-training on the images already right and
//! "unlikelihood" on the wrong ones, not a gradient of the objective.
//! Evaluation and validation use the reward model's own prediction
//! (argmax by default).
//!
//! Classifier gradients flow through `log C_k(yhat|x)` of the stage each
//! image stopped at, and through the features and probabilities `s_t, p_t`
//! the policy read at every stage the image reached (unless
//! [`JointConfig::detach_inputs`]). One backward pass, then one step of
//! each optimiser: the policy's (AdamW, `ReinforceConfig::lr`) and the
//! classifiers' (AdamW, [`JointConfig::classifier_lr`]). The stage
//! probabilities use the cascade's fitted temperatures, as the env does.
//!
//! Where it departs from the slides' estimator (all visible in the
//! config): the baseline b is the learned per-stage value `V_t(x_t)` by
//! default ([`crate::Baseline`]; a running mean is the other choice), the
//! policy term carries an entropy bonus annealed to 0 over the epochs
//! (`ReinforceConfig::entropy_coef`, 0 gives the plain estimator), and
//! the studies warm-start it from the frozen agent. The gradient estimate
//! of the objective itself is the slides'.
//!
//! The training images are the policy's (D_P): the classifiers are
//! fine-tuned on the same images whose outputs train the policy. See
//! `expected.rs` for the cross-fitted alternative.
//!
//! **Batch norm stays in eval mode** during joint fine-tuning: the
//! classifiers normalise with their pretrained running statistics, which
//! are never updated, while the affine parameters and everything else
//! train. The lazy minibatches that reach late stages can be a handful of
//! images, whose batch statistics would be noise, and eval mode keeps
//! training and inference computing the same function.
//!
//! After every epoch the current classifiers and policy are evaluated on
//! the validation split through the env, lazily, with a
//! [`CandleBackend`]; the best epoch's classifiers and policy are kept
//! (selection, patience and budget as in the frozen mode; epoch 0 is the
//! starting point, so a warm start is never made worse on validation).
//! The fine-tuned classifiers become part of the agent: it is saved with
//! them, and must be evaluated on observations from them
//! ([`ReinforceAgent::cascade`]).
//!
//! The policy starts from the agent's current policy when it was trained
//! before (a warm start), or fresh otherwise, with its feature
//! standardisation fitted on `norm_samples` training images.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::Optimizer;
use cascade_env::{EnvRng, StageBackend};
use cascade_rl::backend::CandleBackend;
use cascade_rl::checkpoint::Cascade;
use cascade_rl::data::Dataset;
use cascade_rl::models::Model;
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, TrainOptions, TrainSummary};
use crate::error::{Error, Result};
use crate::policy::FeatureNorm;
use crate::reinforce::{shuffle, EpochSums, ReinforceAgent, ReinforceMode, Seeds};
use crate::training::{
    adamw, classifier_optimizer, epoch_bar, finite_scalar, rollout, show_epoch, surrogate,
    BaselineState, MetricLog, Selection, StageOut, StageSource, ValScore,
};

/// Settings of joint training beyond the policy's ([`crate::ReinforceConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JointConfig {
    /// Classifier learning rate (AdamW), separate from the policy's.
    pub classifier_lr: f64,
    /// Classifier weight decay (AdamW, decoupled).
    pub classifier_weight_decay: f64,
    /// Images per forward pass when evaluating on validation.
    pub eval_batch_size: usize,
    /// Training images used to fit the policy's feature standardisation
    /// (when the policy starts fresh).
    pub norm_samples: usize,
    /// Draw the training prediction `yhat ~ C_k(.|x)` (the slides'
    /// estimator: only then is `log C_k(yhat|x) (R - b)` a score-function
    /// gradient of the expected reward). Off: the reward model's own
    /// prediction (argmax by default), which turns the classifier term into
    /// reward-weighted self-training. Evaluation always uses the reward
    /// model's prediction.
    pub sample_prediction: bool,
    /// Detach the policy's inputs `(s_t, p_t)` from the classifiers, so
    /// classifier gradients come from `log C_k(yhat|x)` alone.
    pub detach_inputs: bool,
    /// On a warm start with the value baseline, first fit the (fresh)
    /// value heads for one pass over the training images, nothing else
    /// moving: an untrained baseline's errors would otherwise push the
    /// warm policy around in the first epoch.
    pub value_warmup: bool,
}

impl Default for JointConfig {
    fn default() -> Self {
        JointConfig {
            classifier_lr: 1e-4,
            classifier_weight_decay: 0.0,
            eval_batch_size: 512,
            norm_samples: 4096,
            sample_prediction: true,
            detach_inputs: false,
            value_warmup: false,
        }
    }
}

impl JointConfig {
    /// Refuses bad rates and zero sizes.
    pub fn validate(&self) -> Result<()> {
        if !(self.classifier_lr.is_finite() && self.classifier_lr >= 0.0) {
            return Err(Error::Config(format!(
                "joint: classifier_lr must be >= 0, got {}",
                self.classifier_lr
            )));
        }
        if !(self.classifier_weight_decay.is_finite() && self.classifier_weight_decay >= 0.0) {
            return Err(Error::Config(format!(
                "joint: classifier_weight_decay must be >= 0, got {}",
                self.classifier_weight_decay
            )));
        }
        if self.eval_batch_size == 0 || self.norm_samples == 0 {
            return Err(Error::Config(
                "joint: eval_batch_size and norm_samples must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Stage outputs of a minibatch computed by the classifiers, with
/// gradients, for the rows still in play.
struct ModelSource<'a> {
    models: Vec<&'a Model>,
    temperatures: Vec<f64>,
    images: Tensor,
    device: Device,
    detach_inputs: bool,
}

impl StageSource for ModelSource<'_> {
    fn stage(&mut self, stage: usize, rows: &[usize]) -> Result<StageOut> {
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::from_vec(idx, rows.len(), &self.device)?;
        let x = self.images.index_select(&idx, 0)?;
        // Eval-mode batch norm (see the module docs).
        let out = self.models[stage].forward_t(&x, false)?;
        // C_t(.|x) with the stage's fitted temperature, as the env sees it.
        let logits = out.logits.affine(1.0 / self.temperatures[stage], 0.0)?;
        let logp = candle_nn::ops::log_softmax(&logits, 1)?;
        let probs = logp.exp()?;
        let probs_cpu = probs
            .detach()
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (features, probs) = if self.detach_inputs {
            (out.features.detach(), probs.detach())
        } else {
            (out.features, probs)
        };
        Ok(StageOut {
            features,
            probs,
            probs_cpu,
            class_logp: Some(logp),
        })
    }
}

/// The images at `idx` as one tensor.
///
/// # Shapes
/// `-> [idx.len(), c, h, w]`
fn images(ds: &Dataset, idx: &[usize], device: &Device) -> Result<Tensor> {
    let [c, h, w] = ds.shape;
    let mut x = Vec::with_capacity(idx.len() * c * h * w);
    for &i in idx {
        x.extend_from_slice(ds.image(i));
    }
    Ok(Tensor::from_vec(x, (idx.len(), c, h, w), device)?)
}

/// The policy's and every stage's variables at one point of joint
/// training (the best epoch so far).
pub(crate) struct JointSnapshot {
    policy: std::collections::HashMap<String, Tensor>,
    stages: Vec<std::collections::HashMap<String, Tensor>>,
}

impl ReinforceAgent {
    /// Copies the policy's and `cascade`'s variables.
    pub(crate) fn snapshot_joint(&self, cascade: &Cascade) -> Result<JointSnapshot> {
        Ok(JointSnapshot {
            policy: cascade_rl::nn::snapshot(self.policy.varmap())?,
            stages: cascade
                .stages()
                .iter()
                .map(|s| Ok(cascade_rl::nn::snapshot(s.model.varmap())?))
                .collect::<Result<_>>()?,
        })
    }

    /// Writes `snap` back into the policy and `cascade`.
    pub(crate) fn restore_joint(&self, cascade: &Cascade, snap: &JointSnapshot) -> Result<()> {
        cascade_rl::nn::restore_snapshot(self.policy.varmap(), &snap.policy)?;
        for (s, w) in cascade.stages().iter().zip(&snap.stages) {
            cascade_rl::nn::restore_snapshot(s.model.varmap(), w)?;
        }
        Ok(())
    }
}

impl ReinforceAgent {
    /// Trains the policy and the classifiers of `cascade` together on
    /// `train`, selecting on `val` (both normalised with the cascade's
    /// statistics, as [`cascade_rl::data::Splits`] gives them); see the
    /// module docs. The agent keeps the fine-tuned cascade.
    pub fn train_joint(
        &mut self,
        cascade: Cascade,
        train: &Dataset,
        val: &Dataset,
        joint: &JointConfig,
        opts: &TrainOptions,
    ) -> Result<TrainSummary> {
        // -- Settings -------------------------------------------------------
        let cfg = self.config.clone();
        cfg.validate()?;
        joint.validate()?;
        opts.validate()?;
        for ds in [train, val] {
            if ds.is_empty()
                || ds.shape != cascade.input_shape()
                || ds.num_classes() != cascade.num_classes()
            {
                return Err(Error::Config(format!(
                    "joint: data '{}' ({} images of {:?}, {} classes) does not fit the cascade ({:?}, {} classes)",
                    ds.name,
                    ds.len(),
                    ds.shape,
                    ds.num_classes(),
                    cascade.input_shape(),
                    cascade.num_classes()
                )));
            }
        }
        let probe = CandleBackend::new(&cascade, val, joint.eval_batch_size)?;
        self.check_fits(&probe)?;
        drop(probe);
        let start = Instant::now();
        let seeds = Seeds::new(opts.seed);
        let device = cascade
            .model(0)
            .map(|m| m.device().clone())
            .unwrap_or(Device::Cpu);
        let k = cascade.len();
        let costs: Vec<f64> = cascade.macs().iter().map(|&m| m as f64).collect();
        let n = train.len();

        // -- Policy: warm start, or fresh with standardisation from training images
        let fresh_norm = || -> Result<FeatureNorm> {
            let mut order: Vec<usize> = (0..n).collect();
            shuffle(&mut order, &mut EnvRng::new(seeds.shuffle ^ 1));
            order.truncate(joint.norm_samples.min(n));
            let mut b = CandleBackend::new(&cascade, &train.subset(&order), joint.eval_batch_size)?;
            let all: Vec<usize> = (0..order.len()).collect();
            let outs = (0..k)
                .map(|t| Ok(b.run_stage(t, &all)?.features))
                .collect::<Result<Vec<_>>>()?;
            let blocks: Vec<(&[f32], usize)> = outs
                .iter()
                .zip(cascade.feature_dims())
                .map(|(f, d)| (f.as_slice(), d))
                .collect();
            Ok(FeatureNorm::fit(&blocks))
        };
        let warm = self.restart_policy(fresh_norm, seeds.init, &device)?;
        let mut policy_opt = adamw(self.policy.vars(), cfg.lr, cfg.weight_decay)?;
        let mut classifier_opt =
            classifier_optimizer(&cascade, joint.classifier_lr, joint.classifier_weight_decay)?;
        let mut baseline = BaselineState::new(cfg.baseline, &self.policy, seeds.value_init)?;
        let mut rng = EnvRng::new(seeds.sampling);
        let mut shuffle_rng = EnvRng::new(seeds.shuffle);
        self.joint = Some(joint.clone());
        self.mode = ReinforceMode::Joint;

        // -- Bookkeeping ----------------------------------------------------
        let validate = |agent: &ReinforceAgent, alpha: f64| -> Result<ValScore> {
            let mut b = CandleBackend::new(&cascade, val, joint.eval_batch_size)?;
            agent.validate_live(&mut b, opts, alpha)
        };
        let mut log = MetricLog::new(opts.log_csv.as_deref());
        let bar = epoch_bar(cfg.epochs, "reinforce-joint", opts.quiet);
        let mut sel = Selection::new(
            validate(self, opts.spec.alpha)?,
            opts.spec.alpha,
            opts.budget,
            cfg.dual_lr,
            cfg.patience,
        );
        let mut best = self.snapshot_joint(&cascade)?;
        let mut step = 0;
        let mut epochs_run = 0;

        let source = |batch: &[usize], detach_inputs: bool| -> Result<ModelSource<'_>> {
            Ok(ModelSource {
                models: cascade.stages().iter().map(|s| &s.model).collect(),
                temperatures: cascade.temperatures(),
                images: images(train, batch, &device)?,
                device: device.clone(),
                detach_inputs,
            })
        };

        // -- A warm start's value baseline is fitted before anything moves --
        if joint.value_warmup && warm && baseline.values.is_some() {
            // The training reward draws yhat ~ C_k (see `sample_prediction`).
            let model = self.reward_model(&costs, opts, sel.alpha, joint.sample_prediction)?;
            let mut order: Vec<usize> = (0..n).collect();
            shuffle(&mut order, &mut shuffle_rng);
            for batch in order.chunks(cfg.batch_size) {
                let labels: Vec<u32> = batch.iter().map(|&i| train.labels[i]).collect();
                let mut src = source(batch, true)?;
                let roll = rollout(&self.policy, &mut src, &labels, &model, &mut rng)?;
                let loss = surrogate(&roll, &baseline, 0.0, &device)?;
                if let Some(v) = &loss.value {
                    finite_scalar(v, "losses/value", 0, step)?;
                    let grads = v.backward()?;
                    baseline.step(&grads)?;
                }
                baseline.update(&roll.returns);
            }
        }

        for epoch in 1..=cfg.epochs {
            epochs_run = epoch;
            let alpha = sel.alpha;
            let t0 = Instant::now();
            let model = self.reward_model(&costs, opts, alpha, joint.sample_prediction)?;
            let mut order: Vec<usize> = (0..n).collect();
            shuffle(&mut order, &mut shuffle_rng);
            let mut sums = EpochSums::default();
            for batch in order.chunks(cfg.batch_size) {
                step += 1;
                // Rollout: lazily through the classifiers, with gradients.
                let labels: Vec<u32> = batch.iter().map(|&i| train.labels[i]).collect();
                let mut src = source(batch, joint.detach_inputs)?;
                let roll = rollout(&self.policy, &mut src, &labels, &model, &mut rng)?;
                // Update both: one backward pass, two optimisers.
                let loss = surrogate(&roll, &baseline, cfg.entropy_at(epoch), &device)?;
                let policy_loss = finite_scalar(&loss.policy, "losses/policy", epoch, step)?;
                let classifier_loss = match &loss.classifier {
                    Some(c) => finite_scalar(c, "losses/classifier", epoch, step)?,
                    None => 0.0,
                };
                let value_loss = match &loss.value {
                    Some(v) => finite_scalar(v, "losses/value", epoch, step)?,
                    None => 0.0,
                };
                let grads = loss.total()?.backward()?;
                policy_opt.step(&grads)?;
                if joint.classifier_lr > 0.0 {
                    classifier_opt.step(&grads)?;
                }
                baseline.step(&grads)?;
                baseline.update(&roll.returns);
                sums.add(&roll, policy_loss, classifier_loss, value_loss);
            }
            let secs = t0.elapsed().as_secs_f64();

            // Validate (lazily, through the env), select, adjust alpha.
            let v = validate(self, alpha)?;
            log.push(sums.row(epoch, step, alpha, secs, &v))?;
            show_epoch(&bar, &v, alpha);
            if sel.record(v, epoch) {
                best = self.snapshot_joint(&cascade)?;
            }
            if sel.exhausted() {
                break;
            }
        }
        bar.finish_and_clear();

        // -- Keep the best epoch's policy and classifiers ---------------------
        self.restore_joint(&cascade, &best)?;
        self.cascade = Some(cascade);
        self.trained_with = Some(opts.clone());
        Ok(sel.summary(self.name(), epochs_run, start, log.into_rows()))
    }
}
