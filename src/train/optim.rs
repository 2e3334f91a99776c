//! Optimisers and learning-rate schedules: the configuration
//! ([`OptimizerConfig`], [`LrSchedule`]), SGD with momentum
//! ([`SgdMomentum`]) and [`AnyOptimizer`], which builds either it or the fused
//! AdamW of [`crate::ops::AdamW`] from a configuration.

use crate::ops::AdamW;
use candle_core::{Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

impl LrSchedule {
    /// Refuses step milestones that are not increasing fractions in (0, 1)
    /// and a non-positive `gamma`.
    pub fn validate(&self) -> Result<()> {
        if let LrSchedule::Step { at, gamma } = self {
            let ok = at.iter().all(|f| *f > 0.0 && *f < 1.0) && at.windows(2).all(|w| w[0] < w[1]);
            if !ok || gamma.is_nan() || *gamma <= 0.0 {
                return Err(Error::Config(format!(
                    "step schedule: milestones {at:?} must be increasing fractions in (0, 1), gamma {gamma} > 0"
                )));
            }
        }
        Ok(())
    }

    /// The learning rate at `step` of `total` steps for the peak rate
    /// `base`, with a linear warm-up from 0 over the first `warmup_steps`
    /// steps (0: none).
    pub fn lr_at(&self, base: f64, step: usize, total: usize, warmup_steps: f64) -> f64 {
        let frac = step as f64 / total.max(1) as f64;
        let mut lr = match self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos()),
            LrSchedule::Step { at, gamma } => {
                base * gamma.powi(at.iter().filter(|&&m| frac >= m).count() as i32)
            }
        };
        if warmup_steps > 0.0 && (step as f64) < warmup_steps {
            lr *= (step as f64 + 1.0) / warmup_steps;
        }
        lr
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::TrainConfig;
    use candle_core::Device;

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
}
