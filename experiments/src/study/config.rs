//! The resolved configuration of a study ([`StudyConfig`], written as
//! `config.json` next to the results) and the study presets.

use cascade_agents::{AgentKind, AgentSpec};
use cascade_env::RewardSpec;
use cascade_rl::data::{SplitConfig, SyntheticConfig};
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

pub use by_kind::{ConfigByKind, Variant};
pub use cascade_agents::JointStart;

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

/// An agent of a study: a name and what it trains. A kind's own name
/// holds the kind's settings in the study (it runs at every point); any
/// other name is a variant of its kind (an ablation, a twin), run at the
/// [`StudyConfig::ablation_points`] unless `every_point`. A name stands for
/// its settings: a run folder refuses the same name with other settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyAgent {
    /// Its name in results and agent folders.
    pub name: String,
    /// What changed, one line (variants; the ablation table's label).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Runs at every point of the sweep (a kind's own settings, the main
    /// arm's twin), not only at the ablation points.
    #[serde(default)]
    pub every_point: bool,
    /// A joint arm's `-lr0` twin (the same policy updates, classifier
    /// learning rate 0), when it is not `{name}-lr0`: arms that differ
    /// only in the classifiers' learning rate or loss share one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<String>,
    /// What it trains.
    pub spec: AgentSpec,
}

impl StudyAgent {
    /// Its kind (the spec's; the specs of a study are of swept kinds).
    pub fn kind(&self) -> Option<AgentKind> {
        self.spec.kind()
    }

    /// Whether it holds its kind's own settings (named as the kind).
    pub fn is_main(&self) -> bool {
        self.kind().is_some_and(|k| k.name() == self.name)
    }
}

/// Everything a study's numbers depend on. Written, resolved, as
/// `config.json` in the run folder; a rerun in the same folder must agree
/// on everything but the sweep itself (`agents`, `alphas`, `budgets`,
/// `seeds`, `ablation_points`), which it may extend, and on the settings
/// of every agent name both list.
///
/// Reads the by-kind form too ([`ConfigByKind`]: the presets' form, and
/// what run folders made before named specs hold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
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
    /// The kinds swept over `alphas` (or `budgets`) and `seeds`: every
    /// agent in `specs` of these kinds runs.
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
    /// At most this many of the agents' training images (a seeded subset,
    /// the same for the frozen and the joint agent and every seed; `None`:
    /// all of the held-out share).
    pub agent_train_samples: Option<usize>,
    /// The agents: each kind's settings under its name, then the variants.
    pub specs: Vec<StudyAgent>,
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

impl Serialize for StudyConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        StudyConfig::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for StudyConfig {
    /// Named specs, or the by-kind form (it has a `frozen` block).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = serde_json::Value::deserialize(d)?;
        if v.get("frozen").is_some() {
            let c: ConfigByKind = serde_json::from_value(v).map_err(D::Error::custom)?;
            Ok(c.resolve())
        } else {
            StudyConfig::deserialize(v).map_err(D::Error::custom)
        }
    }
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
    /// The agent named `name`.
    pub fn agent(&self, name: &str) -> Option<&StudyAgent> {
        self.specs.iter().find(|a| a.name == name)
    }

    /// The settings of `kind` in this study (its agent under its own name).
    pub fn spec(&self, kind: AgentKind) -> Result<&AgentSpec> {
        self.agent(kind.name())
            .map(|a| &a.spec)
            .ok_or_else(|| Error::Config(format!("the study has no settings for the agent {kind}")))
    }

    /// The variants: every agent not named as its kind, in order.
    pub fn variants(&self) -> Vec<&StudyAgent> {
        self.specs.iter().filter(|a| !a.is_main()).collect()
    }
}

impl StudyConfig {
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
        for (i, a) in self.specs.iter().enumerate() {
            let ok_name = !a.name.is_empty()
                && a.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            let taken = AgentKind::ALL
                .iter()
                .any(|k| k.name() == a.name && a.kind() != Some(*k))
                || a.name.starts_with("static-")
                || a.name.starts_with("oracle")
                || self.specs[..i].iter().any(|w| w.name == a.name);
            if taken || !ok_name {
                return Err(Error::Config(format!(
                    "agent name '{}' is taken (another kind's name, static-K, oracle, or listed \
                     twice) or not of letters, digits, '-' and '_'",
                    a.name
                )));
            }
            if a.kind().is_none() {
                return Err(Error::Config(format!(
                    "agent '{}': static-K and the oracle run beside every study, not as its agents",
                    a.name
                )));
            }
            if let Some(t) = &a.twin {
                if self.agent(t).is_none_or(|w| w.is_main()) {
                    return Err(Error::Config(format!(
                        "agent '{}': its twin '{t}' is not a variant of this study",
                        a.name
                    )));
                }
            }
            a.spec
                .validate()
                .map_err(|e| Error::Config(format!("agent '{}': {e}", a.name)))?;
        }
        for &k in &self.agents {
            self.spec(k)?;
        }
        // The joint agents' mixed start is the frozen agent at the same
        // point and seed: it must be in the study.
        if self.specs.iter().any(|a| {
            a.spec.joint_start() == Some(JointStart::Mixed)
                && a.kind().is_some_and(|k| self.agents.contains(&k))
        }) {
            self.spec(AgentKind::ReinforceFrozen)?;
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
    /// but the sweep (`agents`, `alphas`, `budgets`, `seeds`,
    /// `ablation_points`), the preset label and the agents' settings, which
    /// are compared name by name ([`StudyConfig::changed_agents`]).
    pub fn identity(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            for k in [
                "agents",
                "alphas",
                "budgets",
                "seeds",
                "preset",
                "specs",
                "ablation_points",
            ] {
                m.remove(k);
            }
        }
        v
    }

    /// The agents `other` lists under a name of this config's with other
    /// settings (a name stands for its settings: change them under a new
    /// name).
    pub fn changed_agents(&self, other: &StudyConfig) -> Vec<String> {
        self.specs
            .iter()
            .filter(|a| other.agent(&a.name).is_some_and(|b| b.spec != a.spec))
            .map(|a| a.name.clone())
            .collect()
    }
}

mod by_kind;
mod presets;
pub use presets::{ablations, frozen_diagnostics};

#[cfg(test)]
mod tests;
