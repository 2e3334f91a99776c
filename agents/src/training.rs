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

/// Dual ascent on alpha for a cost budget:
/// `alpha <- max(0, alpha + eta * (val_cost - B))`.
pub(crate) fn dual_ascent(alpha: f64, eta: f64, val_cost: f64, budget: f64) -> f64 {
    (alpha + eta * (val_cost - budget)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(z: f64) -> f64 {
        1.0 / (1.0 + (-z).exp())
    }

    /// Three trajectories over two stages: row 0 stops at stage 0, rows 1
    /// and 2 go forward and stop at the last stage.
    fn rollout_fixture(dev: &Device) -> (Rollout, Var, Var) {
        let z = Var::from_slice(&[0.5f32, -1.0, 2.0], 3, dev).unwrap();
        let l0 = Var::from_slice(&[1.0f32, 0.0, 0.5, -0.5, 0.2, 0.1], (3, 2), dev).unwrap();
        let l1 = Var::from_slice(&[0.3f32, -0.2, -1.0, 1.0], (2, 2), dev).unwrap();
        let lp0 = candle_nn::ops::log_softmax(l0.as_tensor(), 1).unwrap();
        let lp1 = candle_nn::ops::log_softmax(l1.as_tensor(), 1).unwrap();
        let roll = Rollout {
            stages: vec![
                StageRollout {
                    rows: vec![0, 1, 2],
                    input: None,
                    logits: Some(z.as_tensor().clone()),
                    actions: vec![0, 1, 1],
                    yhat: vec![0, 0, 0],
                    class_logp: Some(lp0),
                },
                StageRollout {
                    rows: vec![1, 2],
                    input: None,
                    logits: None,
                    actions: vec![0, 0],
                    yhat: vec![1, 0],
                    class_logp: Some(lp1),
                },
            ],
            returns: vec![-0.2, -1.1, -0.5],
            costs: vec![0.1, 1.0, 1.0],
            wrong: vec![false, true, false],
        };
        (roll, z, l1)
    }

    #[test]
    fn surrogate_values_and_gradients_match_the_estimator() {
        let dev = Device::Cpu;
        let (roll, z, l1) = rollout_fixture(&dev);
        let baseline = BaselineState {
            momentum: 0.9,
            mean: Some(-0.6),
            values: None,
        };
        let s = surrogate(&roll, &baseline, 0.0, &dev).unwrap();
        let adv = [0.4, -0.5, 0.1];
        let zs = [0.5f64, -1.0, 2.0];
        // log pi(stop) for row 0, log (1 - pi) = log sig(-z) for rows 1, 2.
        let want =
            -(adv[0] * sig(zs[0]).ln() + adv[1] * sig(-zs[1]).ln() + adv[2] * sig(-zs[2]).ln())
                / 3.0;
        let got = s.policy.to_scalar::<f32>().unwrap() as f64;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        let grads = s.total().unwrap().backward().unwrap();
        let gz = grads.get(z.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let want_gz = [
            -adv[0] * (1.0 - sig(zs[0])) / 3.0,
            adv[1] * sig(zs[1]) / 3.0,
            adv[2] * sig(zs[2]) / 3.0,
        ];
        for (g, w) in gz.iter().zip(want_gz) {
            assert!((*g as f64 - w).abs() < 1e-6, "{gz:?} vs {want_gz:?}");
        }
        // log C_k(yhat|x): at the last stage rows 1 (yhat 1) and 2 (yhat 0);
        // gradient -(1/B) A (onehot - softmax).
        let gl = grads.get(l1.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        for (j, (row, (y, a))) in [[0.3f64, -0.2], [-1.0, 1.0]]
            .iter()
            .zip([(1usize, adv[1]), (0, adv[2])])
            .enumerate()
        {
            let e: Vec<f64> = row.iter().map(|v| v.exp()).collect();
            let tot: f64 = e.iter().sum();
            for c in 0..2 {
                let want = -a * ((c == y) as u8 as f64 - e[c] / tot) / 3.0;
                assert!((gl[j][c] as f64 - want).abs() < 1e-6, "{gl:?}");
            }
        }
        // The classifier term: log C_k(yhat|x) of the stage each row stopped
        // at (row 0 at stage 0, yhat 0; rows 1, 2 at stage 1).
        let cls = s.classifier.unwrap().to_scalar::<f32>().unwrap() as f64;
        let lse = |r: [f64; 2]| (r[0].exp() + r[1].exp()).ln();
        let direct = -(adv[0] * (1.0 - lse([1.0, 0.0]))
            + adv[1] * (-0.2 - lse([0.3, -0.2]))
            + adv[2] * (-1.0 - lse([-1.0, 1.0])))
            / 3.0;
        assert!((cls - direct).abs() < 1e-6, "{cls} vs {direct}");
    }

    /// Three linear classifiers on 3-dimensional inputs (3 classes), each
    /// with 2 tanh features, as a differentiable stage source.
    struct LinearSource {
        x: Tensor,
        w: Vec<Var>,
        f: Vec<Var>,
    }

    impl LinearSource {
        fn new(x: Tensor, dev: &Device) -> (Self, Vec<Var>) {
            let mut w = Vec::new();
            let mut f = Vec::new();
            for t in 0..3 {
                let s = 0.7 + 0.4 * t as f32;
                let wv: Vec<f32> = (0..9)
                    .map(|i| s * ((i * 7 + t * 3) as f32 * 0.91).sin())
                    .collect();
                let fv: Vec<f32> = (0..6).map(|i| ((i * 5 + t) as f32 * 1.37).cos()).collect();
                w.push(Var::from_vec(wv, (3, 3), dev).unwrap());
                f.push(Var::from_vec(fv, (3, 2), dev).unwrap());
            }
            let vars = w.iter().chain(&f).cloned().collect();
            (LinearSource { x, w, f }, vars)
        }

        fn with_x(&self, x: Tensor) -> Self {
            LinearSource {
                x,
                w: self.w.clone(),
                f: self.f.clone(),
            }
        }
    }

    impl StageSource for LinearSource {
        fn stage(&mut self, t: usize, rows: &[usize]) -> Result<StageOut> {
            let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
            let idx = Tensor::from_vec(idx, rows.len(), self.x.device())?;
            let x = self.x.index_select(&idx, 0)?;
            let logp = candle_nn::ops::log_softmax(&x.matmul(self.w[t].as_tensor())?, 1)?;
            let probs = logp.exp()?;
            let probs_cpu = probs.detach().flatten_all()?.to_vec1::<f32>()?;
            Ok(StageOut {
                features: x.matmul(self.f[t].as_tensor())?.tanh()?,
                probs,
                probs_cpu,
                class_logp: Some(logp),
            })
        }
    }

    const XS: [[f32; 3]; 4] = [
        [0.5, -1.0, 0.3],
        [-0.8, 0.4, 1.1],
        [1.2, 0.9, -0.6],
        [0.1, -0.3, -1.4],
    ];
    const YS: [u32; 4] = [0, 2, 1, 1];

    fn small_policy(dev: &Device) -> StopPolicy {
        let spec = crate::policy::PolicySpec {
            feature_dims: vec![2, 2, 2],
            num_classes: 3,
            hidden: 4,
            inputs: crate::policy::PolicyInputs::FeaturesAndProbs,
        };
        let norm = crate::policy::FeatureNorm::identity(&[2, 2, 2]);
        StopPolicy::new(spec, norm, 5, dev).unwrap()
    }

    fn small_model(prediction: cascade_env::Prediction) -> RewardModel {
        cascade_env::RewardSpec {
            alpha: 0.3,
            prediction,
            ..Default::default()
        }
        .compile(&[1.0, 2.0, 4.0])
        .unwrap()
    }

    fn flat_grads(grads: &candle_core::backprop::GradStore, vars: &[Var]) -> Vec<f64> {
        vars.iter()
            .flat_map(|v| {
                grads
                    .get(v.as_tensor())
                    .map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                    .unwrap_or_else(|| vec![0.0; v.as_tensor().elem_count()])
            })
            .map(f64::from)
            .collect()
    }

    fn rel_err(a: &[f64], b: &[f64]) -> f64 {
        let d: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>()
            .sqrt();
        let n: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
        d / n
    }

    #[test]
    fn expected_objective_matches_the_brute_force_sum() {
        use cascade_env::{Loss, Prediction};
        let dev = Device::Cpu;
        let x = Tensor::new(&XS, &dev).unwrap();
        let (mut src, _) = LinearSource::new(x, &dev);
        let policy = small_policy(&dev);
        let rows: Vec<usize> = (0..4).collect();
        let stages: Vec<StageOut> = (0..3).map(|t| src.stage(t, &rows).unwrap()).collect();
        for (loss, prediction) in [
            (Loss::ZeroOne, Prediction::Sample),
            (Loss::ZeroOne, Prediction::Argmax),
            (Loss::CrossEntropy, Prediction::Sample),
        ] {
            let model = cascade_env::RewardSpec {
                alpha: 0.3,
                loss,
                prediction,
                ..Default::default()
            }
            .compile(&[1.0, 2.0, 4.0])
            .unwrap();
            let got = expected_objective(&policy, &stages, &YS, &model)
                .unwrap()
                .objective
                .to_scalar::<f32>()
                .unwrap() as f64;
            // sum over k and yhat, in f64, from the stop probabilities.
            let mut want = 0.0;
            for (b, &y) in YS.iter().enumerate() {
                let mut reach = 1.0f64;
                for (t, s) in stages.iter().enumerate() {
                    let p = &s.probs_cpu[b * 3..(b + 1) * 3];
                    let pi = if t == 2 {
                        1.0
                    } else {
                        policy
                            .stop_probs_rows(t, &s.features.to_vec2::<f32>().unwrap()[b], p)
                            .unwrap()[0] as f64
                    };
                    let q = reach * pi;
                    reach *= 1.0 - pi;
                    let inner: f64 = match prediction {
                        Prediction::Sample => (0..3u32)
                            .map(|yh| p[yh as usize] as f64 * model.stop_reward(t, p, yh, y))
                            .sum(),
                        Prediction::Argmax => {
                            model.stop_reward(t, p, cascade_env::spec::argmax(p), y)
                        }
                    };
                    want += q * inner;
                }
            }
            want /= 4.0;
            assert!(
                (got - want).abs() < 1e-5,
                "{loss:?} {prediction:?}: {got} vs {want}"
            );
        }
    }

    /// The slides' estimator with `yhat ~ C_k`, averaged over many sampled
    /// trajectories, is the gradient of the exact expected reward, for the
    /// policy and for the classifiers (through `log C_k` and through the
    /// features and probabilities the policy reads). With the argmax
    /// prediction the classifier part is not.
    #[test]
    fn sampled_reinforce_gradient_matches_the_exact_gradient() {
        use cascade_env::Prediction;
        let dev = Device::Cpu;
        let (mut exact_src, cls_vars) = LinearSource::new(Tensor::new(&XS, &dev).unwrap(), &dev);
        let policy = small_policy(&dev);
        let pol_vars = policy.vars();
        let model = small_model(Prediction::Sample);
        // Exact: d(-J), the direction the surrogate loss descends.
        let rows: Vec<usize> = (0..4).collect();
        let stages: Vec<StageOut> = (0..3).map(|t| exact_src.stage(t, &rows).unwrap()).collect();
        let j = expected_objective(&policy, &stages, &YS, &model)
            .unwrap()
            .objective;
        let g = j.neg().unwrap().backward().unwrap();
        let (ex_cls, ex_pol) = (flat_grads(&g, &cls_vars), flat_grads(&g, &pol_vars));
        // Sampled: 4 x 40000 trajectories, the constant baseline b = J.
        let reps = 40_000;
        let mut xs = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..reps {
            for (x, &y) in XS.iter().zip(&YS) {
                xs.extend_from_slice(x);
                labels.push(y);
            }
        }
        let big = Tensor::from_vec(xs, (4 * reps, 3), &dev).unwrap();
        let baseline = BaselineState {
            momentum: 0.0,
            mean: Some(j.to_scalar::<f32>().unwrap() as f64),
            values: None,
        };
        let estimate = |prediction| {
            let mut src = exact_src.with_x(big.clone());
            let mut rng = EnvRng::new(11);
            let roll = rollout(
                &policy,
                &mut src,
                &labels,
                &small_model(prediction),
                &mut rng,
            )
            .unwrap();
            let s = surrogate(&roll, &baseline, 0.0, &dev).unwrap();
            let g = s.total().unwrap().backward().unwrap();
            (flat_grads(&g, &cls_vars), flat_grads(&g, &pol_vars))
        };
        let (mc_cls, mc_pol) = estimate(Prediction::Sample);
        let (e_cls, e_pol) = (rel_err(&mc_cls, &ex_cls), rel_err(&mc_pol, &ex_pol));
        // Monte Carlo error with 160000 trajectories is a few percent.
        assert!(e_cls < 0.05, "classifier gradient off by {e_cls}");
        assert!(e_pol < 0.05, "policy gradient off by {e_pol}");
        let (am_cls, _) = estimate(Prediction::Argmax);
        let e_am = rel_err(&am_cls, &ex_cls);
        assert!(
            e_am > 0.3,
            "argmax classifier gradient unexpectedly close: {e_am}"
        );
        eprintln!("relative error: classifiers {e_cls:.4}, policy {e_pol:.4}, argmax {e_am:.4}");
    }

    #[test]
    fn entropy_bonus_lowers_the_loss_and_running_mean_moves() {
        let dev = Device::Cpu;
        let (roll, _, _) = rollout_fixture(&dev);
        let mut baseline = BaselineState {
            momentum: 0.5,
            mean: None,
            values: None,
        };
        let plain = surrogate(&roll, &baseline, 0.0, &dev).unwrap().policy;
        let bonus = surrogate(&roll, &baseline, 0.1, &dev).unwrap().policy;
        let ent: f64 = [0.5f64, -1.0, 2.0]
            .iter()
            .map(|&z| -(sig(z) * sig(z).ln() + sig(-z) * sig(-z).ln()))
            .sum();
        let d = plain.to_scalar::<f32>().unwrap() - bonus.to_scalar::<f32>().unwrap();
        assert!((d as f64 - 0.1 * ent / 3.0).abs() < 1e-6);
        // First update sets the mean, later ones move it by the momentum.
        baseline.update(&[-1.0, 0.0]);
        assert_eq!(baseline.mean, Some(-0.5));
        baseline.update(&[1.0]);
        assert_eq!(baseline.mean, Some(0.25));
    }

    #[test]
    fn selection_and_dual_ascent() {
        let p = |r, e, c| ValScore {
            mean_reward: r,
            error: e,
            cost: c,
        };
        assert!(better(&p(-0.1, 0.2, 0.9), &p(-0.2, 0.1, 0.1), None));
        // Budget 0.5: feasible beats infeasible, then error, then cost.
        let b = Some(0.5);
        assert!(better(&p(-9.0, 0.3, 0.5), &p(0.0, 0.1, 0.6), b));
        assert!(better(&p(-9.0, 0.1, 0.4), &p(0.0, 0.2, 0.1), b));
        assert!(better(&p(-9.0, 0.1, 0.3), &p(0.0, 0.1, 0.4), b));
        assert!(better(&p(-9.0, 0.9, 0.7), &p(0.0, 0.1, 0.8), b));
        assert!(!better(&p(0.0, 0.1, 0.4), &p(0.0, 0.1, 0.4), b));
        assert_eq!(dual_ascent(0.1, 2.0, 0.75, 0.5), 0.6);
        assert_eq!(dual_ascent(0.1, 2.0, 0.25, 0.5), 0.0);
    }

    #[test]
    fn bad_baselines_are_refused() {
        assert!(Baseline::RunningMean { momentum: 1.0 }.validate().is_err());
        assert!(Baseline::Value { lr: 0.0 }.validate().is_err());
        assert!(Baseline::default().validate().is_ok());
    }
}
