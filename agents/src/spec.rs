//! [`AgentSpec`]: one agent's name and settings in one value, and
//! [`train`], the one place an agent is built from its spec and fitted.
//!
//! `cascade train`, the studies' work units and the agents on traces
//! ([`crate::fit_on_traces`], the Python package) all build a spec and
//! call [`train`]; the spec is stored in the agent's `agent.json`
//! ([`crate::AgentManifest::spec`]).
//!
//! A new agent is its file (an [`crate::Agent`] implementation), one
//! variant here, one in [`AgentKind`] and its arms in the exhaustive
//! matches below; the compiler finds each of them.

use cascade_env::StageBackend;
use cascade_rl::cascade::Cascade;
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, TrainData, TrainOptions, TrainSummary};
use crate::backward::{BackwardAgent, BackwardConfig};
use crate::error::{Error, Result};
use crate::expected::{ExpectedJointConfig, JointSplits};
use crate::joint::JointConfig;
use crate::kind::AgentKind;
use crate::oracle::OracleAgent;
use crate::reinforce::{ReinforceAgent, ReinforceConfig};
use crate::static_k::StaticAgent;
use crate::threshold::{Confidence, ThresholdAgent, ThresholdConfig};

/// An agent and its settings. Serialized with its name as the tag
/// `agent` (`{"agent": "ann", ...settings}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "agent", rename_all = "kebab-case")]
pub enum AgentSpec {
    /// Always stops at stage `stage` (1-based: `static-1` is the first).
    Static {
        /// The stage, 1-based.
        stage: usize,
    },
    /// First stage whose argmax is right (reads the label; the bound).
    Oracle,
    /// One confidence threshold, chosen on validation.
    Threshold(ThresholdConfig),
    /// One threshold per stage (its `per_stage` is set).
    ThresholdPerStage(ThresholdConfig),
    /// A threshold on one minus the normalised entropy (its `confidence`
    /// is set).
    ThresholdEntropy(ThresholdConfig),
    /// Least-squares optimal stopping from the last stage back.
    BackwardInduction(BackwardConfig),
    /// ANN's exits (Bolukbasi et al. 2017).
    Ann(BackwardConfig),
    /// A policy trained on the frozen classifiers' outputs.
    ReinforceFrozen(ReinforceConfig),
    /// REINFORCE over the policy and the classifiers.
    ReinforceJoint(JointSpec<JointConfig>),
    /// The exact expected objective over the policy and the classifiers.
    ExpectedJoint(JointSpec<ExpectedJointConfig>),
}

/// The settings of a joint agent: its policy's training, its classifiers'
/// side and where its policy starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JointSpec<C> {
    /// The policy's training.
    pub policy: ReinforceConfig,
    /// The classifiers' side.
    pub classifiers: C,
    /// Where the policy starts.
    #[serde(default)]
    pub start: JointStart,
}

/// Where the policy of a joint agent starts (the classifiers always start
/// from the pretrained cascade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JointStart {
    /// "Mixed", after Kubaty et al. (ICML 2025): backbone first, then
    /// joint. The frozen learner's policy at the same point and seed
    /// (trained on the pretrained classifiers) and, under a budget, the
    /// alpha its dual ascent reached: [`JointInputs::start`].
    #[default]
    Mixed,
    /// Cold: a fresh policy (and, under a budget, the first alpha).
    Cold,
    /// `ann`'s rule fitted on the policy images, copied exactly into the
    /// linear head, and the alpha `ann` chose on validation.
    Ann,
}

/// The family of an agent (the `kind` column of `results.csv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// `static-K`.
    Static,
    /// The label-aware oracle.
    Oracle,
    /// The threshold rules.
    Threshold,
    /// Backward induction and `ann`.
    Backward,
    /// REINFORCE, frozen or joint.
    Reinforce,
    /// `expected-joint`.
    Expected,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 6] = [
        Family::Static,
        Family::Oracle,
        Family::Threshold,
        Family::Backward,
        Family::Reinforce,
        Family::Expected,
    ];

    /// The name in `results.csv`.
    pub const fn name(self) -> &'static str {
        match self {
            Family::Static => "static",
            Family::Oracle => "oracle",
            Family::Threshold => "threshold",
            Family::Backward => "backward",
            Family::Reinforce => "reinforce",
            Family::Expected => "expected",
        }
    }

    /// Fitted on recorded outputs without a seed (one row per point).
    pub const fn seedless(self) -> bool {
        matches!(
            self,
            Family::Static | Family::Oracle | Family::Threshold | Family::Backward
        )
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Family {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| Error::Config(format!("unknown agent family '{s}'")))
    }
}

impl AgentSpec {
    /// The kind's spec with its default settings (`static-K` and `oracle`
    /// are not kinds: [`AgentSpec::from_name`]).
    pub fn of_kind(kind: AgentKind) -> Self {
        match kind {
            AgentKind::Threshold => AgentSpec::Threshold(ThresholdConfig::default()),
            AgentKind::ThresholdPerStage => AgentSpec::ThresholdPerStage(ThresholdConfig {
                per_stage: true,
                ..Default::default()
            }),
            AgentKind::ThresholdEntropy => AgentSpec::ThresholdEntropy(ThresholdConfig {
                confidence: Confidence::Entropy,
                ..Default::default()
            }),
            AgentKind::BackwardInduction => {
                AgentSpec::BackwardInduction(BackwardConfig::backward_induction())
            }
            AgentKind::Ann => AgentSpec::Ann(BackwardConfig::ann()),
            AgentKind::ReinforceFrozen => AgentSpec::ReinforceFrozen(ReinforceConfig::default()),
            AgentKind::ReinforceJoint => AgentSpec::ReinforceJoint(JointSpec {
                policy: ReinforceConfig::default(),
                classifiers: JointConfig::default(),
                start: JointStart::Mixed,
            }),
            AgentKind::ExpectedJoint => AgentSpec::ExpectedJoint(JointSpec {
                policy: ReinforceConfig::default(),
                classifiers: ExpectedJointConfig::default(),
                start: JointStart::Mixed,
            }),
        }
    }

    /// The spec of a name with default settings: a kind's name or alias,
    /// `static-K` or `oracle`.
    pub fn from_name(name: &str) -> Result<Self> {
        let name = name.trim();
        if name == "oracle" {
            return Ok(AgentSpec::Oracle);
        }
        if let Some(k) = name.strip_prefix("static-") {
            return match k.parse::<usize>() {
                Ok(stage) if stage >= 1 => Ok(AgentSpec::Static { stage }),
                _ => Err(Error::Config(format!(
                    "'{name}' is not a static agent name (static-1, static-2, ...)"
                ))),
            };
        }
        name.parse::<AgentKind>().map(AgentSpec::of_kind)
    }

    /// The swept kind (`None` for `static-K` and `oracle`, which are
    /// evaluated beside the sweep, not swept).
    pub const fn kind(&self) -> Option<AgentKind> {
        Some(match self {
            AgentSpec::Static { .. } | AgentSpec::Oracle => return None,
            AgentSpec::Threshold(_) => AgentKind::Threshold,
            AgentSpec::ThresholdPerStage(_) => AgentKind::ThresholdPerStage,
            AgentSpec::ThresholdEntropy(_) => AgentKind::ThresholdEntropy,
            AgentSpec::BackwardInduction(_) => AgentKind::BackwardInduction,
            AgentSpec::Ann(_) => AgentKind::Ann,
            AgentSpec::ReinforceFrozen(_) => AgentKind::ReinforceFrozen,
            AgentSpec::ReinforceJoint(_) => AgentKind::ReinforceJoint,
            AgentSpec::ExpectedJoint(_) => AgentKind::ExpectedJoint,
        })
    }

    /// The name in results, on the command line and in agent folders.
    pub fn name(&self) -> String {
        match (self, self.kind()) {
            (AgentSpec::Static { stage }, _) => format!("static-{stage}"),
            (_, Some(k)) => k.name().to_string(),
            _ => "oracle".to_string(),
        }
    }

    /// The family.
    pub const fn family(&self) -> Family {
        match self.kind() {
            Some(k) => k.family(),
            None => match self {
                AgentSpec::Static { .. } => Family::Static,
                _ => Family::Oracle,
            },
        }
    }

    /// Whether it fine-tunes the classifiers.
    pub const fn joint(&self) -> bool {
        matches!(
            self,
            AgentSpec::ReinforceJoint(_) | AgentSpec::ExpectedJoint(_)
        )
    }

    /// Whether it learns with a seed and a training log (REINFORCE and
    /// the joint agents).
    pub const fn seeded(&self) -> bool {
        !self.family().seedless()
    }

    /// Where a joint agent's policy starts.
    pub fn joint_start(&self) -> Option<JointStart> {
        match self {
            AgentSpec::ReinforceJoint(j) => Some(j.start),
            AgentSpec::ExpectedJoint(j) => Some(j.start),
            _ => None,
        }
    }

    /// Refuses settings no training accepts.
    pub fn validate(&self) -> Result<()> {
        match self {
            AgentSpec::Static { stage } if *stage == 0 => Err(Error::Config(
                "static agent: stages count from 1 (static-1 is the first)".into(),
            )),
            AgentSpec::Static { .. } | AgentSpec::Oracle => Ok(()),
            AgentSpec::Threshold(c)
            | AgentSpec::ThresholdPerStage(c)
            | AgentSpec::ThresholdEntropy(c) => c.validate(),
            AgentSpec::BackwardInduction(c) | AgentSpec::Ann(c) => c.validate(),
            AgentSpec::ReinforceFrozen(c) => c.validate(),
            AgentSpec::ReinforceJoint(j) => {
                j.policy.validate()?;
                j.classifiers.validate()
            }
            AgentSpec::ExpectedJoint(j) => {
                j.policy.validate()?;
                j.classifiers.validate()
            }
        }
    }
}

/// What the joint agents train on besides the recorded outputs.
pub struct JointInputs<'a> {
    /// The pretrained classifiers, owned: the agent fine-tunes and keeps
    /// them.
    pub cascade: Cascade,
    /// The images each part learns from and selects on.
    pub splits: JointSplits<'a>,
    /// The [`JointStart::Mixed`] start: a frozen agent's policy and, under
    /// a budget, the alpha its dual ascent reached (the other starts need
    /// none).
    pub start: Option<(ReinforceAgent, f64)>,
}

/// The data an agent trains on.
pub struct TrainInputs<'a> {
    /// Stage outputs of the policy's training split and of the validation
    /// split (recorded or live).
    pub data: TrainData<'a>,
    /// The classifiers and images of joint training (joint specs only).
    pub joint: Option<JointInputs<'a>>,
}

/// Builds the agent `spec` describes for the cascade of `inputs` and fits
/// it (a no-op for `static-K` and `oracle`), selecting on validation.
pub fn train(
    spec: &AgentSpec,
    inputs: TrainInputs<'_>,
    opts: &TrainOptions,
) -> Result<(Box<dyn Agent>, TrainSummary)> {
    spec.validate()?;
    let TrainInputs { data, joint } = inputs;
    let k = data.val.num_stages();
    let dims = data.val.feature_dims().to_vec();
    let classes = data.val.num_classes();
    let fit = |mut agent: Box<dyn Agent>, data: TrainData<'_>| -> Result<_> {
        let summary = agent.train(data, opts)?;
        Ok((agent, summary))
    };
    match spec {
        AgentSpec::Static { stage } => fit(Box::new(StaticAgent::new(stage - 1, k)?), data),
        AgentSpec::Oracle => fit(Box::new(OracleAgent::new(k)?), data),
        AgentSpec::Threshold(c) => fit(Box::new(ThresholdAgent::new(c.clone(), k)?), data),
        AgentSpec::ThresholdPerStage(c) => {
            let c = ThresholdConfig {
                per_stage: true,
                ..c.clone()
            };
            fit(Box::new(ThresholdAgent::new(c, k)?), data)
        }
        AgentSpec::ThresholdEntropy(c) => {
            let c = ThresholdConfig {
                confidence: Confidence::Entropy,
                ..c.clone()
            };
            fit(Box::new(ThresholdAgent::new(c, k)?), data)
        }
        AgentSpec::BackwardInduction(c) | AgentSpec::Ann(c) => fit(
            Box::new(BackwardAgent::new(c.clone(), &dims, classes)?),
            data,
        ),
        AgentSpec::ReinforceFrozen(c) => fit(
            Box::new(ReinforceAgent::new(c.clone(), &dims, classes)?),
            data,
        ),
        AgentSpec::ReinforceJoint(j) => {
            let (mut agent, inputs, opts) =
                joint_start(spec, &j.policy, j.start, data, joint, opts)?;
            let summary =
                agent.train_joint(inputs.cascade, inputs.splits, &j.classifiers, &opts)?;
            Ok((Box::new(agent), summary))
        }
        AgentSpec::ExpectedJoint(j) => {
            let (mut agent, inputs, opts) =
                joint_start(spec, &j.policy, j.start, data, joint, opts)?;
            let summary =
                agent.train_expected_joint(inputs.cascade, inputs.splits, &j.classifiers, &opts)?;
            Ok((Box::new(agent), summary))
        }
    }
}

/// A joint agent's policy at its start, with its training settings set,
/// and the options to train it with (under a budget, dual ascent goes on
/// from the start's alpha).
fn joint_start<'a>(
    spec: &AgentSpec,
    policy: &ReinforceConfig,
    start: JointStart,
    data: TrainData<'_>,
    joint: Option<JointInputs<'a>>,
    opts: &TrainOptions,
) -> Result<(ReinforceAgent, JointInputs<'a>, TrainOptions)> {
    let Some(mut inputs) = joint else {
        return Err(Error::Config(format!(
            "{} fine-tunes the classifiers: it needs the cascade and its images, not only \
             their recorded outputs",
            spec.name()
        )));
    };
    let (mut agent, alpha) = match start {
        JointStart::Cold => (
            ReinforceAgent::for_backend(policy.clone(), &*data.val)?,
            None,
        ),
        JointStart::Mixed => match inputs.start.take() {
            Some((agent, alpha)) => (agent, Some(alpha)),
            None => {
                return Err(Error::Config(format!(
                    "{}: the mixed start needs the frozen agent to start from",
                    spec.name()
                )))
            }
        },
        JointStart::Ann => {
            let mut a = ReinforceAgent::for_backend(policy.clone(), &*data.val)?;
            let alpha = a.start_as_ann(data, opts)?;
            (a, Some(alpha))
        }
    };
    agent.set_config(policy.clone())?;
    let mut opts = opts.clone();
    if let (Some(_), Some(alpha)) = (opts.budget, alpha) {
        opts.spec.alpha = alpha;
    }
    Ok((agent, inputs, opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_specs() {
        for k in AgentKind::ALL {
            let s = AgentSpec::of_kind(k);
            assert_eq!(s.kind(), Some(k));
            assert_eq!(s.name(), k.name());
            assert_eq!(AgentSpec::from_name(k.name()).unwrap(), s);
            assert_eq!(s.family(), k.family());
            assert_eq!(s.joint(), k.joint());
            assert_eq!(!s.seeded(), k.seedless());
            let json = serde_json::to_value(&s).unwrap();
            assert_eq!(json["agent"], k.name());
            let back: AgentSpec = serde_json::from_value(json).unwrap();
            assert_eq!(back, s);
        }
        assert_eq!(
            AgentSpec::from_name("static-3").unwrap(),
            AgentSpec::Static { stage: 3 }
        );
        assert_eq!(AgentSpec::Static { stage: 3 }.name(), "static-3");
        assert_eq!(AgentSpec::Oracle.family(), Family::Oracle);
        assert!(AgentSpec::from_name("static-0").is_err());
        assert!(AgentSpec::Static { stage: 0 }.validate().is_err());
        let e = AgentSpec::from_name("reinforce-warm")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown agent 'reinforce-warm'"), "{e}");
        for f in Family::ALL {
            assert_eq!(f.name().parse::<Family>().unwrap(), f);
        }
    }
}
