//! `expected-joint`: the slides' joint objective optimised through its exact
//! expectation, with the classifiers and the policy cross-fitted on
//! disjoint images ([`ReinforceAgent::train_expected_joint`]).
//!
//! The objective is the one REINFORCE estimates (Guan et al. 2018, with
//! `yhat ~ C_k`):
//!
//! ```text
//! J = E_x sum_k q_k(x) sum_yhat C_k(yhat|x) R(k, yhat),
//! q_k = pi_k prod_{t<k} (1 - pi_t),   pi_K = 1
//! ```
//!
//! With K <= 5 stages and C classes the inner sums are K x C terms per
//! image, so nothing needs sampling ([`expected_objective`], below).
//! Where it departs from the slides, on purpose:
//!
//! - **Cross-fitting.** The classifiers take gradients only on their own
//!   training images D_C; the policy takes gradients only on the policy
//!   images D_P, from outputs recomputed with the current classifiers after
//!   every classifier round. The policy therefore never learns from
//!   in-sample (over-confident) outputs, which is what made a policy
//!   trained jointly on one set of images stop everything early.
//! - **The classifiers' loss** ([`ExpectedJointConfig::classifier_objective`]):
//!   by default `-J` itself on their minibatch of D_C
//!   ([`ClassifierObjective::ExactJ`]), always with `yhat ~ C_k` (with the
//!   argmax the reward would not depend on `C_k` except through the
//!   routing): its gradient reaches stage k through `C_k(y|x)`, weighted
//!   by the probability `q_k(x)` that the policy stops there, and through
//!   the inputs the policy reads at every stage before. The named
//!   alternative is a routing-weighted cross-entropy
//!   ([`ClassifierObjective::RoutingCe`], the first form of this agent):
//!   stage t's cross-entropy on image x weighted by `max(q_t(x), floor)`
//!   (detached), so each classifier specialises on the images routed to it
//!   while the floor keeps a rarely reached stage learning; not a gradient
//!   of J. `routing_weights: false` weights every stage 1 (plain
//!   fine-tuning: the compute control).
//!
//! A round is `classifier_steps` minibatches of D_C (batch norm in training
//! mode, the last stage's augmentation for every stage), the D_P outputs
//! recomputed, one pass of policy steps over D_P, and a validation of the
//! whole system through the env on D_V. Both parts warm-start: the
//! classifiers from the pretrained cascade, the policy from the agent's
//! current (e.g. frozen-trained) policy, and round 0 is that warm start,
//! so validation selection never returns something worse than it.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::Optimizer;
use cascade_env::{EnvRng, ReplayBackend, RewardModel, StageBackend, TraceMeta};
use cascade_rl::backend::CandleBackend;
use cascade_rl::cascade::Cascade;
use cascade_rl::data::Dataset;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, EpochMetrics, TrainOptions, TrainSummary};
use crate::error::{Error, Result};
use crate::policy::{FeatureNorm, StopPolicy};
use crate::reinforce::estimator::StageOut;
use crate::reinforce::{ReinforceAgent, Trained};
use crate::training::{adamw, classifier_optimizer, finite_scalar, EpochLoop};
use crate::training::{shuffle, Seeds};

/// Settings of `expected-joint` beyond the policy's ([`crate::ReinforceConfig`]:
/// its `epochs` are the rounds, its `lr` and `batch_size` the policy's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpectedJointConfig {
    /// Classifier learning rate (AdamW), 0 to keep them fixed.
    pub classifier_lr: f64,
    /// Classifier weight decay (AdamW, decoupled).
    pub classifier_weight_decay: f64,
    /// Classifier minibatches of D_C per round.
    pub classifier_steps: usize,
    /// Classifier minibatch size.
    pub classifier_batch: usize,
    /// What the classifiers minimise in their rounds on D_C.
    pub classifier_objective: ClassifierObjective,
    /// Routing cross-entropy: weight stage t's cross-entropy by the
    /// policy's stop probability `q_t(x)` (off: every stage weight 1, plain
    /// fine-tuning).
    pub routing_weights: bool,
    /// Floor of the routing weight.
    pub weight_floor: f64,
    /// Images per forward pass when recomputing outputs and validating.
    pub eval_batch_size: usize,
    /// Every stage's classifier batch gets the last stage's augmentation
    /// (the first form; it trains the linear and MLP stages on crops and
    /// flips they never saw). Off: each stage its own recipe's
    /// augmentation, the routing weights from each stage's outputs on its
    /// own input.
    #[serde(default = "yes")]
    pub augment_all_stages: bool,
    /// The policy's objective draws `yhat ~ C_k` (the slides' objective).
    /// Off: the reward model's own prediction (argmax by default), the
    /// rule the agent is evaluated with; still the exact expectation over
    /// where the policy stops. The classifiers' loss is the same either way.
    pub sample_prediction: bool,
}

impl Default for ExpectedJointConfig {
    fn default() -> Self {
        ExpectedJointConfig {
            classifier_lr: 1e-4,
            classifier_weight_decay: 1e-4,
            classifier_steps: 100,
            classifier_batch: 128,
            classifier_objective: ClassifierObjective::ExactJ,
            routing_weights: true,
            weight_floor: 0.1,
            eval_batch_size: 512,
            augment_all_stages: true,
            sample_prediction: true,
        }
    }
}

impl ExpectedJointConfig {
    /// Refuses bad rates, zero sizes and a floor outside [0, 1].
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("classifier_lr", self.classifier_lr),
            ("classifier_weight_decay", self.classifier_weight_decay),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::Config(format!(
                    "expected-joint: {name} must be >= 0, got {v}"
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.weight_floor) {
            return Err(Error::Config(format!(
                "expected-joint: weight_floor must be in [0, 1], got {}",
                self.weight_floor
            )));
        }
        if self.classifier_steps == 0 || self.classifier_batch < 2 || self.eval_batch_size == 0 {
            return Err(Error::Config(format!(
                "expected-joint: classifier_steps ({}) and eval_batch_size ({}) must be positive, \
                 classifier_batch ({}) at least 2",
                self.classifier_steps, self.eval_batch_size, self.classifier_batch
            )));
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}

/// The classifiers' loss in the rounds of `expected-joint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClassifierObjective {
    /// `-J` itself, the slides' objective with `yhat ~ C_k`, exactly: its
    /// gradient reaches every stage through `C_k(y|x)` (weighted by the
    /// probability `q_k(x)` that the policy stops there) and through the
    /// inputs the policy reads (which move `q`). The same objective the
    /// policy takes on D_P.
    #[default]
    ExactJ,
    /// Stage t's cross-entropy weighted by `max(q_t(x), floor)` (detached):
    /// a heuristic that specialises each stage on the images routed to it,
    /// not a gradient of J.
    RoutingCe,
}

/// The three disjoint splits of cross-fitted joint training.
pub struct JointSplits<'a> {
    /// D_C: the classifiers' training images.
    pub classifier_train: &'a Dataset,
    /// D_P: the policy's training images (never seen by the classifiers).
    pub policy_train: &'a Dataset,
    /// D_V: selection only.
    pub val: &'a Dataset,
}

impl JointSplits<'_> {
    /// The settings checks every joint trainer starts with: the policy's
    /// (returned), the classifiers' side (`classifiers`, validated by the
    /// caller), the options, and these splits against `cascade`.
    pub(crate) fn check_run(
        &self,
        agent: &str,
        policy: &crate::ReinforceConfig,
        classifiers: Result<()>,
        opts: &TrainOptions,
        cascade: &Cascade,
    ) -> Result<crate::ReinforceConfig> {
        policy.validate()?;
        classifiers?;
        opts.validate()?;
        self.check(agent, cascade)?;
        Ok(policy.clone())
    }

    /// Refuses a split that is empty or whose images or classes do not fit
    /// `cascade` (`agent` names the trainer in the message).
    fn check(&self, agent: &str, cascade: &Cascade) -> Result<()> {
        for ds in [self.classifier_train, self.policy_train, self.val] {
            if ds.is_empty()
                || ds.shape != cascade.input_shape()
                || ds.num_classes() != cascade.num_classes()
            {
                return Err(Error::Config(format!(
                    "{agent}: data '{}' ({} images of {:?}, {} classes) does not fit the cascade ({:?}, {} classes)",
                    ds.name,
                    ds.len(),
                    ds.shape,
                    ds.num_classes(),
                    cascade.input_shape(),
                    cascade.num_classes()
                )));
            }
        }
        Ok(())
    }
}

/// Every stage's outputs for minibatch `rows` of a recorded trace.
fn trace_stages(trace: &ReplayBackend, rows: &[usize], device: &Device) -> Result<Vec<StageOut>> {
    let c = trace.meta().num_classes;
    (0..trace.num_stages())
        .map(|t| {
            let d = trace.feature_dims()[t];
            let (fs, ps) = (trace.stage_features(t), trace.stage_probs(t));
            let mut f = Vec::with_capacity(rows.len() * d);
            let mut p = Vec::with_capacity(rows.len() * c);
            for &r in rows {
                f.extend_from_slice(&fs[r * d..(r + 1) * d]);
                p.extend_from_slice(&ps[r * c..(r + 1) * c]);
            }
            Ok(StageOut {
                features: Tensor::from_vec(f, (rows.len(), d), device)?,
                probs: Tensor::from_slice(&p, (rows.len(), c), device)?,
                probs_cpu: p,
                class_logp: None,
            })
        })
        .collect()
}

/// The stage outputs of `ds` under the current classifiers (eval mode, the
/// cascade's temperatures), in memory.
fn recompute(cascade: &Cascade, ds: &Dataset, batch: usize) -> Result<ReplayBackend> {
    let mut b = CandleBackend::new(cascade, ds, batch)?;
    let meta = TraceMeta {
        dataset: ds.name.clone(),
        split: "policy_train".into(),
        cascade: cascade.preset().into(),
        cost_unit: "macs".into(),
        num_classes: 0,
    };
    Ok(ReplayBackend::record(&mut b, meta, batch)?)
}

impl ReinforceAgent {
    /// The routing-weighted cross-entropy of one classifier batch
    /// ([`ClassifierObjective::RoutingCe`]): `batches[batch_of[t]]` is
    /// stage t's `(images, labels)`.
    fn routing_ce(
        &self,
        cascade: &Cascade,
        batches: &[(Tensor, Tensor)],
        batch_of: &[usize],
        ecfg: &ExpectedJointConfig,
        temperatures: &[f64],
    ) -> Result<Tensor> {
        let k = cascade.len();
        let device = self.policy.device();
        let rows = batches
            .first()
            .map_or(0, |(_, y)| y.dims().first().copied().unwrap_or(0));
        let mut reach = Tensor::ones(rows, DType::F32, device)?;
        let mut loss = Tensor::zeros((), DType::F32, device)?;
        for (t, stage) in cascade.stages().iter().enumerate() {
            let (x, y) = &batches[batch_of[t]];
            let out = stage.model.forward_t(x, true)?;
            let logits = out.logits.affine(1.0 / temperatures[t], 0.0)?;
            let logp = candle_nn::ops::log_softmax(&logits, 1)?;
            let ce = logp.gather(&y.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
            let weight = if !ecfg.routing_weights {
                Tensor::ones(rows, DType::F32, device)?
            } else {
                let q = if t + 1 == k {
                    reach.clone()
                } else {
                    let z = self
                        .policy
                        .logits(t, &out.features.detach(), &logp.exp()?.detach())?;
                    let pi = candle_nn::ops::sigmoid(&z)?;
                    let q = (&reach * &pi)?;
                    reach = (&reach * pi.affine(-1.0, 1.0)?)?;
                    q
                };
                q.clamp(ecfg.weight_floor as f32, 1f32)?.detach()
            };
            loss = (loss + (ce * weight)?.mean_all()?)?;
        }
        Ok(loss)
    }

    /// Trains the classifiers of `cascade` on D_C and the policy on D_P by
    /// the exact expected objective, rounds alternating, selecting on D_V
    /// (see the module docs). The agent keeps the fine-tuned cascade.
    pub fn train_expected_joint(
        &mut self,
        cascade: Cascade,
        data: JointSplits<'_>,
        ecfg: &ExpectedJointConfig,
        opts: &TrainOptions,
    ) -> Result<TrainSummary> {
        // -- Settings -------------------------------------------------------
        let cfg = data.check_run(
            "expected-joint",
            &self.config,
            ecfg.validate(),
            opts,
            &cascade,
        )?;
        let start = Instant::now();
        let seeds = Seeds::new(opts.seed);
        let device = cascade.device();
        let k = cascade.len();
        let costs: Vec<f64> = cascade.macs().iter().map(|&m| m as f64).collect();
        let temperatures = cascade.temperatures();
        let last_augment = cascade
            .stages()
            .last()
            .map(|s| s.record.train.augment)
            .unwrap_or_default();
        let augments: Vec<_> = cascade
            .stages()
            .iter()
            .map(|s| {
                if ecfg.augment_all_stages {
                    last_augment
                } else {
                    s.record.train.augment
                }
            })
            .collect();
        // One classifier batch per distinct augmentation, shared by the
        // stages that use it: `batch_of[t]` indexes `distinct`.
        let mut distinct = Vec::new();
        let batch_of: Vec<usize> = augments
            .iter()
            .map(|a| match distinct.iter().position(|d| d == a) {
                Some(i) => i,
                None => {
                    distinct.push(*a);
                    distinct.len() - 1
                }
            })
            .collect();
        let mut policy_trace = recompute(&cascade, data.policy_train, ecfg.eval_batch_size)?;
        self.check_fits(&policy_trace)?;

        // -- Policy: warm start, or fresh with standardisation from D_P -----
        let fresh_norm = || {
            let blocks: Vec<(&[f32], usize)> = (0..k)
                .map(|t| {
                    (
                        policy_trace.stage_features(t),
                        policy_trace.feature_dims()[t],
                    )
                })
                .collect();
            Ok(FeatureNorm::fit(&blocks))
        };
        self.restart_policy(fresh_norm, seeds.init, &device)?;
        let mut policy_opt = adamw(self.policy.vars(), cfg.lr, cfg.weight_decay)?;
        let mut classifier_opt = if ecfg.classifier_lr > 0.0 {
            Some(classifier_optimizer(
                &cascade,
                ecfg.classifier_lr,
                ecfg.classifier_weight_decay,
            )?)
        } else {
            None
        };
        let mut shuffle_rng = EnvRng::new(seeds.shuffle);
        let mut augment_rng = StdRng::seed_from_u64(seeds.sampling);

        // -- Bookkeeping ----------------------------------------------------
        let validate = |agent: &ReinforceAgent, alpha: f64| {
            let mut b = CandleBackend::new(&cascade, data.val, ecfg.eval_batch_size)?;
            agent.validate_live(&mut b, opts, alpha)
        };
        let start_score = validate(self, opts.spec.alpha)?;
        let mut run = EpochLoop::new(
            "expected-joint",
            &cfg,
            opts,
            start,
            start_score,
            opts.spec.alpha,
        );
        let mut best = self.snapshot_joint(&cascade)?;
        let n_c = data.classifier_train.len();
        let mut c_order: Vec<usize> = Vec::new();
        let mut step = 0;

        while let Some(epoch) = run.next_epoch() {
            let alpha = run.alpha();
            let t0 = Instant::now();
            // The slides' objective: yhat ~ C_k in training (by default).
            let model = self.reward_model(&costs, opts, alpha, ecfg.sample_prediction)?;
            // The classifiers' J always draws yhat ~ C_k: with the argmax
            // the reward does not depend on C_k but through the routing.
            let classifier_model = self.reward_model(&costs, opts, alpha, true)?;

            // Classifier round on D_C: routing-weighted cross-entropy.
            let mut ce_sum = 0.0;
            if let Some(classifier_opt) = classifier_opt.as_mut() {
                for _ in 0..ecfg.classifier_steps {
                    if c_order.len() < ecfg.classifier_batch {
                        c_order = (0..n_c).collect();
                        shuffle(&mut c_order, &mut shuffle_rng);
                    }
                    let idx: Vec<usize> = c_order
                        .drain(c_order.len().saturating_sub(ecfg.classifier_batch)..)
                        .collect();
                    let batches = distinct
                        .iter()
                        .map(|&a| {
                            Ok(cascade_rl::train::make_batch(
                                data.classifier_train,
                                &idx,
                                a,
                                &mut augment_rng,
                                &device,
                            )?)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let loss = match ecfg.classifier_objective {
                        ClassifierObjective::ExactJ => {
                            // Every stage's outputs on the batch, with
                            // gradients, and -J over them.
                            let labels: Vec<u32> = idx
                                .iter()
                                .map(|&i| data.classifier_train.labels[i])
                                .collect();
                            let stages = cascade
                                .stages()
                                .iter()
                                .enumerate()
                                .map(|(t, stage)| {
                                    let out =
                                        stage.model.forward_t(&batches[batch_of[t]].0, true)?;
                                    let logits = out.logits.affine(1.0 / temperatures[t], 0.0)?;
                                    let probs = candle_nn::ops::softmax(&logits, 1)?;
                                    let probs_cpu = probs
                                        .detach()
                                        .to_dtype(DType::F32)?
                                        .flatten_all()?
                                        .to_vec1::<f32>()?;
                                    Ok(StageOut {
                                        features: out.features,
                                        probs,
                                        probs_cpu,
                                        class_logp: None,
                                    })
                                })
                                .collect::<Result<Vec<_>>>()?;
                            expected_objective(&self.policy, &stages, &labels, &classifier_model)?
                                .objective
                                .neg()?
                        }
                        ClassifierObjective::RoutingCe => {
                            self.routing_ce(&cascade, &batches, &batch_of, ecfg, &temperatures)?
                        }
                    };
                    step += 1;
                    ce_sum += finite_scalar(&loss, "losses/classifier", epoch, step)?;
                    classifier_opt.backward_step(&loss)?;
                }
                policy_trace = recompute(&cascade, data.policy_train, ecfg.eval_batch_size)?;
            }

            // Policy round on D_P: the exact expected objective.
            let n_p = policy_trace.labels().len();
            let mut order: Vec<usize> = (0..n_p).collect();
            shuffle(&mut order, &mut shuffle_rng);
            let (mut j_sum, mut policy_steps) = (0.0, 0usize);
            let (mut err_sum, mut cost_sum) = (0.0, 0.0);
            for batch in order.chunks(cfg.batch_size) {
                step += 1;
                policy_steps += 1;
                let stages = trace_stages(&policy_trace, batch, &device)?;
                let labels: Vec<u32> = batch.iter().map(|&i| policy_trace.labels()[i]).collect();
                let e = expected_objective(&self.policy, &stages, &labels, &model)?;
                let loss = e.objective.neg()?;
                j_sum -= finite_scalar(&loss, "losses/policy", epoch, step)?;
                err_sum += e.mean_error * batch.len() as f64;
                cost_sum += e.mean_cost * batch.len() as f64;
                policy_opt.backward_step(&loss)?;
            }
            let secs = t0.elapsed().as_secs_f64();

            // Validate the whole system, select, adjust alpha.
            let v = validate(self, alpha)?;
            let row = EpochMetrics {
                epoch,
                global_step: step,
                mean_reward: j_sum / policy_steps.max(1) as f64,
                error: err_sum / n_p.max(1) as f64,
                cost: cost_sum / n_p.max(1) as f64,
                policy_loss: -j_sum / policy_steps.max(1) as f64,
                classifier_loss: ce_sum / ecfg.classifier_steps as f64,
                value_loss: 0.0,
                alpha,
                sps: (n_p + ecfg.classifier_steps * ecfg.classifier_batch) as f64 / secs.max(1e-9),
                val_mean_reward: v.mean_reward,
                val_error: v.error,
                val_cost: v.cost,
            };
            if run.end_epoch(row, v)? {
                best = self.snapshot_joint(&cascade)?;
            }
        }

        // -- Keep the best round's policy and classifiers --------------------
        self.restore_joint(&cascade, &best)?;
        self.trained = Trained::ExpectedJoint(ecfg.clone(), cascade);
        self.trained_with = Some(opts.clone());
        Ok(run.finish(self.name()))
    }
}

/// The exact expectation of the slides' objective over a minibatch, with
/// no sampling at all:
///
/// ```text
/// J = (1/B) sum_b sum_k q_k(x_b) sum_yhat C_k(yhat|x_b) R(k, yhat, y_b),
/// q_k = pi_k prod_{t<k} (1 - pi_t),   pi_K = 1
/// ```
///
/// `stages` holds every stage's outputs for every row (`rows = 0..B` at
/// each stage). The inner sum follows the reward model's prediction: with
/// [`cascade_env::Prediction::Sample`] (the slides: `yhat ~ C_k`) and the
/// 0-1 loss it is `C_k(y|x) - 1 - alpha Cost(k)`, differentiable in the
/// classifier's probabilities; with the argmax it is the constant reward of
/// the argmax; the cross-entropy loss gives `ln C_k(y|x) - alpha Cost(k)`
/// either way. Gradients reach the policy through `q_k` and, when the
/// stage outputs carry them, the classifiers through `q_k`'s inputs and
/// `C_k`.
///
/// # Shapes
/// `stages[t].features: [B, d_t]`, `stages[t].probs: [B, C]`,
/// `labels: [B]` -> scalar
pub(crate) fn expected_objective(
    policy: &StopPolicy,
    stages: &[StageOut],
    labels: &[u32],
    model: &RewardModel,
) -> Result<Expected> {
    use cascade_env::{Loss, Prediction};
    let k = model.num_stages();
    let b = labels.len();
    let c = policy.spec().num_classes;
    if stages.len() != k || b == 0 {
        return Err(Error::Config(format!(
            "expected objective: {} stage outputs for {k} stages and {b} rows",
            stages.len()
        )));
    }
    let device = policy.device();
    let label_idx = Tensor::from_slice(labels, (b, 1), device)?;
    // log prod_{t<k} (1 - pi_t), accumulated stage by stage.
    let mut log_go_on = Tensor::zeros(b, DType::F32, device)?;
    let mut total = Tensor::zeros(b, DType::F32, device)?;
    let (mut error, mut cost) = (0.0, 0.0);
    for (t, s) in stages.iter().enumerate() {
        let last = t + 1 == k;
        let log_q = if last {
            log_go_on.clone()
        } else {
            let z = policy.logits(t, &s.features, &s.probs)?;
            // log sigmoid(z) = -softplus(-z), log (1 - sigmoid(z)) = -softplus(z).
            let log_stop = softplus(&z.neg()?)?.neg()?;
            let log_q = (&log_go_on + log_stop)?;
            log_go_on = (log_go_on - softplus(&z)?)?;
            log_q
        };
        let price = model.spec().alpha * model.cost(t);
        let r = match (model.spec().loss, model.spec().prediction) {
            (Loss::ZeroOne, Prediction::Sample) => {
                let p_y = s.probs.gather(&label_idx, 1)?.squeeze(1)?;
                p_y.affine(1.0, -1.0 - price)?
            }
            (Loss::CrossEntropy, _) => {
                let p_y = s.probs.gather(&label_idx, 1)?.squeeze(1)?;
                let floor = cascade_env::reward::CROSS_ENTROPY_FLOOR as f32;
                p_y.clamp(floor, 1f32)?.log()?.affine(1.0, -price)?
            }
            (Loss::ZeroOne, Prediction::Argmax) => {
                let r: Vec<f32> = (0..b)
                    .map(|i| {
                        let p = &s.probs_cpu[i * c..(i + 1) * c];
                        model.stop_reward(t, p, cascade_env::reward::argmax(p), labels[i]) as f32
                    })
                    .collect();
                Tensor::from_vec(r, b, device)?
            }
        };
        let q = log_q.exp()?;
        let qv = q.detach().to_vec1::<f32>()?;
        for (i, &qi) in qv.iter().enumerate() {
            let p = &s.probs_cpu[i * c..(i + 1) * c];
            let wrong = match model.spec().prediction {
                Prediction::Sample => 1.0 - p.get(labels[i] as usize).map_or(0.0, |&v| v as f64),
                Prediction::Argmax => (cascade_env::reward::argmax(p) != labels[i]) as u8 as f64,
            };
            error += qi as f64 * wrong;
            cost += qi as f64 * model.cost(t);
        }
        total = (total + (q * r)?)?;
    }
    Ok(Expected {
        objective: total.mean_all()?,
        mean_error: error / b as f64,
        mean_cost: cost / b as f64,
    })
}

/// The exact expected objective of a minibatch and, as plain numbers, the
/// expected error and cost it implies.
pub(crate) struct Expected {
    /// `J`, the mean over the minibatch (differentiable).
    pub objective: Tensor,
    /// `E[L_01]` under the policy and the prediction rule.
    pub mean_error: f64,
    /// `E[Cost(k)]` under the policy (normalised).
    pub mean_cost: f64,
}

/// `ln(1 + e^z)`, stable for large `|z|`.
fn softplus(z: &Tensor) -> Result<Tensor> {
    // max(z, 0) + ln(1 + e^{-|z|})
    Ok((z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}
