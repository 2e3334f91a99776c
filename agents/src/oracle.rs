//! `oracle`: stop at the first stage whose argmax prediction is right, or
//! at the last stage when none is.
//!
//! Not achievable (it reads the true label), it bounds every policy on the
//! error-versus-cost plane: no policy over the same classifiers has lower
//! error, and none reaches that error for less. It is the bound on every
//! Pareto plot.
//!
//! **Where the label comes from.** Observations carry no label. The
//! evaluator ([`crate::evaluate`]) wraps the stage backend and records,
//! each time a stage runs for a sub-env, the label of its sample
//! (`StageBackend::label`); it passes these to agents whose
//! [`Agent::uses_labels`] is true, and only to them. Called directly, the
//! oracle needs `label` / `labels` and refuses to act without them
//! ([`Error::NeedsLabels`]).
//!
//! With sampled predictions ([`cascade_env::Prediction::Sample`]) an argmax
//! that is right can still give a wrong draw; the oracle stops on the
//! argmax either way.

use std::path::Path;

use cascade_env::reward::argmax;
use cascade_env::BatchObservation;
use serde::{Deserialize, Serialize};

use crate::agent::{write_manifest, Agent, AgentManifest, AgentState, TrainData, TrainOptions};
use crate::agent::{TrainSummary, AGENT_FORMAT_VERSION};
use crate::error::{Error, Result};

/// The saved state of an [`OracleAgent`] (it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OracleState {}

/// Stops at the first stage whose argmax is the true label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OracleAgent {
    num_stages: usize,
}

impl OracleAgent {
    /// The oracle of a `num_stages`-stage cascade.
    pub fn new(num_stages: usize) -> Result<Self> {
        if num_stages == 0 {
            return Err(Error::Config("oracle: the cascade has no stages".into()));
        }
        Ok(OracleAgent { num_stages })
    }

    fn prob(&self, stage: usize, probs: &[f32], label: u32) -> f32 {
        if stage + 1 >= self.num_stages || argmax(probs) == label {
            1.0
        } else {
            0.0
        }
    }
}

impl Agent for OracleAgent {
    fn family(&self) -> crate::spec::Family {
        crate::spec::Family::Oracle
    }

    fn name(&self) -> String {
        "oracle".into()
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "rule": "first stage whose argmax is the true label" })
    }

    fn num_stages(&self) -> usize {
        self.num_stages
    }

    fn uses_labels(&self) -> bool {
        true
    }

    /// 0: the oracle is a bound, not a deployable policy.
    fn policy_macs(&self) -> Vec<f64> {
        vec![0.0; self.num_stages]
    }

    fn stop_probs(
        &self,
        obs: &BatchObservation,
        labels: Option<&[u32]>,
        out: &mut [f32],
    ) -> Result<()> {
        let labels = labels.ok_or_else(|| Error::NeedsLabels(self.name()))?;
        if labels.len() != obs.num_envs() {
            return Err(Error::Config(format!(
                "oracle: {} labels for {} sub-envs",
                labels.len(),
                obs.num_envs()
            )));
        }
        for t in 0..obs.num_stages() {
            for &i in obs.envs_at_stage(t) {
                let i = i as usize;
                out[i] = self.prob(t, obs.probs_of(i), labels[i]);
            }
        }
        Ok(())
    }

    /// Nothing to fit; reports the validation numbers.
    fn train(&mut self, data: TrainData<'_>, opts: &TrainOptions) -> Result<TrainSummary> {
        crate::static_k::untrained_summary(self, data.val, opts)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        write_manifest(
            dir,
            &AgentManifest {
                format_version: AGENT_FORMAT_VERSION,
                name: self.name(),
                num_stages: self.num_stages,
                state: AgentState::Oracle(OracleState {}),
                trained_with: None,
                spec: None,
            },
        )
    }
}
