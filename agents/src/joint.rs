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
//! REINFORCE surrogate of `reinforce/estimator.rs`:
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
//! **Which images each part learns from** ([`JointConfig::images`]):
//!
//! - `cross-fitted` (the default): every policy minibatch of D_P is
//!   preceded by [`JointConfig::classifier_batches`] minibatches of the
//!   classifiers' own training images D_C. On a D_C rollout only the
//!   classifiers step, by the score-function estimate above (its
//!   `log C_k(yhat|x)` term and the policy's log probabilities through its
//!   inputs, with yhat sampled); on a D_P rollout only the policy (and its
//!   value baseline) steps, the classifiers' outputs detached. Neither part
//!   learns from the other's images, so the policy never trains on
//!   in-sample (over-confident) outputs. The D_C rollouts draw from their
//!   own random streams, so with classifier learning rate 0 (skipping
//!   them) the policy's rollouts draw the same numbers: the `-lr0` twin.
//! - `policy`: one rollout of D_P updates both parts (one backward pass):
//!   the first joint agent, fine-tuning the classifiers in-sample on the
//!   policy's 15 % of the images.
//! - `pooled`: one rollout of D_C and D_P together updates both: the
//!   slides' setting, every training image for both parts.
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
use cascade_rl::cascade::Cascade;
use cascade_rl::data::Dataset;
use cascade_rl::models::Model;
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, TrainOptions, TrainSummary};
use crate::error::{Error, Result};
use crate::expected::JointSplits;
use crate::policy::FeatureNorm;
use crate::reinforce::estimator::{rollout, surrogate, BaselineState, StageOut, StageSource};
use crate::reinforce::{ReinforceAgent, Trained};
use crate::training::{
    adamw, classifier_optimizer, finite_or_zero, finite_scalar, EpochLoop, ValScore,
};
use crate::training::{shuffle, EpochSums, Seeds};

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
    /// Which images each part learns from.
    pub images: JointImages,
    /// Cross-fitted: classifier minibatches (of D_C) per policy minibatch
    /// (of D_P).
    pub classifier_batches: usize,
    /// After every epoch, refit the stages' softmax temperatures to the
    /// fine-tuned classifiers on the policy images D_P (as the pretrained
    /// cascade's were fitted), so the policy reads calibrated probabilities
    /// while the classifiers change.
    pub recalibrate: bool,
}

/// Which images the two parts of `reinforce-joint` take gradients on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum JointImages {
    /// The classifiers on rollouts of their own training images D_C, the
    /// policy on rollouts of the policy images D_P (classifiers fixed
    /// during its step): neither learns from the other's images.
    #[default]
    CrossFitted,
    /// Both from the same rollouts of D_P, one backward pass (the first
    /// joint agent: the classifiers fine-tune on the policy's images).
    Policy,
    /// Both from the same rollouts of D_C and D_P together: the slides'
    /// setting, every training image for both parts.
    Pooled,
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
            images: JointImages::CrossFitted,
            classifier_batches: 1,
            recalibrate: false,
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
        if self.eval_batch_size == 0 || self.norm_samples == 0 || self.classifier_batches == 0 {
            return Err(Error::Config(format!(
                "joint: eval_batch_size ({}), norm_samples ({}) and classifier_batches ({}) must be positive",
                self.eval_batch_size, self.norm_samples, self.classifier_batches
            )));
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
    /// What the classifiers learn from these rollouts.
    grads: Grads,
}

/// Which gradients a rollout's stage outputs carry to the classifiers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grads {
    /// Through `log C_k(yhat|x)` and the policy's inputs.
    All,
    /// Through `log C_k(yhat|x)` only ([`JointConfig::detach_inputs`]).
    LogLikelihood,
    /// None: the classifiers are fixed for this rollout (a policy step of
    /// cross-fitted training).
    None,
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
        Ok(match self.grads {
            Grads::All => StageOut {
                features: out.features,
                probs,
                probs_cpu,
                class_logp: Some(logp),
            },
            Grads::LogLikelihood => StageOut {
                features: out.features.detach(),
                probs: probs.detach(),
                probs_cpu,
                class_logp: Some(logp),
            },
            Grads::None => StageOut {
                features: out.features.detach(),
                probs: probs.detach(),
                probs_cpu,
                class_logp: None,
            },
        })
    }
}

/// The classifiers of `cascade` as a stage source for the minibatch
/// `batch` of `ds`.
fn model_source<'a>(
    cascade: &'a Cascade,
    ds: &Dataset,
    batch: &[usize],
    grads: Grads,
) -> Result<ModelSource<'a>> {
    let device = cascade.device();
    Ok(ModelSource {
        models: cascade.stages().iter().map(|s| &s.model).collect(),
        temperatures: cascade.temperatures(),
        images: images(ds, batch, &device)?,
        device,
        grads,
    })
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

/// The rows of `a` followed by those of `b` (checked to fit the same
/// cascade before).
fn concat(a: &Dataset, b: &Dataset) -> Dataset {
    let mut d = a.clone();
    d.images.extend_from_slice(&b.images);
    d.labels.extend_from_slice(&b.labels);
    d
}

/// Mixes the run's seeds into the classifier rollouts' own streams, so
/// that the policy's rollouts draw the same numbers whether or not the
/// classifiers train (the `-lr0` twin takes the same policy steps' draws).
const CLASSIFIER_STREAM: u64 = 0xC1A5_51F1;

/// Minibatches of `0..n` without replacement, reshuffled when used up.
struct Cycle {
    n: usize,
    order: Vec<usize>,
    rng: EnvRng,
}

impl Cycle {
    fn new(n: usize, rng: EnvRng) -> Self {
        Cycle {
            n,
            order: Vec::new(),
            rng,
        }
    }

    fn next(&mut self, size: usize) -> Vec<usize> {
        let size = size.min(self.n);
        if self.order.len() < size {
            self.order = (0..self.n).collect();
            shuffle(&mut self.order, &mut self.rng);
        }
        let at = self.order.len() - size;
        self.order.drain(at..).collect()
    }
}

impl ReinforceAgent {
    /// Trains the policy and the classifiers of `cascade` together, each
    /// on the images [`JointConfig::images`] gives it, selecting on
    /// `data.val` (all normalised with the cascade's statistics, as
    /// [`cascade_rl::data::Splits`] gives them); see the module docs. The
    /// agent keeps the fine-tuned cascade.
    pub fn train_joint(
        &mut self,
        mut cascade: Cascade,
        data: JointSplits<'_>,
        joint: &JointConfig,
        opts: &TrainOptions,
    ) -> Result<TrainSummary> {
        // -- Settings -------------------------------------------------------
        let cfg = data.check_run("joint", &self.config, joint.validate(), opts, &cascade)?;
        let val = data.val;
        let probe = CandleBackend::new(&cascade, val, joint.eval_batch_size)?;
        self.check_fits(&probe)?;
        drop(probe);
        let start = Instant::now();
        let seeds = Seeds::new(opts.seed);
        let device = cascade.device();
        let k = cascade.len();
        let costs: Vec<f64> = cascade.macs().iter().map(|&m| m as f64).collect();

        // -- Images: the policy's rollouts, and the classifiers' own when
        //    cross-fitted (otherwise both learn from the policy's) ----------
        let pooled;
        let (train, classifier_train) = match joint.images {
            JointImages::CrossFitted => (data.policy_train, Some(data.classifier_train)),
            JointImages::Policy => (data.policy_train, None),
            JointImages::Pooled => {
                pooled = concat(data.classifier_train, data.policy_train);
                (&pooled, None)
            }
        };
        let n = train.len();
        let recalibrate = joint.recalibrate && joint.classifier_lr > 0.0;
        let classifier_grads = if joint.detach_inputs {
            Grads::LogLikelihood
        } else {
            Grads::All
        };

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
        let mut classifier_rng = EnvRng::new(seeds.sampling ^ CLASSIFIER_STREAM);
        let mut classifier_batches = Cycle::new(
            classifier_train.map_or(0, |d| d.len()),
            EnvRng::new(seeds.shuffle ^ CLASSIFIER_STREAM),
        );

        // -- Bookkeeping ----------------------------------------------------
        let validate =
            |agent: &ReinforceAgent, cascade: &Cascade, alpha: f64| -> Result<ValScore> {
                let mut b = CandleBackend::new(cascade, val, joint.eval_batch_size)?;
                agent.validate_live(&mut b, opts, alpha)
            };
        let start_score = validate(self, &cascade, opts.spec.alpha)?;
        let mut run = EpochLoop::new(
            "reinforce-joint",
            &cfg,
            opts,
            start,
            start_score,
            opts.spec.alpha,
        );
        let mut best = self.snapshot_joint(&cascade)?;
        let mut step = 0;

        let labels_of = |ds: &Dataset, batch: &[usize]| -> Vec<u32> {
            batch.iter().map(|&i| ds.labels[i]).collect()
        };

        // -- A warm start's value baseline is fitted before anything moves --
        if joint.value_warmup && warm && baseline.values.is_some() {
            // The training reward draws yhat ~ C_k (see `sample_prediction`).
            let model = self.reward_model(&costs, opts, run.alpha(), joint.sample_prediction)?;
            let mut order: Vec<usize> = (0..n).collect();
            shuffle(&mut order, &mut shuffle_rng);
            for batch in order.chunks(cfg.batch_size) {
                let labels = labels_of(train, batch);
                let mut src = model_source(&cascade, train, batch, Grads::None)?;
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

        while let Some(epoch) = run.next_epoch() {
            let alpha = run.alpha();
            let t0 = Instant::now();
            let model = self.reward_model(&costs, opts, alpha, joint.sample_prediction)?;
            let mut order: Vec<usize> = (0..n).collect();
            shuffle(&mut order, &mut shuffle_rng);
            let mut sums = EpochSums::default();
            for batch in order.chunks(cfg.batch_size) {
                step += 1;
                let labels = labels_of(train, batch);
                let Some(d_c) = classifier_train else {
                    // Shared rollouts: lazily through the classifiers, with
                    // gradients; one backward pass, both optimisers.
                    let mut src = model_source(&cascade, train, batch, classifier_grads)?;
                    let roll = rollout(&self.policy, &mut src, &labels, &model, &mut rng)?;
                    let loss = surrogate(&roll, &baseline, cfg.entropy_at(epoch), &device)?;
                    let policy_loss = finite_scalar(&loss.policy, "losses/policy", epoch, step)?;
                    let classifier_loss =
                        finite_or_zero(loss.classifier.as_ref(), "losses/classifier", epoch, step)?;
                    let value_loss =
                        finite_or_zero(loss.value.as_ref(), "losses/value", epoch, step)?;
                    let grads = loss.total()?.backward()?;
                    policy_opt.step(&grads)?;
                    if joint.classifier_lr > 0.0 {
                        classifier_opt.step(&grads)?;
                    }
                    baseline.step(&grads)?;
                    baseline.update(&roll.returns);
                    sums.add(&roll, policy_loss, classifier_loss, value_loss);
                    continue;
                };

                // Cross-fitted. The classifiers: the score-function
                // estimate of grad J on rollouts of their own images D_C
                // (log C_k(yhat|x) and, unless detached, the policy's log
                // probabilities through its inputs), the policy not moving.
                let mut classifier_loss = 0.0;
                if joint.classifier_lr > 0.0 {
                    for _ in 0..joint.classifier_batches {
                        let cb = classifier_batches.next(cfg.batch_size);
                        let c_labels = labels_of(d_c, &cb);
                        let mut src = model_source(&cascade, d_c, &cb, classifier_grads)?;
                        let roll = rollout(
                            &self.policy,
                            &mut src,
                            &c_labels,
                            &model,
                            &mut classifier_rng,
                        )?;
                        let loss = surrogate(&roll, &baseline, 0.0, &device)?;
                        let l = match &loss.classifier {
                            Some(c) => (&loss.policy + c)?,
                            None => loss.policy.clone(),
                        };
                        classifier_loss += finite_scalar(&l, "losses/classifier", epoch, step)?
                            / joint.classifier_batches as f64;
                        classifier_opt.step(&l.backward()?)?;
                    }
                }
                // The policy: REINFORCE on rollouts of D_P through the
                // classifiers as they now are, which stay fixed for it.
                let mut src = model_source(&cascade, train, batch, Grads::None)?;
                let roll = rollout(&self.policy, &mut src, &labels, &model, &mut rng)?;
                let loss = surrogate(&roll, &baseline, cfg.entropy_at(epoch), &device)?;
                let policy_loss = finite_scalar(&loss.policy, "losses/policy", epoch, step)?;
                let value_loss = finite_or_zero(loss.value.as_ref(), "losses/value", epoch, step)?;
                let grads = loss.total()?.backward()?;
                policy_opt.step(&grads)?;
                baseline.step(&grads)?;
                baseline.update(&roll.returns);
                sums.add(&roll, policy_loss, classifier_loss, value_loss);
            }
            if recalibrate {
                // The policy reads probabilities at the fitted temperatures:
                // refit them to the classifiers as they now are.
                cascade.fit_temperatures(
                    data.policy_train,
                    "policy_train",
                    joint.eval_batch_size,
                )?;
            }
            let secs = t0.elapsed().as_secs_f64();

            // Validate (lazily, through the env), select, adjust alpha.
            let v = validate(self, &cascade, alpha)?;
            let row = sums.row(epoch, step, alpha, secs, &v);
            if run.end_epoch(row, v)? {
                best = self.snapshot_joint(&cascade)?;
            }
        }

        // -- Keep the best epoch's policy and classifiers ---------------------
        self.restore_joint(&cascade, &best)?;
        if recalibrate {
            // The kept classifiers' own temperatures (a deterministic fit).
            cascade.fit_temperatures(data.policy_train, "policy_train", joint.eval_batch_size)?;
        }
        self.trained = Trained::Joint(joint.clone(), cascade);
        self.trained_with = Some(opts.clone());
        Ok(run.finish(self.name()))
    }
}
