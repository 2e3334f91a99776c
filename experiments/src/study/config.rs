//! The resolved configuration of a study ([`StudyConfig`], written as
//! `config.json` next to the results) and the study presets.

use std::path::Path;

use cascade_agents::{
    AgentKind, BackwardConfig, ClassifierObjective, Estimator, ExpectedJointConfig, JointConfig,
    JointImages, PolicyInputs, ReinforceConfig, ThresholdConfig,
};
use cascade_env::RewardSpec;
use cascade_rl::data::{find_data_dir, DatasetKind, SplitConfig, SyntheticConfig};
use cascade_rl::error::{give_one_or, num};
use cascade_rl::presets::Preset;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The alphas a study accepts besides 0: beyond these ends a sweep point
/// means "never forward" or "always forward" many times over.
pub const ALPHA_RANGE: (f64, f64) = (1e-9, cascade_agents::agent::MAX_ALPHA);

/// The budgets a study accepts, as fractions of the largest stage's cost
/// (a cumulative cascade costs at most K of them).
pub const BUDGET_RANGE: (f64, f64) = (1e-6, cascade_agents::agent::MAX_BUDGET);

/// The study presets of `joint_vs_frozen` and `alpha_sweep`.
pub const STUDY_PRESETS: [&str; 4] = ["default", "quick", "fmnist", "cifar10"];

/// An ablation of a learned agent: one setting changed, swept at
/// [`StudyConfig::ablation_points`] with the study's seeds, reported under
/// its own name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Its name in results (`reinforce-joint-argmax`, ...); must not be an
    /// agent's name.
    pub name: String,
    /// The agent it varies: `reinforce-joint`, `expected-joint` or
    /// `reinforce-frozen` (its `policy` settings only).
    pub base: AgentKind,
    /// What changed, one line (the ablation table's label).
    pub description: String,
    /// Where a joint variant's policy starts.
    #[serde(default)]
    pub start: JointStart,
    /// Runs at every point of the sweep, not only at the ablation points
    /// (the main arm's `-lr0` twin).
    #[serde(default)]
    pub every_point: bool,
    /// A joint arm's `-lr0` twin (the same policy updates, classifier
    /// learning rate 0), when it is not `{name}-lr0`: arms that differ
    /// only in the classifiers' learning rate or loss share one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<String>,
    /// Replaces the base agent's policy training settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<ReinforceConfig>,
    /// Replaces the study's `joint_classifiers` (base `reinforce-joint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joint: Option<JointConfig>,
    /// Replaces the study's `expected_classifiers` (base `expected-joint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<ExpectedJointConfig>,
}

/// Where the policy of a joint agent starts (the classifiers always start
/// from the pretrained cascade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JointStart {
    /// "Mixed", after Kubaty et al. (ICML 2025): backbone first, then
    /// joint. The frozen learner's policy at the same point and seed
    /// (trained on the pretrained classifiers) and, under a budget, the
    /// alpha its dual ascent reached.
    #[default]
    Mixed,
    /// Cold: a fresh policy (and, under a budget, the study's first alpha).
    Cold,
    /// `ann`'s rule fitted on the policy images, copied exactly into the
    /// linear head, and the alpha `ann` chose on validation.
    Ann,
}

/// How the cascade is pretrained (and what a reused one must match).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// Seed of the split, the initialisation and the batch order.
    pub seed: u64,
    /// Training epochs: empty for the cascade preset's recipe, one value
    /// for every stage, or one per stage.
    pub epochs: Vec<usize>,
    /// At most this many training images (real data; `None`: all).
    pub max_train: Option<usize>,
    /// At most this many validation images (real data).
    pub max_val: Option<usize>,
    /// At most this many test images (real data).
    pub max_test: Option<usize>,
    /// Synthetic data: training images (validation is carved from them).
    pub synthetic_train: usize,
    /// Synthetic data: test images.
    pub synthetic_test: usize,
    /// Share of the training split held out from pretraining for the
    /// learned agents (see [`super::data`]); 0: the agents train on the
    /// classifiers' own training images.
    pub agent_fraction: f64,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            seed: 0,
            epochs: vec![],
            max_train: None,
            max_val: None,
            max_test: None,
            synthetic_train: SyntheticConfig::default().n_train,
            synthetic_test: SyntheticConfig::default().n_test,
            agent_fraction: 0.2,
        }
    }
}

/// Everything a study's numbers depend on. Written, resolved, as
/// `config.json` in the run folder; a rerun in the same folder must agree
/// on everything but the sweep itself (`agents`, `alphas`, `budgets`,
/// `seeds`), which it may extend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// The experiment: `joint_vs_frozen` or `alpha_sweep`.
    pub study: String,
    /// The study preset it was resolved from (`default`, `quick`, `fmnist`, `cifar10`).
    pub preset: String,
    /// The cascade preset of cascade-rl (`synthetic-3`, `fmnist-4`, `cifar10-resnet`, ...).
    pub cascade: String,
    /// The data set (the cascade preset's).
    pub dataset: String,
    /// Pretraining of the cascade.
    pub pretrain: PretrainConfig,
    /// The agents swept over `alphas` (or `budgets`) and `seeds`.
    pub agents: Vec<AgentKind>,
    /// The prices of compute swept (empty in budget mode).
    pub alphas: Vec<f64>,
    /// Cost budgets swept, as fractions of the largest stage's cost
    /// (budget mode; `alphas` is then empty).
    pub budgets: Vec<f64>,
    /// The starting alpha of dual ascent in budget mode.
    pub budget_alpha0: f64,
    /// Training seeds of the learned agents.
    pub seeds: Vec<u64>,
    /// Loss, cost model and prediction of the reward (its alpha is set per point).
    pub reward: RewardSpec,
    /// Count the stopping policy's own MACs into the cost.
    pub count_policy_cost: bool,
    /// Threshold search.
    pub threshold: ThresholdConfig,
    /// The policy-only agent on frozen classifiers.
    pub frozen: ReinforceConfig,
    /// The policy of the joint agent (fresh policy, like the frozen one).
    pub joint: ReinforceConfig,
    /// The classifiers' side of joint training.
    pub joint_classifiers: JointConfig,
    /// The policy of `expected-joint` (its epochs are the rounds).
    #[serde(default = "expected_policy")]
    pub expected: ReinforceConfig,
    /// The classifiers' side of `expected-joint`.
    #[serde(default)]
    pub expected_classifiers: ExpectedJointConfig,
    /// The fit of `backward-induction`.
    #[serde(default = "BackwardConfig::backward_induction")]
    pub backward: BackwardConfig,
    /// The fit of `ann`.
    #[serde(default = "BackwardConfig::ann")]
    pub ann: BackwardConfig,
    /// At most this many of the agents' training images (a seeded subset,
    /// the same for the frozen and the joint agent and every seed; `None`:
    /// all of the held-out share).
    pub agent_train_samples: Option<usize>,
    /// Ablations of the joint agents (see [`Variant`]).
    #[serde(default)]
    pub variants: Vec<Variant>,
    /// The alphas (or, in budget mode, budgets) at which the variants run;
    /// empty: every point of the sweep.
    #[serde(default)]
    pub ablation_points: Vec<f64>,
    /// Alphas of the label-aware oracle curve (`oracle-alpha`).
    pub oracle_alphas: Vec<f64>,
    /// Sub-envs run in lock step in evaluations.
    pub num_envs: usize,
    /// Images per forward pass of the live cascade (traces, joint evaluation).
    pub eval_batch: usize,
}

/// `n` alphas spaced evenly in log scale from `lo` to `hi`.
pub fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if n <= 1 {
        return vec![lo];
    }
    let (a, b) = (lo.ln(), hi.ln());
    (0..n)
        .map(|i| {
            let v = (a + (b - a) * i as f64 / (n - 1) as f64).exp();
            // Four significant digits: readable in file and folder names.
            let p = 10f64.powi(3 - v.log10().floor() as i32);
            (v * p).round() / p
        })
        .collect()
}

impl StudyConfig {
    /// The study preset `name` for the experiment `study`. `data_dir` is
    /// where the data is looked for: the `default` preset uses
    /// Fashion-MNIST when it is found and the synthetic set otherwise.
    pub fn preset(study: &str, name: &str, data_dir: Option<&Path>) -> Result<Self> {
        let base = |cascade: &str, dataset: &str| StudyConfig {
            study: study.to_string(),
            preset: name.to_string(),
            cascade: cascade.to_string(),
            dataset: dataset.to_string(),
            pretrain: PretrainConfig::default(),
            agents: vec![
                AgentKind::Threshold,
                AgentKind::ReinforceFrozen,
                AgentKind::ReinforceJoint,
            ],
            alphas: vec![0.01, 0.03, 0.1],
            budgets: vec![],
            budget_alpha0: 0.05,
            seeds: vec![0],
            reward: RewardSpec::default(),
            count_policy_cost: true,
            threshold: ThresholdConfig::default(),
            frozen: frozen_learner(10),
            joint: policy(10),
            joint_classifiers: JointConfig::default(),
            expected: expected_policy(),
            expected_classifiers: ExpectedJointConfig::default(),
            backward: BackwardConfig::backward_induction(),
            ann: BackwardConfig::ann(),
            variants: vec![],
            ablation_points: vec![],
            agent_train_samples: None,
            oracle_alphas: log_grid(1e-3, 30.0, 31),
            num_envs: 256,
            eval_batch: 512,
        };
        // The default preset falls back to synthetic data only when no
        // folder was named: an explicit --data-dir without the data set is
        // an error, whatever the preset.
        let fmnist_found = match (name, data_dir) {
            ("default", Some(_)) => {
                find_data_dir(DatasetKind::FashionMnist, data_dir)?;
                true
            }
            _ => find_data_dir(DatasetKind::FashionMnist, data_dir).is_ok(),
        };
        let cfg = match name {
            "quick" => quick(base("synthetic-3", "synthetic")),
            "default" if fmnist_found => {
                let mut c = base("fmnist-4", "fashion-mnist");
                c.pretrain.max_train = Some(20000);
                c.pretrain.max_val = Some(2000);
                c.pretrain.max_test = Some(5000);
                // A fifth of the full set: the ResNet needs more passes.
                c.pretrain.epochs = vec![4, 6, 4, 6];
                c.alphas = vec![0.003, 0.01, 0.03];
                c.frozen = frozen_learner(20);
                c.joint = policy(10);
                c.joint_classifiers.classifier_lr = 3e-4;
                c.expected = ReinforceConfig {
                    epochs: 4,
                    ..expected_policy()
                };
                c.expected_classifiers.classifier_steps = 25;
                c
            }
            "default" => {
                let mut c = base("synthetic-3", "synthetic");
                c.pretrain.synthetic_train = 8000;
                c.pretrain.synthetic_test = 2000;
                c.alphas = vec![0.01, 0.03, 0.1, 0.3];
                c.frozen = frozen_learner(12);
                c.joint = policy(12);
                c.joint_classifiers.classifier_lr = 1e-3;
                c
            }
            "fmnist" => {
                let mut c = base("fmnist-4", "fashion-mnist");
                // Fixed FLOPs budgets (fractions of the ResNet-20's cost),
                // met on validation by dual ascent on alpha; 0.18 is the
                // paper's operating point.
                c.alphas = vec![];
                c.budgets = vec![0.1, 0.18, 0.3, 0.5];
                c.seeds = vec![0, 1, 2];
                // 8100 images for the policies, 45900 for the classifiers.
                c.pretrain.agent_fraction = 0.15;
                c.frozen = frozen_learner(100);
                c.joint = policy(12);
                // The middle of the three classifier learning rates the
                // study sweeps (3e-6, 3e-5, 3e-4); at 3e-4 the cascade's
                // confidences run away within an epoch (docs/results/fmnist).
                c.joint_classifiers.classifier_lr = 3e-5;
                c.expected = ReinforceConfig {
                    epochs: 8,
                    ..expected_policy()
                };
                c.expected_classifiers.classifier_steps = 80;
                c.variants = frozen_diagnostics();
                c.variants.extend(ablations(&c));
                c.ablation_points = vec![0.18];
                c
            }
            "cifar10" => {
                let mut c = base("cifar10-resnet", "cifar10");
                c.alphas = vec![0.003, 0.01, 0.02, 0.05, 0.1, 0.3];
                c.seeds = vec![0, 1, 2];
                c.frozen = frozen_learner(20);
                c.joint = policy(20);
                c.joint_classifiers.classifier_lr = 1e-4;
                c.eval_batch = 256;
                c
            }
            other => {
                return Err(Error::Config(format!(
                    "unknown study preset '{other}' (known: {})",
                    STUDY_PRESETS.join(", ")
                )))
            }
        };
        Ok(cfg)
    }

    /// True when the study runs on the built-in synthetic data.
    pub fn is_synthetic(&self) -> bool {
        self.dataset == "synthetic"
    }

    /// The cascade preset, with the pretraining epoch override applied.
    pub fn cascade_preset(&self) -> Result<Preset> {
        let p = Preset::by_name(&self.cascade)?;
        if p.dataset != self.dataset {
            return Err(Error::Config(format!(
                "cascade preset '{}' is trained on '{}', but the study names data set '{}'",
                self.cascade, p.dataset, self.dataset
            )));
        }
        let e = &self.pretrain.epochs;
        match e.len() {
            0 => Ok(p),
            1 => Ok(p.with_epochs(e[0])),
            k if k == p.stages.len() => {
                let mut p = p;
                for (s, &n) in p.stages.iter_mut().zip(e) {
                    s.train.epochs = n;
                }
                p.validate()?;
                Ok(p)
            }
            k => Err(Error::Config(format!(
                "pretraining epochs: {k} values for the {} stages of '{}' ({})",
                p.stages.len(),
                self.cascade,
                give_one_or(p.stages.len())
            ))),
        }
    }

    /// The split the cascade is pretrained on and every agent uses.
    pub fn split_config(&self, preset: &Preset) -> SplitConfig {
        let p = &self.pretrain;
        if self.is_synthetic() {
            SplitConfig {
                val_fraction: preset.val_fraction,
                seed: p.seed,
                synthetic: SyntheticConfig {
                    n_train: p.synthetic_train,
                    n_test: p.synthetic_test,
                    ..Default::default()
                },
                ..Default::default()
            }
        } else {
            SplitConfig {
                val_fraction: preset.val_fraction,
                seed: p.seed,
                max_train: p.max_train,
                max_val: p.max_val,
                max_test: p.max_test,
                ..Default::default()
            }
        }
    }

    /// True in budget mode (a `budgets` sweep instead of `alphas`).
    pub fn budget_mode(&self) -> bool {
        !self.budgets.is_empty()
    }

    /// Refuses empty sweeps, bad alphas and budgets, duplicate entries and
    /// bad agent settings, naming the value.
    pub fn validate(&self) -> Result<()> {
        if self.study.is_empty() || self.preset.is_empty() {
            return Err(Error::Config("study and preset names must be set".into()));
        }
        if self.agents.is_empty() {
            return Err(Error::Config("no agents to sweep".into()));
        }
        if self.seeds.is_empty() {
            return Err(Error::Config("no seeds".into()));
        }
        match (self.alphas.is_empty(), self.budgets.is_empty()) {
            (true, true) => return Err(Error::Config("no alphas and no budgets to sweep".into())),
            (false, false) => {
                return Err(Error::Config(
                    "give either alphas or budgets, not both".into(),
                ))
            }
            _ => {}
        }
        for &a in self.alphas.iter().chain(&self.oracle_alphas) {
            if !(a == 0.0 || (ALPHA_RANGE.0..=ALPHA_RANGE.1).contains(&a)) {
                return Err(Error::Config(format!(
                    "alpha must be 0 or between {} and {} (loss per full-model cost), got {}",
                    num(ALPHA_RANGE.0),
                    num(ALPHA_RANGE.1),
                    num(a)
                )));
            }
        }
        for &b in &self.budgets {
            if !(BUDGET_RANGE.0..=BUDGET_RANGE.1).contains(&b) {
                return Err(Error::Config(format!(
                    "budget must be a fraction of the largest stage's cost between {} and {} \
                     (e.g. 0.25), got {}",
                    num(BUDGET_RANGE.0),
                    num(BUDGET_RANGE.1),
                    num(b)
                )));
            }
        }
        if !(self.budget_alpha0.is_finite() && self.budget_alpha0 >= 0.0) {
            return Err(Error::Config(format!(
                "budget_alpha0 must be finite and >= 0, got {}",
                self.budget_alpha0
            )));
        }
        let dup = |name: &str, v: &[f64]| -> Result<()> {
            for (i, x) in v.iter().enumerate() {
                if v[..i].contains(x) {
                    return Err(Error::Config(format!("{name}: {x} is listed twice")));
                }
            }
            Ok(())
        };
        dup("alphas", &self.alphas)?;
        dup("budgets", &self.budgets)?;
        for (i, s) in self.seeds.iter().enumerate() {
            if self.seeds[..i].contains(s) {
                return Err(Error::Config(format!("seeds: {s} is listed twice")));
            }
        }
        let f = self.pretrain.agent_fraction;
        if !(f.is_finite() && (0.0..1.0).contains(&f)) {
            return Err(Error::Config(format!(
                "agent_fraction must be in [0, 1), got {f}"
            )));
        }
        if self.agent_train_samples == Some(0) {
            return Err(Error::Config("agent_train_samples must be positive".into()));
        }
        if self.num_envs == 0 || self.eval_batch == 0 {
            return Err(Error::Config(
                "num_envs and eval_batch must be positive".into(),
            ));
        }
        if self.is_synthetic()
            && (self.pretrain.synthetic_train < 8 || self.pretrain.synthetic_test == 0)
        {
            return Err(Error::Config(format!(
                "synthetic data needs at least 8 training and 1 test image, got {} and {}",
                self.pretrain.synthetic_train, self.pretrain.synthetic_test
            )));
        }
        self.reward.validate()?;
        self.threshold.validate()?;
        self.frozen.validate()?;
        self.joint.validate()?;
        self.joint_classifiers.validate()?;
        self.expected.validate()?;
        self.expected_classifiers.validate()?;
        for (i, v) in self.variants.iter().enumerate() {
            let taken = AgentKind::ALL.iter().any(|a| a.name() == v.name)
                || v.name.starts_with("static-")
                || v.name.starts_with("oracle")
                || self.variants[..i].iter().any(|w| w.name == v.name);
            let ok_name = !v.name.is_empty()
                && v.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if taken || !ok_name {
                return Err(Error::Config(format!(
                    "variant name '{}' is taken or not of letters, digits, '-' and '_'",
                    v.name
                )));
            }
            match v.base {
                AgentKind::ReinforceJoint if v.expected.is_none() => {}
                AgentKind::ExpectedJoint if v.joint.is_none() => {}
                AgentKind::ReinforceFrozen
                    if v.joint.is_none()
                        && v.expected.is_none()
                        && v.start == JointStart::default() => {}
                _ => {
                    return Err(Error::Config(format!(
                        "variant '{}': base must be reinforce-joint (with `joint` settings), \
                         expected-joint (with `expected` settings) or reinforce-frozen (with \
                         `policy` settings only)",
                        v.name
                    )))
                }
            }
            if let Some(t) = &v.twin {
                if !self.variants.iter().any(|w| &w.name == t) {
                    return Err(Error::Config(format!(
                        "variant '{}': its twin '{t}' is not a variant of this study",
                        v.name
                    )));
                }
            }
            if let Some(j) = &v.joint {
                j.validate()?;
            }
            if let Some(p) = &v.policy {
                p.validate()?;
            }
            if let Some(e) = &v.expected {
                e.validate()?;
            }
        }
        let points = if self.budget_mode() {
            &self.budgets
        } else {
            &self.alphas
        };
        for a in &self.ablation_points {
            if !points.contains(a) {
                return Err(Error::Config(format!(
                    "ablation point {a} is not in the sweep {points:?}"
                )));
            }
        }
        Ok(())
    }

    /// The part of the config that a run folder's results depend on: all
    /// but the sweep (`agents`, `alphas`, `budgets`, `seeds`, `variants`,
    /// `ablation_points`) and the preset label. A variant's name stands
    /// for its settings: change them under a new name.
    pub fn identity(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            for k in [
                "agents",
                "alphas",
                "budgets",
                "seeds",
                "preset",
                "variants",
                "ablation_points",
            ] {
                m.remove(k);
            }
        }
        v
    }
}

/// The policy training of the joint agents in the presets: the head of
/// the frozen learner they start from ([`frozen_learner`]), the gentle
/// step a warm start needs (lr 1e-3, no entropy bonus); every epoch runs
/// and the best on validation is kept.
fn policy(epochs: usize) -> ReinforceConfig {
    ReinforceConfig {
        epochs,
        patience: 0,
        lr: 1e-3,
        entropy_coef: 0.0,
        ..linear_head(ReinforceConfig::mlp())
    }
}

/// `c` with a linear head on the confidence inputs, the functional form of
/// `ann`'s rule.
fn linear_head(c: ReinforceConfig) -> ReinforceConfig {
    ReinforceConfig {
        hidden: 0,
        inputs: PolicyInputs::Probs,
        ..c
    }
}

/// The frozen learner of the presets (`reinforce-frozen`): REINFORCE, the
/// slides' estimator on frozen classifiers, on a linear head over the
/// confidence inputs started from `ann`'s rule fitted on the same policy
/// images (under a budget, dual ascent starts from the alpha `ann` chose
/// on validation); lr 1e-3, no entropy bonus, every epoch run and the best
/// on validation kept (the start included). Chosen on validation among
/// the learners of [`frozen_diagnostics`] (docs/results/fmnist).
fn frozen_learner(epochs: usize) -> ReinforceConfig {
    ReinforceConfig::frozen_learner(epochs)
}

/// The previous frozen learner of the presets: REINFORCE on a tanh MLP
/// (hidden 32) over the standardised stage features and the confidence
/// inputs, from fresh weights, lr 1e-2, entropy bonus 0.01 annealed to 0.
fn previous_frozen_learner(epochs: usize) -> ReinforceConfig {
    ReinforceConfig {
        epochs,
        patience: 0,
        ..ReinforceConfig::mlp()
    }
}

/// Frozen learners that diagnose why the previous one fell behind `ann`
/// (one change each: training length, inputs, capacity, entropy bonus,
/// learning rate, start, estimator), swept at the ablation points.
pub fn frozen_diagnostics() -> Vec<Variant> {
    let prev = previous_frozen_learner(30);
    let v = |name: &str, description: &str, policy: ReinforceConfig| Variant {
        name: name.into(),
        base: AgentKind::ReinforceFrozen,
        description: description.into(),
        start: JointStart::Mixed,
        every_point: false,
        twin: None,
        policy: Some(policy),
        joint: None,
        expected: None,
    };
    let linear = linear_head(prev.clone());
    vec![
        v(
            "reinforce-frozen-prev",
            "the previous frozen learner: MLP on features and confidences, fresh, 30 epochs",
            prev.clone(),
        ),
        v(
            "reinforce-frozen-prev-300ep",
            "the previous learner trained for 300 epochs",
            ReinforceConfig {
                epochs: 300,
                ..prev.clone()
            },
        ),
        v(
            "reinforce-frozen-prev-probs",
            "the previous learner on the confidence inputs only (no features)",
            ReinforceConfig {
                inputs: PolicyInputs::Probs,
                ..prev.clone()
            },
        ),
        v(
            "reinforce-frozen-prev-noent",
            "the previous learner without the entropy bonus",
            ReinforceConfig {
                entropy_coef: 0.0,
                ..prev.clone()
            },
        ),
        v(
            "reinforce-frozen-prev-lr1e-3",
            "the previous learner at lr 1e-3",
            ReinforceConfig {
                lr: 1e-3,
                ..prev.clone()
            },
        ),
        v(
            "reinforce-frozen-linear",
            "a linear head on the confidence inputs, fresh, 30 epochs",
            linear.clone(),
        ),
        v(
            "reinforce-frozen-linear-300ep",
            "a linear head on the confidence inputs, fresh, 300 epochs",
            ReinforceConfig {
                epochs: 300,
                ..linear.clone()
            },
        ),
        v(
            "exact-pg-frozen-linear-300ep",
            "the exact policy gradient, linear head on the confidence inputs, fresh, 300 epochs",
            ReinforceConfig {
                epochs: 300,
                estimator: Estimator::Exact,
                ..linear
            },
        ),
        v(
            "exact-pg-frozen",
            "the exact policy gradient from ann's rule (the frozen learner's start and head)",
            ReinforceConfig {
                estimator: Estimator::Exact,
                ..frozen_learner(100)
            },
        ),
    ]
}

/// The arms of the joint comparison beside the two joint agents (both
/// cross-fitted, started "mixed" from the frozen learner): the classifier
/// learning rates the main arm is chosen among (on validation), the other
/// starts, the slides' own setting (every training image for both parts),
/// the routing cross-entropy of `expected-joint`, and every arm's `-lr0`
/// twin (the same policy updates, classifier learning rate 0; arms that
/// differ only in the classifiers' learning rate or loss share one). The
/// cheap and most telling first, so a study stopped early has them; the
/// main arm's twin runs at every point of the sweep.
pub fn ablations(c: &StudyConfig) -> Vec<Variant> {
    let v = |name: &str, base, description: &str, start| Variant {
        name: name.into(),
        base,
        description: description.into(),
        start,
        every_point: false,
        twin: None,
        policy: None,
        joint: None,
        expected: None,
    };
    let rj = |name: &str, description: &str, start, joint: JointConfig| Variant {
        joint: Some(joint),
        ..v(name, AgentKind::ReinforceJoint, description, start)
    };
    let ej = |name: &str, description: &str, start, expected: ExpectedJointConfig| Variant {
        expected: Some(expected),
        ..v(name, AgentKind::ExpectedJoint, description, start)
    };
    let joint = |lr: f64, images: JointImages| JointConfig {
        classifier_lr: lr,
        images,
        ..c.joint_classifiers.clone()
    };
    let expected = |lr: f64, objective: ClassifierObjective| ExpectedJointConfig {
        classifier_lr: lr,
        classifier_objective: objective,
        ..c.expected_classifiers.clone()
    };
    let (jlr, elr) = (
        c.joint_classifiers.classifier_lr,
        c.expected_classifiers.classifier_lr,
    );
    let cross = JointImages::CrossFitted;
    let exact = ClassifierObjective::ExactJ;
    use JointStart::{Ann, Cold, Mixed};
    vec![
        Variant {
            every_point: true,
            ..rj(
                "reinforce-joint-lr0",
                "reinforce-joint's twin: classifier learning rate 0",
                Mixed,
                joint(0.0, cross),
            )
        },
        Variant {
            twin: Some("reinforce-joint-lr0".into()),
            ..rj(
                "reinforce-joint-clr-low",
                "reinforce-joint, classifier learning rate a tenth of the default",
                Mixed,
                joint(jlr / 10.0, cross),
            )
        },
        Variant {
            twin: Some("reinforce-joint-lr0".into()),
            ..rj(
                "reinforce-joint-clr-high",
                "reinforce-joint, classifier learning rate ten times the default",
                Mixed,
                joint(jlr * 10.0, cross),
            )
        },
        Variant {
            twin: Some("reinforce-joint-lr0".into()),
            ..rj(
                "reinforce-joint-detached",
                "reinforce-joint, classifier gradients through log C_k(yhat|x) only (the policy's inputs detached; twin: reinforce-joint-lr0)",
                Mixed,
                JointConfig {
                    detach_inputs: true,
                    ..joint(jlr, cross)
                },
            )
        },
        Variant {
            twin: Some("reinforce-joint-lr0".into()),
            ..rj(
                "reinforce-joint-recal",
                "reinforce-joint, the stage temperatures refitted on D_P after every epoch (twin: reinforce-joint-lr0)",
                Mixed,
                JointConfig {
                    recalibrate: true,
                    ..joint(jlr, cross)
                },
            )
        },
        Variant {
            every_point: true,
            ..ej(
                "expected-joint-lr0",
                "expected-joint's twin: classifier learning rate 0",
                Mixed,
                expected(0.0, exact),
            )
        },
        rj(
            "reinforce-joint-ann",
            "reinforce-joint started from ann's rule",
            Ann,
            joint(jlr, cross),
        ),
        rj(
            "reinforce-joint-ann-lr0",
            "reinforce-joint-ann's twin",
            Ann,
            joint(0.0, cross),
        ),
        rj(
            "reinforce-joint-cold",
            "reinforce-joint from a fresh policy",
            Cold,
            joint(jlr, cross),
        ),
        rj(
            "reinforce-joint-cold-lr0",
            "reinforce-joint-cold's twin",
            Cold,
            joint(0.0, cross),
        ),
        Variant {
            twin: Some("expected-joint-lr0".into()),
            ..ej(
                "expected-joint-routing-ce",
                "expected-joint, classifiers on the routing-weighted cross-entropy (twin: expected-joint-lr0)",
                Mixed,
                expected(elr, ClassifierObjective::RoutingCe),
            )
        },
        Variant {
            twin: Some("expected-joint-lr0".into()),
            ..ej(
                "expected-joint-clr-low",
                "expected-joint, classifier learning rate a tenth of the default",
                Mixed,
                expected(elr / 10.0, exact),
            )
        },
        Variant {
            twin: Some("expected-joint-lr0".into()),
            ..ej(
                "expected-joint-clr-high",
                "expected-joint, classifier learning rate ten times the default",
                Mixed,
                expected(elr * 10.0, exact),
            )
        },
        rj(
            "reinforce-joint-pooled",
            "the slides' setting: both parts on every training image (D_C and D_P)",
            Mixed,
            joint(jlr, JointImages::Pooled),
        ),
        rj(
            "reinforce-joint-pooled-lr0",
            "reinforce-joint-pooled's twin",
            Mixed,
            joint(0.0, JointImages::Pooled),
        ),
        ej(
            "expected-joint-ann",
            "expected-joint started from ann's rule",
            Ann,
            expected(elr, exact),
        ),
        ej(
            "expected-joint-ann-lr0",
            "expected-joint-ann's twin",
            Ann,
            expected(0.0, exact),
        ),
        ej(
            "expected-joint-cold",
            "expected-joint from a fresh policy",
            Cold,
            expected(elr, exact),
        ),
        ej(
            "expected-joint-cold-lr0",
            "expected-joint-cold's twin",
            Cold,
            expected(0.0, exact),
        ),
    ]
}

/// The policy of `expected-joint`: 10 rounds, all run, the best on
/// validation kept; no entropy bonus (the gradient is exact, nothing to
/// explore).
fn expected_policy() -> ReinforceConfig {
    ReinforceConfig {
        epochs: 10,
        patience: 0,
        entropy_coef: 0.0,
        ..linear_head(ReinforceConfig::mlp())
    }
}

/// The `quick` preset: synthetic data, small, well under a minute on two cores.
fn quick(mut c: StudyConfig) -> StudyConfig {
    c.pretrain.synthetic_train = 4000;
    c.pretrain.synthetic_test = 1000;
    c.alphas = vec![0.01, 0.05, 0.2];
    c.frozen = frozen_learner(10);
    c.joint = policy(10);
    c.joint_classifiers.classifier_lr = 1e-3;
    c.expected = ReinforceConfig {
        epochs: 4,
        ..expected_policy()
    };
    c.expected_classifiers.classifier_steps = 20;
    c.expected_classifiers.classifier_batch = 64;
    c.variants = ablations(&c);
    c.ablation_points = vec![0.05];
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_quick_is_synthetic() {
        for name in STUDY_PRESETS {
            let c = StudyConfig::preset("joint_vs_frozen", name, None).unwrap();
            c.validate().unwrap();
            c.cascade_preset().unwrap();
        }
        let q = StudyConfig::preset("joint_vs_frozen", "quick", None).unwrap();
        assert!(q.is_synthetic());
        let e = StudyConfig::preset("joint_vs_frozen", "imagenet", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("imagenet") && e.contains("quick"), "{e}");
    }

    #[test]
    fn a_twin_must_be_a_variant_and_the_main_twin_runs_everywhere() {
        let mut c = StudyConfig::preset("joint_vs_frozen", "fmnist", None).unwrap();
        let lr0 = c
            .variants
            .iter()
            .find(|v| v.name == "reinforce-joint-lr0")
            .unwrap();
        assert!(lr0.every_point);
        assert_eq!(lr0.joint.as_ref().unwrap().classifier_lr, 0.0);
        let low = c
            .variants
            .iter_mut()
            .find(|v| v.name == "reinforce-joint-clr-low")
            .unwrap();
        assert_eq!(low.twin.as_deref(), Some("reinforce-joint-lr0"));
        low.twin = Some("no-such-arm".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("no-such-arm") && e.contains("twin"), "{e}");
    }

    #[test]
    fn log_grid_is_rounded_and_spans_the_range() {
        assert_eq!(log_grid(0.01, 1.0, 3), vec![0.01, 0.1, 1.0]);
        assert_eq!(log_grid(0.5, 2.0, 1), vec![0.5]);
    }

    #[test]
    fn validation_names_the_bad_value() {
        let mut c = StudyConfig::preset("joint_vs_frozen", "quick", None).unwrap();
        c.alphas = vec![0.1, -1.0];
        assert!(c.validate().unwrap_err().to_string().contains("-1"));
        c.alphas = vec![0.1, 0.1];
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
        c.alphas = vec![0.1];
        c.budgets = vec![0.3];
        assert!(c.validate().unwrap_err().to_string().contains("not both"));
        // Out-of-range values are refused before any work, named briefly.
        c.budgets = vec![];
        for bad in [1e308, 1e-300, f64::NAN, f64::INFINITY] {
            c.alphas = vec![bad];
            let e = c.validate().unwrap_err().to_string();
            assert!(
                e.contains("alpha must be 0 or between") && e.len() < 200,
                "{e}"
            );
        }
        c.alphas = vec![0.0, 1e-9, 0.05, 1e4];
        c.validate().unwrap();
        c.alphas = vec![];
        for bad in [1e300, 0.0, -0.1, 1e-7] {
            c.budgets = vec![bad];
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("budget must be") && e.len() < 200, "{e}");
        }
    }

    #[test]
    fn a_named_data_folder_without_the_data_is_an_error() {
        let err = StudyConfig::preset(
            "joint_vs_frozen",
            "default",
            Some(Path::new("/no/such/dir")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("fashion-mnist") && err.contains("/no/such/dir"),
            "{err}"
        );
    }

    #[test]
    fn identity_ignores_the_sweep() {
        let a = StudyConfig::preset("joint_vs_frozen", "quick", None).unwrap();
        let mut b = a.clone();
        b.alphas.push(0.7);
        b.seeds.push(9);
        assert_eq!(a.identity(), b.identity());
        b.frozen.epochs += 1;
        assert_ne!(a.identity(), b.identity());
    }
}
