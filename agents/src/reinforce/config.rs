//! [`ReinforceConfig`]: the settings of a REINFORCE-trained policy and
//! its training, with the shipped frozen learner as the default.

use serde::{Deserialize, Serialize};

use crate::agent::ActMode;
use crate::error::{Error, Result};
use crate::policy::PolicyInputs;
use crate::reinforce::estimator::Baseline;

/// Settings of the policy and its training (both modes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReinforceConfig {
    /// Hidden width of each stage's policy head.
    pub hidden: usize,
    /// Most passes over the training split.
    pub epochs: usize,
    /// Trajectories per gradient step.
    pub batch_size: usize,
    /// Policy learning rate (AdamW).
    pub lr: f64,
    /// Policy weight decay (AdamW, decoupled).
    pub weight_decay: f64,
    /// The baseline b.
    pub baseline: Baseline,
    /// Weight of the policy-entropy bonus at the first epoch (0: the plain
    /// estimator). It keeps stop probabilities away from 0 and 1 while the
    /// policy still explores, so decisions with a small reward difference
    /// are not frozen by saturated sigmoids early on.
    pub entropy_coef: f64,
    /// Anneal the entropy weight linearly to 0 over `epochs`, so the final
    /// policy is trained on the plain estimator.
    pub entropy_anneal: bool,
    /// Stop after this many epochs without a better validation score (0:
    /// run every epoch).
    pub patience: usize,
    /// Dual-ascent step eta on alpha in budget mode.
    pub dual_lr: f64,
    /// How the policy acts in validation (and, by default, evaluation).
    pub eval_mode: ActMode,
    /// What the policy heads read (a linear head is `hidden` 0).
    pub inputs: PolicyInputs,
    /// How frozen training starts the policy.
    pub init: PolicyInit,
    /// The gradient of frozen training.
    pub estimator: Estimator,
}

/// How frozen training starts the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PolicyInit {
    /// Fresh weights from the run's seed (every `pi_t` near 1/2).
    #[default]
    Fresh,
    /// `ann`'s rule ([`crate::BackwardAgent`] with
    /// [`crate::BackwardConfig::ann`]) fitted on the same training split
    /// and copied into a linear head on the confidence inputs: the policy
    /// starts as that rule exactly (`pi_t = sigmoid(score_t)`). Under a
    /// budget, dual ascent starts from the alpha `ann` chose on the
    /// validation split. Needs `hidden` 0 and `inputs` `probs`.
    Ann,
}

/// The gradient frozen training follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// REINFORCE on sampled trajectories (the slides' estimator; the
    /// `log C_k` term is absent with the classifiers fixed).
    #[default]
    Reinforce,
    /// The exact gradient of the expected reward `J = E_x sum_k q_k(x)
    /// E[R(k, yhat)]` over each minibatch's recorded stage outputs: no
    /// sampling, no baseline, no entropy bonus.
    Exact,
}

impl Default for ReinforceConfig {
    /// The shipped frozen learner with 100 epochs
    /// ([`ReinforceConfig::frozen_learner`]): what `cascade train --agent
    /// reinforce`, Python's `agents.fit` and a config that leaves fields
    /// out start from.
    fn default() -> Self {
        ReinforceConfig::frozen_learner(100)
    }
}

impl ReinforceConfig {
    /// The frozen learner the studies ship (`reinforce-frozen`): REINFORCE
    /// on a linear head over the confidence inputs started from `ann`'s
    /// rule fitted on the same training split, lr 1e-3, no entropy bonus,
    /// `epochs` epochs all run and the best on validation kept (the start
    /// included).
    pub fn frozen_learner(epochs: usize) -> Self {
        ReinforceConfig {
            hidden: 0,
            inputs: PolicyInputs::Probs,
            init: PolicyInit::Ann,
            epochs,
            patience: 0,
            lr: 1e-3,
            entropy_coef: 0.0,
            ..ReinforceConfig::mlp()
        }
    }

    /// The previous learner, kept for the diagnostics that compare the two
    /// and for the tests on synthetic traces: a tanh MLP (hidden 32) over
    /// the stage features and the confidences, fresh weights, 30 epochs
    /// with patience 10, lr 1e-2, an entropy bonus of 0.01 annealed to 0.
    pub fn mlp() -> Self {
        ReinforceConfig {
            hidden: 32,
            epochs: 30,
            batch_size: 128,
            lr: 1e-2,
            weight_decay: 0.0,
            baseline: Baseline::default(),
            // Chosen on the validation reward of fmnist-4 frozen agents
            // (alphas 0.003 .. 0.1, 20 epochs): 0.01 annealed beat 0.03 and
            // 0.1, constant or annealed; a constant 0.1 held the stop
            // probabilities near one half, where greedy decisions are noise.
            entropy_coef: 0.01,
            entropy_anneal: true,
            patience: 10,
            dual_lr: 1.0,
            eval_mode: ActMode::Greedy,
            inputs: PolicyInputs::FeaturesAndProbs,
            init: PolicyInit::Fresh,
            estimator: Estimator::Reinforce,
        }
    }

    /// This config with a policy head of `hidden` units over `inputs`,
    /// started from `start`. Without an explicit start, a head that
    /// `ann`'s rule cannot fill (hidden units or feature inputs) starts
    /// fresh; an explicit `ann` start on such a head is left for
    /// [`ReinforceConfig::validate`] to refuse, naming the conflict.
    pub fn with_head(self, hidden: usize, inputs: PolicyInputs, start: Option<PolicyInit>) -> Self {
        let init = match start {
            Some(s) => s,
            None if hidden != 0 || inputs != PolicyInputs::Probs => PolicyInit::Fresh,
            None => self.init,
        };
        ReinforceConfig {
            hidden,
            inputs,
            init,
            ..self
        }
    }

    /// The entropy weight of 1-based `epoch`.
    pub fn entropy_at(&self, epoch: usize) -> f64 {
        if self.entropy_anneal {
            self.entropy_coef * (1.0 - (epoch.saturating_sub(1)) as f64 / self.epochs as f64)
        } else {
            self.entropy_coef
        }
    }

    /// Refuses zero sizes, bad rates and a warm start the head cannot hold.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(Error::Config(format!(
                "reinforce: epochs ({}) and batch_size ({}) must be positive",
                self.epochs, self.batch_size
            )));
        }
        if self.init == PolicyInit::Ann && (self.hidden != 0 || self.inputs != PolicyInputs::Probs)
        {
            return Err(Error::Config(format!(
                "reinforce: init ann needs a linear head on the confidence inputs (hidden 0, inputs probs), got hidden {} and inputs {:?}",
                self.hidden, self.inputs
            )));
        }
        for (name, v, positive) in [
            ("lr", self.lr, true),
            ("weight_decay", self.weight_decay, false),
            ("entropy_coef", self.entropy_coef, false),
            ("dual_lr", self.dual_lr, true),
        ] {
            if !v.is_finite() || v < 0.0 || (positive && v == 0.0) {
                return Err(Error::Config(format!(
                    "reinforce: {name} must be {}, got {v}",
                    if positive { "positive" } else { ">= 0" }
                )));
            }
        }
        self.baseline.validate()
    }
}
