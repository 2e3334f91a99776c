//! Machinery shared by the REINFORCE trainers (policy-only and joint):
//! sampling a minibatch of trajectories stage by stage, the paper's
//! surrogate loss with its baseline, and the per-epoch bookkeeping (log
//! file, progress bar, early stopping, dual ascent, divergence checks).
//! The trainers themselves read top to bottom in `reinforce.rs` and
//! `joint.rs`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use cascade_env::{EnvRng, RewardModel};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::agent::{EpochMetrics, TrainSummary};
use crate::error::{Error, Result};
use crate::policy::StopPolicy;

/// The baseline b in `(R - b)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Baseline {
    /// An exponential running mean of the minibatch mean reward:
    /// `b <- momentum * b + (1 - momentum) * mean(R)` after each step (the
    /// first minibatch sets it).
    RunningMean {
        /// Weight of the old value, in [0, 1).
        momentum: f64,
    },
    /// A learned per-stage value `V_t(x_t)` (a head like the policy's on
    /// the same, detached, input), fitted to R by least squares on the
    /// trajectories that reach stage t. The decision at stage t uses
    /// `R - V_t(x_t)`; the last stage, which makes no decision, uses the
    /// running mean (momentum 0.9).
    Value {
        /// Learning rate of the value heads (AdamW).
        lr: f64,
    },
}

impl Default for Baseline {
    /// The learned value (lr 0.01): on the synthetic traces, whose optimum
    /// is known, it reached the optimum where the running mean stalled on
    /// the low-stakes decisions (see `ReinforceConfig`).
    fn default() -> Self {
        Baseline::Value { lr: 1e-2 }
    }
}

impl Baseline {
    pub(crate) fn validate(&self) -> Result<()> {
        match *self {
            Baseline::RunningMean { momentum } if !(0.0..1.0).contains(&momentum) => {
                Err(Error::Config(format!(
                    "baseline momentum must be in [0, 1), got {momentum}"
                )))
            }
            Baseline::Value { lr } if !(lr.is_finite() && lr > 0.0) => Err(Error::Config(format!(
                "value baseline lr must be positive, got {lr}"
            ))),
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------
// Trajectories
// ---------------------------------------------------------------------------

/// The outputs of one stage for the minibatch rows still in play.
///
/// # Shapes
/// `features: [m, d_t]`, `probs: [m, C]`, `probs_cpu: [m * C]`,
/// `class_logp: [m, C]`.
pub(crate) struct StageOut {
    /// Stage features (with gradient in joint training).
    pub features: Tensor,
    /// Class probabilities `p_t` (with gradient in joint training).
    pub probs: Tensor,
    /// The same probabilities as plain data, for predictions and rewards.
    pub probs_cpu: Vec<f32>,
    /// `log C_t(.|x)`, only when the classifiers train.
    pub class_logp: Option<Tensor>,
}

/// Where a trainer gets stage outputs: the recorded trace (frozen) or the
/// classifiers themselves (joint).
pub(crate) trait StageSource {
    /// Runs (or looks up) 0-based `stage` for minibatch rows `rows`.
    fn stage(&mut self, stage: usize, rows: &[usize]) -> Result<StageOut>;
}

/// One stage of a minibatch of sampled trajectories.
pub(crate) struct StageRollout {
    /// Minibatch rows in play at this stage, `[m]`.
    pub rows: Vec<usize>,
    /// The head input `x_t` (`None` at the last stage), `[m, in_t]`.
    pub input: Option<Tensor>,
    /// Stop logits `z_t` (`None` at the last stage), `[m]`.
    pub logits: Option<Tensor>,
    /// Action index per row: 0 = Stop, 1 = Forward, `[m]`.
    pub actions: Vec<u32>,
    /// Prediction of each stopping row (unused for forwarding rows), `[m]`.
    pub yhat: Vec<u32>,
    /// `log C_t(.|x)` (joint only), `[m, C]`.
    pub class_logp: Option<Tensor>,
}

/// A minibatch of finished trajectories.
pub(crate) struct Rollout {
    /// Per stage reached.
    pub stages: Vec<StageRollout>,
    /// Return of each row, `[B]`.
    pub returns: Vec<f64>,
    /// Normalised cost of each row, `[B]`.
    pub costs: Vec<f64>,
    /// Whether each row's prediction was wrong, `[B]`.
    pub wrong: Vec<bool>,
}

/// Samples one trajectory per minibatch row: at each stage the policy's
/// stop probability is drawn against a uniform from `rng`, the last stage
/// always stops, and a stopping row gets its prediction and reward from
/// `model` exactly as the env computes them.
///
/// # Shapes
/// `labels: [B]`.
pub(crate) fn rollout(
    policy: &StopPolicy,
    source: &mut dyn StageSource,
    labels: &[u32],
    model: &RewardModel,
    rng: &mut EnvRng,
) -> Result<Rollout> {
    let b = labels.len();
    let k = model.num_stages();
    let c = policy.spec().num_classes;
    let mut out = Rollout {
        stages: Vec::with_capacity(k),
        returns: vec![0.0; b],
        costs: vec![0.0; b],
        wrong: vec![false; b],
    };
    let mut alive: Vec<usize> = (0..b).collect();
    for t in 0..k {
        let s = source.stage(t, &alive)?;
        let m = alive.len();
        let last = t + 1 == k;
        let (input, logits, pi) = if last {
            (None, None, vec![1.0f32; m])
        } else {
            let x = policy.input(t, &s.features, &s.probs)?;
            let z = policy.logits_from_input(t, &x)?;
            let pi = candle_nn::ops::sigmoid(&z.detach())?.to_vec1::<f32>()?;
            (Some(x), Some(z), pi)
        };
        let mut actions = vec![0u32; m];
        let mut yhat = vec![0u32; m];
        let mut next = Vec::with_capacity(m);
        for (j, &row) in alive.iter().enumerate() {
            let stop = last || rng.next_f64() < pi[j] as f64;
            if stop {
                let p = &s.probs_cpu[j * c..(j + 1) * c];
                let y = model.predict(p, rng);
                yhat[j] = y;
                out.returns[row] = model.stop_reward(t, p, y, labels[row]);
                out.costs[row] = model.cost(t);
                out.wrong[row] = y != labels[row];
            } else {
                actions[j] = 1;
                next.push(row);
            }
        }
        out.stages.push(StageRollout {
            rows: std::mem::take(&mut alive),
            input,
            logits,
            actions,
            yhat,
            class_logp: s.class_logp,
        });
        alive = next;
        if alive.is_empty() {
            break;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Baselines and the surrogate loss
// ---------------------------------------------------------------------------

/// Per-stage value heads `V_t` for [`Baseline::Value`].
pub(crate) struct ValueHeads {
    heads: Vec<(candle_nn::Linear, candle_nn::Linear)>,
    opt: AdamW,
}

/// Hidden width of the value heads of a linear policy (`hidden` 0).
pub const LINEAR_POLICY_VALUE_HIDDEN: usize = 32;

impl ValueHeads {
    /// Heads shaped like `policy`'s, seeded with `seed`.
    pub fn new(policy: &StopPolicy, lr: f64, seed: u64) -> Result<Self> {
        let varmap = VarMap::new();
        let dev = policy.device();
        let vb = cascade_rl::nn::seeded_var_builder(&varmap, seed, DType::F32, dev);
        let spec = policy.spec();
        // A linear policy still gets a hidden layer in its baseline: the
        // value of a state is not linear in the confidence inputs.
        let h = if spec.hidden == 0 {
            LINEAR_POLICY_VALUE_HIDDEN
        } else {
            spec.hidden
        };
        let mut heads = Vec::new();
        for t in 0..spec.num_stages().saturating_sub(1) {
            let vb = vb.pp(format!("value{t}"));
            heads.push((
                candle_nn::linear(spec.input_dim(t), h, vb.pp("fc1"))?,
                candle_nn::linear(h, 1, vb.pp("fc2"))?,
            ));
        }
        let opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        Ok(ValueHeads { heads, opt })
    }

    /// `V_t(x)` on detached inputs.
    ///
    /// # Shapes
    /// `x: [m, in_t]` -> `[m]`
    fn value(&self, t: usize, x: &Tensor) -> Result<Tensor> {
        use candle_nn::Module;
        let (fc1, fc2) = &self.heads[t];
        Ok(fc2
            .forward(&fc1.forward(&x.detach())?.tanh()?)?
            .squeeze(D::Minus1)?)
    }
}

/// The baseline's state across steps.
pub(crate) struct BaselineState {
    momentum: f64,
    mean: Option<f64>,
    /// The value heads, for [`Baseline::Value`].
    pub values: Option<ValueHeads>,
}

impl BaselineState {
    pub fn new(kind: Baseline, policy: &StopPolicy, seed: u64) -> Result<Self> {
        Ok(match kind {
            Baseline::RunningMean { momentum } => BaselineState {
                momentum,
                mean: None,
                values: None,
            },
            Baseline::Value { lr } => BaselineState {
                momentum: 0.9,
                mean: None,
                values: Some(ValueHeads::new(policy, lr, seed)?),
            },
        })
    }

    /// The running mean (the first minibatch's mean before any update).
    fn running(&self, returns: &[f64]) -> f64 {
        self.mean
            .unwrap_or_else(|| returns.iter().sum::<f64>() / returns.len().max(1) as f64)
    }

    /// Moves the running mean towards this minibatch's mean return.
    pub fn update(&mut self, returns: &[f64]) {
        let m = returns.iter().sum::<f64>() / returns.len().max(1) as f64;
        self.mean = Some(match self.mean {
            None => m,
            Some(b) => self.momentum * b + (1.0 - self.momentum) * m,
        });
    }

    /// Steps the value heads on their loss's gradients (no-op without).
    pub fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        if let Some(v) = &mut self.values {
            v.opt.step(grads)?;
        }
        Ok(())
    }
}

/// The three parts of the loss of one minibatch.
pub(crate) struct Surrogate {
    /// `-(1/B) sum [sum_{t<k} log(1 - pi_t) + log pi_k] (R - b)` minus the
    /// entropy bonus.
    pub policy: Tensor,
    /// `-(1/B) sum log C_k(yhat|x) (R - b)` (joint only).
    pub classifier: Option<Tensor>,
    /// Mean squared error of the value heads (value baseline only).
    pub value: Option<Tensor>,
}

impl Surrogate {
    /// The sum of the parts (the three touch disjoint parameters, except
    /// that policy and classifier terms both reach the classifiers).
    pub fn total(&self) -> Result<Tensor> {
        let mut t = self.policy.clone();
        if let Some(c) = &self.classifier {
            t = (t + c)?;
        }
        if let Some(v) = &self.value {
            t = (t + v)?;
        }
        Ok(t)
    }
}

/// The paper's REINFORCE surrogate for a minibatch of trajectories: its
/// gradient is `-(1/B) sum_b [sum_{t<k} grad log(1 - pi_t) + grad log pi_k
/// + grad log C_k(yhat|x)] (R_b - b)`, the returns and baselines held
/// constant. Trajectories contribute only at the stages they reached, and
/// `log C_k` only at the stage they stopped at.
pub(crate) fn surrogate(
    roll: &Rollout,
    baseline: &BaselineState,
    entropy_coef: f64,
    device: &Device,
) -> Result<Surrogate> {
    let b = roll.returns.len().max(1) as f64;
    let running = baseline.running(&roll.returns);
    let mut policy_terms: Vec<Tensor> = Vec::new();
    let mut class_terms: Vec<Tensor> = Vec::new();
    let mut value_terms: Vec<Tensor> = Vec::new();
    for (t, st) in roll.stages.iter().enumerate() {
        let m = st.rows.len();
        let r: Vec<f32> = st.rows.iter().map(|&i| roll.returns[i] as f32).collect();
        let r = Tensor::from_vec(r, m, device)?;
        // Advantages: against V_t(x_t) where there is a value head.
        let adv = match (&baseline.values, &st.input) {
            (Some(v), Some(x)) => {
                let vt = v.value(t, x)?;
                value_terms.push((&vt - &r)?.sqr()?.sum_all()?);
                (&r - vt.detach())?
            }
            _ => r.affine(1.0, -running)?,
        };
        let actions = Tensor::from_slice(&st.actions, m, device)?;
        if let Some(z) = &st.logits {
            // [log pi, log (1 - pi)] = log_softmax([z, 0]), indexed by action.
            let two = Tensor::cat(&[&z.unsqueeze(1)?, &z.zeros_like()?.unsqueeze(1)?], 1)?;
            let logp = candle_nn::ops::log_softmax(&two, 1)?;
            let chosen = logp.gather(&actions.unsqueeze(1)?, 1)?.squeeze(1)?;
            policy_terms.push((chosen * &adv)?.sum_all()?);
            if entropy_coef > 0.0 {
                let ent = (logp.exp()? * &logp)?.sum_all()?.neg()?;
                policy_terms.push(ent.affine(entropy_coef, 0.0)?);
            }
        }
        if let Some(lp) = &st.class_logp {
            let stop: Vec<f32> = st.actions.iter().map(|&a| (a == 0) as u8 as f32).collect();
            let stop = Tensor::from_vec(stop, m, device)?;
            let yhat = Tensor::from_slice(&st.yhat, (m, 1), device)?;
            let chosen = lp.gather(&yhat, 1)?.squeeze(1)?;
            class_terms.push((chosen * (&adv * stop)?)?.sum_all()?);
        }
    }
    let sum = |terms: Vec<Tensor>| -> Result<Option<Tensor>> {
        if terms.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            Tensor::stack(&terms, 0)?.sum_all()?.affine(-1.0 / b, 0.0)?,
        ))
    };
    let zero = || Tensor::zeros((), DType::F32, device);
    Ok(Surrogate {
        policy: match sum(policy_terms)? {
            Some(p) => p,
            None => zero()?,
        },
        classifier: sum(class_terms)?,
        value: sum(value_terms)?.map(|v| v.neg()).transpose()?,
    })
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
                let floor = cascade_env::spec::CROSS_ENTROPY_FLOOR as f32;
                p_y.clamp(floor, 1f32)?.log()?.affine(1.0, -price)?
            }
            (Loss::ZeroOne, Prediction::Argmax) => {
                let r: Vec<f32> = (0..b)
                    .map(|i| {
                        let p = &s.probs_cpu[i * c..(i + 1) * c];
                        model.stop_reward(t, p, cascade_env::spec::argmax(p), labels[i]) as f32
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
                Prediction::Argmax => (cascade_env::spec::argmax(p) != labels[i]) as u8 as f64,
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

/// AdamW over `vars` (candle_nn's: decoupled weight decay).
pub(crate) fn adamw(vars: Vec<Var>, lr: f64, weight_decay: f64) -> Result<AdamW> {
    Ok(AdamW::new(
        vars,
        ParamsAdamW {
            lr,
            weight_decay,
            ..Default::default()
        },
    )?)
}

/// [`finite_scalar`] of a loss that may be absent (0 then).
pub(crate) fn finite_or_zero(
    t: Option<&Tensor>,
    what: &str,
    epoch: usize,
    step: usize,
) -> Result<f64> {
    t.map_or(Ok(0.0), |t| finite_scalar(t, what, epoch, step))
}

/// A scalar tensor's value, refusing NaN and infinities with the loss's
/// logged name and where it happened.
pub(crate) fn finite_scalar(t: &Tensor, what: &str, epoch: usize, step: usize) -> Result<f64> {
    let v = t.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if !v.is_finite() {
        return Err(Error::NonFinite {
            what: what.into(),
            value: v,
            epoch,
            step,
        });
    }
    Ok(v)
}

// ---------------------------------------------------------------------------
// Epoch bookkeeping
// ---------------------------------------------------------------------------

/// Validation numbers used for model selection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ValScore {
    pub mean_reward: f64,
    pub error: f64,
    pub cost: f64,
}

/// Whether a validation mean cost meets `budget` (up to rounding).
pub(crate) fn meets_budget(cost: f64, budget: f64) -> bool {
    cost <= budget * (1.0 + 1e-9)
}

/// Whether `a` beats the incumbent `b`: a higher mean reward; with a
/// budget, meeting it first, then a lower error, then a lower cost (among
/// candidates over budget, the lower cost). Every agent that picks among
/// candidates on validation chooses with it.
pub(crate) fn better(a: &ValScore, b: &ValScore, budget: Option<f64>) -> bool {
    match budget {
        None => a.mean_reward > b.mean_reward,
        Some(bud) => {
            let fits = |p: &ValScore| meets_budget(p.cost, bud);
            match (fits(a), fits(b)) {
                (true, false) => true,
                (false, true) => false,
                (true, true) => a.error < b.error || (a.error == b.error && a.cost < b.cost),
                (false, false) => a.cost < b.cost,
            }
        }
    }
}

/// The per-epoch log: rows kept in memory and rewritten to the CSV file
/// atomically after every epoch, so a crash leaves a complete file.
pub(crate) struct MetricLog {
    path: Option<PathBuf>,
    rows: Vec<EpochMetrics>,
}

impl MetricLog {
    pub fn new(path: Option<&Path>) -> Self {
        MetricLog {
            path: path.map(Path::to_path_buf),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: EpochMetrics) -> Result<()> {
        self.rows.push(row);
        let Some(path) = &self.path else {
            return Ok(());
        };
        let csv_err = |source| Error::Csv {
            path: path.clone(),
            source,
        };
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in &self.rows {
            w.serialize(r).map_err(csv_err)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
        cascade_env::fsutil::write_atomic(path, &bytes).map_err(|e| Error::io(path, e))
    }

    pub fn into_rows(self) -> Vec<EpochMetrics> {
        self.rows
    }
}

/// A progress bar over epochs on stderr, hidden when `quiet` or when
/// stderr is not a terminal.
pub(crate) fn epoch_bar(epochs: usize, prefix: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(epochs as u64), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} epochs {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_prefix(prefix.to_string());
    pb
}

/// The progress bar's line after an epoch's validation.
pub(crate) fn show_epoch(bar: &ProgressBar, v: &ValScore, alpha: f64) {
    bar.inc(1);
    bar.set_message(format!(
        "val reward {:.4} error {:.2}% cost {:.1}% alpha {:.4}",
        v.mean_reward,
        100.0 * v.error,
        100.0 * v.cost,
        alpha
    ));
}

/// AdamW over every trainable variable of `cascade`'s classifiers.
pub(crate) fn classifier_optimizer(
    cascade: &cascade_rl::checkpoint::Cascade,
    lr: f64,
    weight_decay: f64,
) -> Result<AdamW> {
    let vars = cascade
        .stages()
        .iter()
        .map(|s| Ok(s.model.trainable_vars()?))
        .collect::<Result<Vec<_>>>()?
        .concat();
    adamw(vars, lr, weight_decay)
}

/// Model selection on validation, shared by the REINFORCE trainers: the
/// best score so far with its epoch and alpha, the epochs since it, and
/// the alpha the next epoch trains at (moved by dual ascent under a budget).
pub(crate) struct Selection {
    pub best: ValScore,
    pub best_epoch: usize,
    pub best_alpha: f64,
    /// The alpha of the next epoch.
    pub alpha: f64,
    budget: Option<f64>,
    dual_lr: f64,
    patience: usize,
    stale: usize,
}

impl Selection {
    /// Starts from the untrained agent's score `start` at `alpha` (epoch 0).
    pub fn new(
        start: ValScore,
        alpha: f64,
        budget: Option<f64>,
        dual_lr: f64,
        patience: usize,
    ) -> Self {
        Selection {
            best: start,
            best_epoch: 0,
            best_alpha: alpha,
            alpha,
            budget,
            dual_lr,
            patience,
            stale: 0,
        }
    }

    /// Records the validation score of `epoch`, trained at [`Self::alpha`];
    /// returns whether it is the new best (the caller keeps its weights),
    /// then moves alpha towards the budget.
    pub fn record(&mut self, v: ValScore, epoch: usize) -> bool {
        let improved = better(&v, &self.best, self.budget);
        if improved {
            self.best = v;
            self.best_epoch = epoch;
            self.best_alpha = self.alpha;
            self.stale = 0;
        } else {
            self.stale += 1;
        }
        if let Some(b) = self.budget {
            self.alpha = dual_ascent(self.alpha, self.dual_lr, v.cost, b);
        }
        improved
    }

    /// Whether `patience` epochs in a row brought no improvement (never
    /// with patience 0).
    pub fn exhausted(&self) -> bool {
        self.patience > 0 && self.stale >= self.patience
    }

    /// The training summary of the kept (best) epoch.
    pub fn summary(
        &self,
        agent: String,
        epochs_run: usize,
        started: std::time::Instant,
        history: Vec<EpochMetrics>,
    ) -> TrainSummary {
        TrainSummary {
            agent,
            epochs_run,
            best_epoch: self.best_epoch,
            val_mean_reward: self.best.mean_reward,
            val_error: self.best.error,
            val_cost: self.best.cost,
            alpha: self.best_alpha,
            budget: self.budget,
            budget_met: self.budget.map(|b| meets_budget(self.best.cost, b)),
            seconds: started.elapsed().as_secs_f64(),
            history,
        }
    }
}

/// The loop every REINFORCE trainer (frozen, joint, expected-joint) runs
/// around its epochs: the per-epoch log and progress bar, model selection
/// on validation with dual ascent under a budget, early stopping, and the
/// summary of the kept epoch. The trainer keeps its own snapshot of the
/// best epoch's weights (what it trains differs):
///
/// ```text
/// let mut run = EpochLoop::new(label, &cfg, opts, started, start_score, start_alpha);
/// while let Some(epoch) = run.next_epoch() {
///     let alpha = run.alpha();
///     ... one epoch at alpha, then validate: v ...
///     if run.end_epoch(row, v)? { best = snapshot }
/// }
/// restore(best);
/// Ok(run.finish(name))
/// ```
pub(crate) struct EpochLoop {
    sel: Selection,
    log: MetricLog,
    bar: ProgressBar,
    epochs: usize,
    epochs_run: usize,
    started: std::time::Instant,
}

impl EpochLoop {
    /// Starts from the untrained (or warm-started) agent's validation
    /// score `start` at `alpha`; `started`: when training began (the
    /// summary's wall time counts from it).
    pub fn new(
        label: &str,
        cfg: &crate::reinforce::ReinforceConfig,
        opts: &crate::agent::TrainOptions,
        started: std::time::Instant,
        start: ValScore,
        alpha: f64,
    ) -> Self {
        EpochLoop {
            sel: Selection::new(start, alpha, opts.budget, cfg.dual_lr, cfg.patience),
            log: MetricLog::new(opts.log_csv.as_deref()),
            bar: epoch_bar(cfg.epochs, label, opts.quiet),
            epochs: cfg.epochs,
            epochs_run: 0,
            started,
        }
    }

    /// The next epoch (1-based), or `None` once every epoch ran or
    /// patience ran out.
    pub fn next_epoch(&mut self) -> Option<usize> {
        if self.epochs_run >= self.epochs || self.sel.exhausted() {
            return None;
        }
        self.epochs_run += 1;
        Some(self.epochs_run)
    }

    /// The alpha the current epoch trains at.
    pub fn alpha(&self) -> f64 {
        self.sel.alpha
    }

    /// Ends the current epoch: logs `row` (written to the CSV at once),
    /// shows the validation score `v` and records it for selection (then
    /// moves alpha towards the budget). Returns whether this epoch is the
    /// best so far (the trainer snapshots its weights).
    pub fn end_epoch(&mut self, row: EpochMetrics, v: ValScore) -> Result<bool> {
        self.log.push(row)?;
        show_epoch(&self.bar, &v, self.sel.alpha);
        Ok(self.sel.record(v, self.epochs_run))
    }

    /// The summary of the kept epoch, for agent `agent`.
    pub fn finish(self, agent: String) -> TrainSummary {
        self.bar.finish_and_clear();
        self.sel
            .summary(agent, self.epochs_run, self.started, self.log.into_rows())
    }
}

/// Dual ascent on alpha for a cost budget:
/// `alpha <- max(0, alpha + eta * (val_cost - B))`.
pub(crate) fn dual_ascent(alpha: f64, eta: f64, val_cost: f64, budget: f64) -> f64 {
    (alpha + eta * (val_cost - budget)).max(0.0)
}

/// Seeds derived from the run seed, one per random stream.
pub(crate) struct Seeds {
    pub init: u64,
    pub value_init: u64,
    pub sampling: u64,
    pub shuffle: u64,
}

impl Seeds {
    pub fn new(seed: u64) -> Self {
        let d = |s| cascade_rl::train::derive_seed(seed, s);
        Seeds {
            init: d(101),
            value_init: d(102),
            sampling: d(103),
            shuffle: d(104),
        }
    }
}

/// Fisher-Yates with the env's generator.
pub(crate) fn shuffle(v: &mut [usize], rng: &mut EnvRng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
}

/// Running sums of an epoch's training episodes and losses.
#[derive(Default)]
pub(crate) struct EpochSums {
    episodes: usize,
    steps: usize,
    reward: f64,
    wrong: f64,
    cost: f64,
    policy_loss: f64,
    classifier_loss: f64,
    value_loss: f64,
}

impl EpochSums {
    pub fn add(
        &mut self,
        roll: &crate::training::Rollout,
        policy: f64,
        classifier: f64,
        value: f64,
    ) {
        self.episodes += roll.returns.len();
        self.steps += 1;
        self.reward += roll.returns.iter().sum::<f64>();
        self.wrong += roll.wrong.iter().filter(|&&w| w).count() as f64;
        self.cost += roll.costs.iter().sum::<f64>();
        self.policy_loss += policy;
        self.classifier_loss += classifier;
        self.value_loss += value;
    }

    /// Adds a minibatch of `b` episodes scored in expectation (the exact
    /// gradient): mean reward `reward`, expected error and cost from `e`.
    pub fn add_expected(
        &mut self,
        b: usize,
        reward: f64,
        e: &crate::training::Expected,
        policy: f64,
    ) {
        self.episodes += b;
        self.steps += 1;
        self.reward += reward * b as f64;
        self.wrong += e.mean_error * b as f64;
        self.cost += e.mean_cost * b as f64;
        self.policy_loss += policy;
    }

    pub fn row(
        &self,
        epoch: usize,
        step: usize,
        alpha: f64,
        secs: f64,
        v: &ValScore,
    ) -> EpochMetrics {
        let e = self.episodes.max(1) as f64;
        let s = self.steps.max(1) as f64;
        EpochMetrics {
            epoch,
            global_step: step,
            mean_reward: self.reward / e,
            error: self.wrong / e,
            cost: self.cost / e,
            policy_loss: self.policy_loss / s,
            classifier_loss: self.classifier_loss / s,
            value_loss: self.value_loss / s,
            alpha,
            sps: self.episodes as f64 / secs.max(1e-9),
            val_mean_reward: v.mean_reward,
            val_error: v.error,
            val_cost: v.cost,
        }
    }
}

#[cfg(test)]
mod tests;
