//! `static-k`: always stop at stage k.
//!
//! The static classifiers of the paper's table: every sample is classified
//! by `C_k`. Names are 1-based like the MDP (`static-1` is `C_1`); the
//! constructor takes the 0-based stage index like the rest of the code.
//!
//! Cost: under [`cascade_env::CostModel::Exit`] the reported cost of
//! `static-k` is `F_k / F_K`, the table's "FLOPs of C_k". Under the default
//! [`cascade_env::CostModel::Cumulative`] the env has run `C_1..C_k` to get
//! there, and the cost is `(F_1 + ... + F_k) / F_K`.

use std::path::Path;

use cascade_env::BatchObservation;
use serde::{Deserialize, Serialize};

use crate::agent::{write_manifest, Agent, AgentManifest, AgentState, TrainData, TrainOptions};
use crate::agent::{TrainSummary, AGENT_FORMAT_VERSION};
use crate::error::{Error, Result};

/// The saved state of a [`StaticAgent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticState {
    /// 0-based stage it stops at.
    pub stage_index: usize,
}

/// Always stops at one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticAgent {
    stage_index: usize,
    num_stages: usize,
}

impl StaticAgent {
    /// Stops at 0-based `stage_index` of a `num_stages`-stage cascade.
    pub fn new(stage_index: usize, num_stages: usize) -> Result<Self> {
        if stage_index >= num_stages {
            return Err(Error::Config(format!(
                "static agent: stage index {stage_index} (static-{}) out of range for a {num_stages}-stage cascade",
                stage_index + 1
            )));
        }
        Ok(StaticAgent {
            stage_index,
            num_stages,
        })
    }

    /// Parses `static-k` (1-based k) for a `num_stages`-stage cascade.
    pub fn from_name(name: &str, num_stages: usize) -> Result<Self> {
        let k = name
            .strip_prefix("static-")
            .and_then(|k| k.parse::<usize>().ok())
            .filter(|&k| k >= 1)
            .ok_or_else(|| {
                Error::Config(format!(
                    "'{name}' is not a static agent name (static-1 .. static-{num_stages})"
                ))
            })?;
        Self::new(k - 1, num_stages)
    }

    pub(crate) fn from_state(s: &StaticState, num_stages: usize) -> Result<Self> {
        Self::new(s.stage_index, num_stages)
    }

    /// The 0-based stage it stops at.
    pub fn stage_index(&self) -> usize {
        self.stage_index
    }

    fn prob(&self, stage: usize) -> f32 {
        if stage >= self.stage_index {
            1.0
        } else {
            0.0
        }
    }
}

impl Agent for StaticAgent {
    fn family(&self) -> crate::spec::Family {
        crate::spec::Family::Static
    }

    fn name(&self) -> String {
        format!("static-{}", self.stage_index + 1)
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "stage": self.stage_index + 1 })
    }

    fn num_stages(&self) -> usize {
        self.num_stages
    }

    fn policy_macs(&self) -> Vec<f64> {
        vec![0.0; self.num_stages]
    }

    fn stop_probs(
        &self,
        obs: &BatchObservation,
        _labels: Option<&[u32]>,
        out: &mut [f32],
    ) -> Result<()> {
        for t in 0..obs.num_stages() {
            let p = self.prob(t);
            for &i in obs.envs_at_stage(t) {
                out[i as usize] = p;
            }
        }
        Ok(())
    }

    /// Nothing to fit; reports the validation numbers.
    fn train(&mut self, data: TrainData<'_>, opts: &TrainOptions) -> Result<TrainSummary> {
        untrained_summary(self, data.val, opts)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        write_manifest(
            dir,
            &AgentManifest {
                format_version: AGENT_FORMAT_VERSION,
                name: self.name(),
                num_stages: self.num_stages,
                state: AgentState::Static(StaticState {
                    stage_index: self.stage_index,
                }),
                trained_with: None,
                spec: None,
            },
        )
    }
}

/// The summary of an agent without a training loop: its validation
/// numbers under `opts`.
pub(crate) fn untrained_summary(
    agent: &dyn Agent,
    val: &mut dyn cascade_env::StageBackend,
    opts: &TrainOptions,
) -> Result<TrainSummary> {
    opts.validate()?;
    let start = std::time::Instant::now();
    let cfg = crate::eval::EvalConfig {
        split: "val".into(),
        seed: opts.seed,
        num_envs: opts.num_envs,
        mode: crate::agent::ActMode::Greedy,
        count_policy_cost: opts.count_policy_cost,
    };
    let r = crate::eval::evaluate(agent, val, &opts.spec, &cfg)?;
    Ok(TrainSummary {
        agent: agent.name(),
        epochs_run: 0,
        best_epoch: 0,
        val_mean_reward: r.mean_reward,
        val_error: r.error,
        val_cost: r.cost_pct_mean / 100.0,
        alpha: opts.spec.alpha,
        budget: opts.budget,
        budget_met: opts
            .budget
            .map(|b| crate::training::meets_budget(r.cost_pct_mean / 100.0, b)),
        seconds: start.elapsed().as_secs_f64(),
        history: Vec::new(),
    })
}
