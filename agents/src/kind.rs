//! [`AgentKind`]: the agents the studies sweep, by name (the tag of their
//! [`crate::AgentSpec`]), with their labels in figures, families and
//! display order.
//!
//! A new agent is its file (an [`crate::Agent`] implementation), one
//! variant of [`crate::AgentSpec`] and one here; the studies, tables,
//! legends, the command line (through [`clap::ValueEnum`]) and the result
//! files read everything else from them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spec::Family;

/// An agent whose sweep the studies run (the static stages and the oracle
/// are evaluated beside them and are not kinds: they are not trained).
///
/// The serde and command-line names are the names in `results.csv`
/// (`threshold`, `reinforce-frozen`, ...); the command line also takes the
/// short aliases `frozen`, `joint`, `expected` and `backward`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum AgentKind {
    /// Confidence threshold calibrated on validation at each alpha / budget.
    Threshold,
    /// One threshold per stage, by coordinate search on validation.
    ThresholdPerStage,
    /// A threshold on one minus the normalised entropy (BranchyNet's exit).
    ThresholdEntropy,
    /// Least-squares optimal stopping fitted from the last stage back on
    /// the frozen classifiers' outputs (Longstaff-Schwartz).
    #[value(alias = "backward")]
    BackwardInduction,
    /// ANN's exits: weighted binary classification from the last stage
    /// back (Bolukbasi et al. 2017), on the frozen classifiers' outputs.
    Ann,
    /// REINFORCE policy on the frozen pretrained classifiers.
    #[value(alias = "frozen")]
    ReinforceFrozen,
    /// REINFORCE policy trained jointly with the classifiers (the slides'
    /// estimator, `yhat ~ C_k` in training), warm-started from the frozen
    /// agent at the same point and seed.
    #[value(alias = "joint")]
    ReinforceJoint,
    /// The exact expected objective, classifiers on their own training
    /// images and the policy on the policy images (cross-fitted),
    /// warm-started like the REINFORCE joint agent.
    #[value(alias = "expected")]
    ExpectedJoint,
}

impl AgentKind {
    /// Every kind, in display order (tables, legends, `results.csv`).
    pub const ALL: [AgentKind; 8] = [
        AgentKind::Threshold,
        AgentKind::ThresholdPerStage,
        AgentKind::ThresholdEntropy,
        AgentKind::BackwardInduction,
        AgentKind::Ann,
        AgentKind::ReinforceFrozen,
        AgentKind::ReinforceJoint,
        AgentKind::ExpectedJoint,
    ];

    /// The kind of result name `name` (the full names only).
    pub fn from_name(name: &str) -> Option<AgentKind> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The name in results, on the command line and in agent folders.
    pub const fn name(self) -> &'static str {
        match self {
            AgentKind::Threshold => "threshold",
            AgentKind::ThresholdPerStage => "threshold-per-stage",
            AgentKind::ThresholdEntropy => "threshold-entropy",
            AgentKind::BackwardInduction => "backward-induction",
            AgentKind::Ann => "ann",
            AgentKind::ReinforceFrozen => "reinforce-frozen",
            AgentKind::ReinforceJoint => "reinforce-joint",
            AgentKind::ExpectedJoint => "expected-joint",
        }
    }

    /// A label for figures and tables.
    pub const fn label(self) -> &'static str {
        match self {
            AgentKind::Threshold => "threshold",
            AgentKind::ThresholdPerStage => "per-stage thresholds",
            AgentKind::ThresholdEntropy => "entropy threshold",
            AgentKind::BackwardInduction => "backward induction",
            AgentKind::Ann => "ANN exits",
            AgentKind::ReinforceFrozen => "REINFORCE on frozen classifiers",
            AgentKind::ReinforceJoint => "REINFORCE joint",
            AgentKind::ExpectedJoint => "expected-joint",
        }
    }

    /// The family (the `kind` column of `results.csv`).
    pub const fn family(self) -> Family {
        match self {
            AgentKind::Threshold | AgentKind::ThresholdPerStage | AgentKind::ThresholdEntropy => {
                Family::Threshold
            }
            AgentKind::BackwardInduction | AgentKind::Ann => Family::Backward,
            AgentKind::ReinforceFrozen | AgentKind::ReinforceJoint => Family::Reinforce,
            AgentKind::ExpectedJoint => Family::Expected,
        }
    }

    /// Whether it is fitted on recorded outputs without a seed (one row per
    /// point).
    pub const fn seedless(self) -> bool {
        self.family().seedless()
    }

    /// Whether it fine-tunes the classifiers (and so is evaluated on its
    /// own cascade rather than the recorded outputs).
    pub const fn joint(self) -> bool {
        matches!(self, AgentKind::ReinforceJoint | AgentKind::ExpectedJoint)
    }

    /// Position in [`AgentKind::ALL`] (the display rank).
    pub fn rank(self) -> usize {
        Self::ALL
            .iter()
            .position(|&a| a == self)
            .unwrap_or(Self::ALL.len())
    }
}

impl std::fmt::Display for AgentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AgentKind {
    type Err = Error;

    /// A result name or a command-line alias (`frozen`, `joint`,
    /// `expected`, `backward`).
    fn from_str(s: &str) -> Result<Self> {
        <AgentKind as clap::ValueEnum>::from_str(s.trim(), false).map_err(|_| {
            let names: Vec<&str> = Self::ALL.iter().map(|a| a.name()).collect();
            Error::Config(format!(
                "unknown agent '{}' (expected one of {}, or frozen, joint, expected, backward)",
                s.trim(),
                names.join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn names_agree_across_serde_clap_and_results() {
        for a in AgentKind::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.name());
            let back: AgentKind = serde_json::from_value(serde_json::json!(a.name())).unwrap();
            assert_eq!(back, a);
            let pv = a.to_possible_value().unwrap();
            assert_eq!(pv.get_name(), a.name());
            assert_eq!(a.name().parse::<AgentKind>().unwrap(), a);
            assert_eq!(AgentKind::from_name(a.name()), Some(a));
            assert_eq!(AgentKind::ALL[a.rank()], a);
        }
        assert_eq!(AgentKind::value_variants().len(), AgentKind::ALL.len());
    }

    #[test]
    fn aliases_and_unknown_names() {
        assert_eq!(
            "frozen".parse::<AgentKind>().unwrap(),
            AgentKind::ReinforceFrozen
        );
        assert_eq!(
            "joint".parse::<AgentKind>().unwrap(),
            AgentKind::ReinforceJoint
        );
        assert_eq!(
            "expected".parse::<AgentKind>().unwrap(),
            AgentKind::ExpectedJoint
        );
        assert_eq!(
            " backward ".parse::<AgentKind>().unwrap(),
            AgentKind::BackwardInduction
        );
        let e = "reinforce-warm"
            .parse::<AgentKind>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown agent 'reinforce-warm'"), "{e}");
        assert!(e.contains("expected-joint"), "{e}");
        // Aliases are inputs only: no result carries them.
        assert_eq!(AgentKind::from_name("frozen"), None);
    }

    #[test]
    fn families_and_seeds() {
        let seedless: Vec<_> = AgentKind::ALL
            .into_iter()
            .filter(|a| a.seedless())
            .collect();
        assert_eq!(seedless.len(), 5);
        assert!(seedless.iter().all(|a| !a.joint()));
        assert_eq!(AgentKind::ReinforceJoint.family(), Family::Reinforce);
        assert_eq!(AgentKind::ExpectedJoint.family(), Family::Expected);
        assert_eq!(AgentKind::Ann.family(), Family::Backward);
    }
}
