//! The slides' REINFORCE estimator: rollouts of sampled trajectories
//! stage by stage ([`rollout`]), the surrogate loss whose gradient is the
//! estimate ([`surrogate`]) and its baseline ([`Baseline`]). Frozen
//! training (`reinforce.rs`) rolls out through the recorded outputs,
//! joint training (`joint.rs`) through the classifiers themselves.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use cascade_env::{EnvRng, RewardModel};
use serde::{Deserialize, Serialize};

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
    pub(crate) momentum: f64,
    pub(crate) mean: Option<f64>,
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
