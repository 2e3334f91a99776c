//! A study config by kind ([`ConfigByKind`]): one settings block per
//! agent kind (`threshold`, `frozen`, `joint`, ...), and the variants
//! (ablations, twins) as changes to them. The presets are written this way
//! and run folders made before named specs stored it; [`ConfigByKind::resolve`]
//! turns it into a [`StudyConfig`], whose agents are named specs.

use cascade_agents::{
    AgentKind, AgentSpec, BackwardConfig, Confidence, ExpectedJointConfig, JointConfig, JointSpec,
    JointStart, ReinforceConfig, ThresholdConfig,
};
use cascade_env::RewardSpec;
use serde::{Deserialize, Serialize};

use super::{PretrainConfig, StudyAgent, StudyConfig};

/// An ablation of a learned agent, by kind: its base kind's settings with
/// one setting changed (resolved into a [`StudyAgent`]).
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

impl Variant {
    /// What it trains: its base kind's spec in `cfg` with this variant's
    /// settings in place of the study's.
    pub fn spec(&self, cfg: &ConfigByKind) -> AgentSpec {
        match cfg.spec(self.base) {
            AgentSpec::ReinforceFrozen(c) => {
                AgentSpec::ReinforceFrozen(self.policy.clone().unwrap_or(c))
            }
            AgentSpec::ReinforceJoint(j) => AgentSpec::ReinforceJoint(JointSpec {
                policy: self.policy.clone().unwrap_or(j.policy),
                classifiers: self.joint.clone().unwrap_or(j.classifiers),
                start: self.start,
            }),
            AgentSpec::ExpectedJoint(j) => AgentSpec::ExpectedJoint(JointSpec {
                policy: self.policy.clone().unwrap_or(j.policy),
                classifiers: self.expected.clone().unwrap_or(j.classifiers),
                start: self.start,
            }),
            other => other,
        }
    }
}

/// A study config by kind: one settings block per kind, and the variants
/// as changes to them (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigByKind {
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
    #[serde(default = "super::presets::expected_policy")]
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

impl ConfigByKind {
    /// What the kind `kind` trains: its settings block.
    pub fn spec(&self, kind: AgentKind) -> AgentSpec {
        match kind {
            AgentKind::Threshold => AgentSpec::Threshold(self.threshold.clone()),
            AgentKind::ThresholdPerStage => AgentSpec::ThresholdPerStage(ThresholdConfig {
                per_stage: true,
                ..self.threshold.clone()
            }),
            AgentKind::ThresholdEntropy => AgentSpec::ThresholdEntropy(ThresholdConfig {
                confidence: Confidence::Entropy,
                ..self.threshold.clone()
            }),
            AgentKind::BackwardInduction => AgentSpec::BackwardInduction(self.backward.clone()),
            AgentKind::Ann => AgentSpec::Ann(self.ann.clone()),
            AgentKind::ReinforceFrozen => AgentSpec::ReinforceFrozen(self.frozen.clone()),
            AgentKind::ReinforceJoint => AgentSpec::ReinforceJoint(JointSpec {
                policy: self.joint.clone(),
                classifiers: self.joint_classifiers.clone(),
                start: JointStart::Mixed,
            }),
            AgentKind::ExpectedJoint => AgentSpec::ExpectedJoint(JointSpec {
                policy: self.expected.clone(),
                classifiers: self.expected_classifiers.clone(),
                start: JointStart::Mixed,
            }),
            // A kind with no settings block in this form takes its defaults.
            #[allow(unreachable_patterns)]
            other => AgentSpec::of_kind(other),
        }
    }
}

impl ConfigByKind {
    /// The study config: every kind with its settings block under its own
    /// name, then the variants in order.
    pub fn resolve(self) -> StudyConfig {
        let mut specs: Vec<StudyAgent> = AgentKind::ALL
            .into_iter()
            .map(|k| StudyAgent {
                name: k.name().to_string(),
                description: String::new(),
                every_point: true,
                twin: None,
                spec: self.spec(k),
            })
            .collect();
        specs.extend(self.variants.iter().map(|v| StudyAgent {
            name: v.name.clone(),
            description: v.description.clone(),
            every_point: v.every_point,
            twin: v.twin.clone(),
            spec: v.spec(&self),
        }));
        StudyConfig {
            study: self.study,
            preset: self.preset,
            cascade: self.cascade,
            dataset: self.dataset,
            pretrain: self.pretrain,
            agents: self.agents,
            alphas: self.alphas,
            budgets: self.budgets,
            budget_alpha0: self.budget_alpha0,
            seeds: self.seeds,
            reward: self.reward,
            count_policy_cost: self.count_policy_cost,
            agent_train_samples: self.agent_train_samples,
            specs,
            ablation_points: self.ablation_points,
            oracle_alphas: self.oracle_alphas,
            num_envs: self.num_envs,
            eval_batch: self.eval_batch,
        }
    }
}
