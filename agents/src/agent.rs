//! The [`Agent`] trait, the types every agent shares (acting mode, training
//! data and options, the per-epoch log record, the training summary), and
//! saving and loading agents by folder.
//!
//! # Saved agents
//!
//! An agent folder ([`crate::AgentFolder`] names its files) holds
//! `agent.json` (an [`AgentManifest`]: format version, name, stage count,
//! the kind-specific state, e.g. thresholds, and the [`crate::AgentSpec`]
//! it was trained from) and, for
//! learned policies, `policy.safetensors` (weights and input
//! normalisation). A jointly trained agent also holds `cascade/`, the
//! fine-tuned classifiers (a cascade-rl checkpoint folder), since its
//! observations come from them. [`load_agent`] reads any kind back.

use std::path::{Path, PathBuf};

use cascade_env::{Action, BatchObservation, EnvRng, Observation, RewardSpec, StageBackend};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use cascade_rl::error::num;

/// File name of the manifest in an agent folder.
pub const AGENT_FILE: &str = "agent.json";

/// Version of the `agent.json` layout; bumped on incompatible changes.
pub const AGENT_FORMAT_VERSION: u32 = 1;

/// How stop probabilities become actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActMode {
    /// Stop when the stop probability is at least 1/2 (deterministic; the
    /// default for evaluation).
    #[default]
    Greedy,
    /// Stop with the stop probability (one uniform draw per decision).
    Sample,
}

/// The stage outputs an agent learns from: the training split's (for
/// gradient steps) and the validation split's (for model selection, early
/// stopping, thresholds and budgets). The test split never enters training.
pub struct TrainData<'a> {
    /// Stage outputs of the training split.
    pub train: &'a mut dyn StageBackend,
    /// Stage outputs of the validation split.
    pub val: &'a mut dyn StageBackend,
}

/// The largest alpha an agent trains at (larger ones only make the
/// rewards overflow).
pub const MAX_ALPHA: f64 = 1e4;

/// The largest budget an agent accepts, as a fraction of the largest
/// stage's cost (a cumulative cascade costs at most K of them).
pub const MAX_BUDGET: f64 = 100.0;

/// Settings shared by every trainable agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainOptions {
    /// The reward. In budget mode its alpha is the starting multiplier.
    pub spec: RewardSpec,
    /// Cost budget B as a normalised cost (a fraction of the largest
    /// stage's cost, e.g. 0.25): the agent must meet validation mean cost
    /// <= B. REINFORCE adjusts alpha by dual ascent; the threshold agent
    /// picks the lowest-error threshold that meets B.
    pub budget: Option<f64>,
    /// The one seed of the run: initialisation, shuffling and sampling.
    pub seed: u64,
    /// Hide the progress bar.
    pub quiet: bool,
    /// Where to write the per-epoch log (CSV, rewritten atomically after
    /// every epoch); `None` keeps it in memory only. Not saved with the
    /// agent: the log may be written where the agent's folder is staged
    /// before it is swapped into place (it is `train_log.csv` there).
    #[serde(skip_serializing)]
    pub log_csv: Option<PathBuf>,
    /// Count the policy's own MACs into the cost (see
    /// [`cascade_env::CostModel::with_policy`]). Needs stage costs in MACs, as
    /// cascade-rl's cascades report them; turn it off for traces in other
    /// units (synthetic traces).
    pub count_policy_cost: bool,
    /// Sub-envs used for validation evaluations.
    pub num_envs: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            spec: RewardSpec::default(),
            budget: None,
            seed: 0,
            quiet: false,
            log_csv: None,
            count_policy_cost: true,
            num_envs: 256,
        }
    }
}

impl TrainOptions {
    /// Refuses a bad reward spec, a budget that is not positive and finite,
    /// and zero sub-envs.
    pub fn validate(&self) -> Result<()> {
        self.spec.validate()?;
        if self.spec.alpha > MAX_ALPHA {
            return Err(Error::Config(format!(
                "alpha {} is beyond {} (loss per full-model cost): every \
                 agent would stop at the first stage long before",
                num(self.spec.alpha),
                num(MAX_ALPHA)
            )));
        }
        if let Some(b) = self.budget {
            if !(b.is_finite() && b > 0.0 && b <= MAX_BUDGET) {
                return Err(Error::Config(format!(
                    "budget must be a positive normalised cost up to {MAX_BUDGET} \
                     (e.g. 0.25 = 25% of the largest stage), got {}",
                    num(b)
                )));
            }
        }
        if self.num_envs == 0 {
            return Err(Error::Config("num_envs must be positive".into()));
        }
        Ok(())
    }
}

/// One row of the per-epoch training log (`train_log.csv`). Column names
/// are fixed across agents: `charts/*` are the training episodes of the
/// epoch, `val/*` the validation evaluation after it (the early-stopping
/// criterion). Pretraining's log uses the same names for the same
/// quantities; both are documented in one table in
/// [`cascade_rl::checkpoint`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Optimisation steps so far.
    pub global_step: usize,
    /// Mean reward of the epoch's training episodes.
    #[serde(rename = "charts/mean_reward")]
    pub mean_reward: f64,
    /// Error of the epoch's training episodes.
    #[serde(rename = "charts/error")]
    pub error: f64,
    /// Mean normalised cost of the epoch's training episodes.
    #[serde(rename = "charts/cost")]
    pub cost: f64,
    /// Mean surrogate policy loss.
    #[serde(rename = "losses/policy")]
    pub policy_loss: f64,
    /// Mean classifier term `-log C_k(yhat|x) (R - b)` (0 when frozen).
    #[serde(rename = "losses/classifier")]
    pub classifier_loss: f64,
    /// Mean value-baseline loss (0 without a learned baseline).
    #[serde(rename = "losses/value")]
    pub value_loss: f64,
    /// Alpha used in the epoch.
    #[serde(rename = "charts/alpha")]
    pub alpha: f64,
    /// Training episodes per second.
    #[serde(rename = "charts/sps")]
    pub sps: f64,
    /// Validation mean reward (at the epoch's alpha).
    #[serde(rename = "val/mean_reward")]
    pub val_mean_reward: f64,
    /// Validation error.
    #[serde(rename = "val/error")]
    pub val_error: f64,
    /// Validation mean normalised cost.
    #[serde(rename = "val/cost")]
    pub val_cost: f64,
}

/// What training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// The agent's name.
    pub agent: String,
    /// Epochs run (0 for agents without a training loop).
    pub epochs_run: usize,
    /// The epoch whose policy was kept (0: the initial one / no epochs).
    pub best_epoch: usize,
    /// Validation mean reward of the kept agent, at `alpha`.
    pub val_mean_reward: f64,
    /// Validation error of the kept agent.
    pub val_error: f64,
    /// Validation mean normalised cost of the kept agent.
    pub val_cost: f64,
    /// The alpha the kept agent was selected at (the final multiplier in
    /// budget mode).
    pub alpha: f64,
    /// The budget, if any.
    pub budget: Option<f64>,
    /// Whether the kept agent meets the budget on validation.
    pub budget_met: Option<bool>,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Per-epoch log.
    pub history: Vec<EpochMetrics>,
}

/// A stopping agent: maps observations of the cascade MDP to stop
/// probabilities and actions.
///
/// The trait is object-safe: [`load_agent`] returns a `Box<dyn Agent>`, and
/// [`crate::evaluate`] takes `&dyn Agent`. Each agent is built from its own
/// serde config; [`Agent::train`] then fits it (a no-op for agents without
/// parameters).
///
/// Stop probabilities follow the MDP: `pi_t` for stages before the last,
/// and exactly 1 at the last stage (only `Stop` is legal there).
pub trait Agent: std::fmt::Debug {
    /// The agent's family (the `kind` of its evaluation reports and of
    /// `results.csv`).
    fn family(&self) -> crate::spec::Family;

    /// A short name for reports, e.g. `"static-2"`, `"threshold"`,
    /// `"reinforce-frozen"`.
    fn name(&self) -> String;

    /// The agent's parameters for reports (thresholds, configs).
    fn params(&self) -> serde_json::Value;

    /// Number of stages K the agent was built for.
    fn num_stages(&self) -> usize;

    /// Checks that the agent fits `backend` (stage count, feature widths,
    /// classes). The default checks the stage count.
    fn check_fits(&self, backend: &dyn StageBackend) -> Result<()> {
        if backend.num_stages() != self.num_stages() {
            return Err(Error::Mismatch {
                agent: self.name(),
                problem: format!(
                    "built for {} stages, the cascade has {}",
                    self.num_stages(),
                    backend.num_stages()
                ),
            });
        }
        Ok(())
    }

    /// True when the agent reads the true labels (the oracle); the
    /// evaluator then passes them, everyone else gets `None`.
    fn uses_labels(&self) -> bool {
        false
    }

    /// Multiply-accumulates of evaluating the stopping policy once at each
    /// stage, `[K]` (0 where no computation beyond the classifier's is
    /// needed). See [`cascade_env::CostModel::with_policy`].
    fn policy_macs(&self) -> Vec<f64>;

    /// Stop probabilities of every live sub-env of a batch; entries of
    /// done sub-envs are left unspecified.
    ///
    /// # Shapes
    /// `obs`: n sub-envs, `labels: [n]` (label of each sub-env's sample),
    /// `out: [n]`.
    fn stop_probs(
        &self,
        obs: &BatchObservation,
        labels: Option<&[u32]>,
        out: &mut [f32],
    ) -> Result<()>;

    /// The stop probability `pi_t` at one observation (`label`: the true
    /// label, read only by agents that [`Agent::uses_labels`]): the
    /// [`Agent::stop_probs`] of a batch of one
    /// ([`BatchObservation::from_observation`]).
    ///
    /// # Shapes
    /// `obs.features: [d_t]`, `obs.probs: [C]`.
    fn stop_prob(&self, obs: &Observation, label: Option<u32>) -> Result<f32> {
        let batch =
            BatchObservation::from_observation(obs, self.num_stages()).map_err(Error::from_env)?;
        let labels = label.map(|l| [l]);
        let mut out = [0f32];
        self.stop_probs(&batch, labels.as_ref().map(|l| &l[..]), &mut out)?;
        Ok(out[0])
    }

    /// Fits the agent as its config says, on the training split's stage
    /// outputs with model selection on the validation split's.
    fn train(&mut self, data: TrainData<'_>, opts: &TrainOptions) -> Result<TrainSummary>;

    /// Writes the agent to the folder `dir` (created if needed; files are
    /// written atomically).
    fn save(&self, dir: &Path) -> Result<()>;

    /// The classifiers the agent fine-tuned and must be evaluated with
    /// (joint agents); `None` (the default) for agents that use the cascade
    /// as recorded.
    fn classifiers(&self) -> Option<&cascade_rl::cascade::Cascade> {
        None
    }

    /// Actions of every live sub-env under `mode`; the stop probabilities
    /// used are left in `probs`. Sub-envs at the last stage get `Stop`;
    /// entries of done sub-envs are unspecified (the env ignores them).
    ///
    /// # Shapes
    /// `labels: [n]`, `probs: [n]`, `actions: [n]`.
    fn act_batch(
        &self,
        obs: &BatchObservation,
        labels: Option<&[u32]>,
        mode: ActMode,
        rng: &mut EnvRng,
        probs: &mut [f32],
        actions: &mut [Action],
    ) -> Result<()> {
        let n = obs.num_envs();
        if probs.len() != n || actions.len() != n {
            return Err(Error::Config(format!(
                "act_batch: {} probabilities and {} actions for {n} sub-envs",
                probs.len(),
                actions.len()
            )));
        }
        self.stop_probs(obs, labels, probs)?;
        let k = obs.num_stages();
        for t in 0..k {
            for &i in obs.envs_at_stage(t) {
                let i = i as usize;
                actions[i] = decide(probs[i], t + 1 == k, mode, rng);
            }
        }
        Ok(())
    }
}

/// The action for stop probability `p`: `Stop` at the last stage, else by
/// `mode`.
#[inline]
pub fn decide(p: f32, last: bool, mode: ActMode, rng: &mut EnvRng) -> Action {
    let stop = last
        || match mode {
            ActMode::Greedy => p >= 0.5,
            ActMode::Sample => rng.next_f64() < p as f64,
        };
    if stop {
        Action::Stop
    } else {
        Action::Forward
    }
}

/// The content of `agent.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentManifest {
    /// [`AGENT_FORMAT_VERSION`] at writing time.
    pub format_version: u32,
    /// The agent's name.
    pub name: String,
    /// Number of stages K.
    pub num_stages: usize,
    /// The kind-specific state.
    pub state: AgentState,
    /// How it was trained (absent for agents never trained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_with: Option<TrainOptions>,
    /// What was trained: the agent and its settings, as given to
    /// [`crate::train`] (absent in folders written before specs and for
    /// agents saved without training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<crate::spec::AgentSpec>,
}

/// The kind-specific part of an [`AgentManifest`], tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentState {
    /// [`crate::StaticAgent`].
    Static(crate::static_k::StaticState),
    /// [`crate::OracleAgent`].
    Oracle(crate::oracle::OracleState),
    /// [`crate::ThresholdAgent`].
    Threshold(crate::threshold::ThresholdState),
    /// [`crate::ReinforceAgent`].
    Reinforce(crate::reinforce::ReinforceState),
    /// [`crate::BackwardAgent`] (`backward-induction`, `ann`).
    Backward(crate::backward::BackwardState),
}

/// Writes `dir/agent.json` atomically.
pub fn write_manifest(dir: &Path, manifest: &AgentManifest) -> Result<()> {
    let path = crate::folder::AgentFolder::new(dir).manifest();
    let json = serde_json::to_vec_pretty(manifest).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    cascade_env::fsutil::write_atomic(&path, &json).map_err(|e| Error::io(&path, e))
}

/// Records `spec` in the manifest of the agent saved in `dir` (rewritten
/// atomically).
pub fn record_spec(dir: &Path, spec: &crate::spec::AgentSpec) -> Result<()> {
    let mut m = read_manifest(dir)?;
    m.spec = Some(spec.clone());
    write_manifest(dir, &m)
}

/// Reads and checks `dir/agent.json`.
pub fn read_manifest(dir: &Path) -> Result<AgentManifest> {
    let path = crate::folder::AgentFolder::new(dir).manifest();
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let version: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
    match version.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v == AGENT_FORMAT_VERSION as u64 => {}
        Some(v) => {
            return Err(Error::agent_file(
                &path,
                format!(
                    "format version {v} is not supported (this build reads {AGENT_FORMAT_VERSION})"
                ),
            ))
        }
        None => return Err(Error::agent_file(&path, "no integer `format_version`")),
    }
    let m: AgentManifest = serde_json::from_value(version).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    if m.num_stages == 0 {
        return Err(Error::agent_file(&path, "num_stages is 0"));
    }
    Ok(m)
}

/// Loads the agent saved in `dir`, whatever its kind.
pub fn load_agent(dir: &Path) -> Result<Box<dyn Agent>> {
    let m = read_manifest(dir)?;
    Ok(match m.state {
        AgentState::Static(s) => Box::new(crate::StaticAgent::from_state(&s, m.num_stages)?),
        AgentState::Oracle(_) => Box::new(crate::OracleAgent::new(m.num_stages)?),
        AgentState::Threshold(s) => Box::new(crate::ThresholdAgent::from_state(
            s,
            m.num_stages,
            m.trained_with,
            dir,
        )?),
        AgentState::Reinforce(s) => Box::new(crate::ReinforceAgent::from_state(
            s,
            m.num_stages,
            m.trained_with,
            dir,
        )?),
        AgentState::Backward(s) => Box::new(crate::BackwardAgent::from_state(
            s,
            m.num_stages,
            m.trained_with,
            dir,
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let mut rng = EnvRng::new(0);
        assert_eq!(decide(0.5, false, ActMode::Greedy, &mut rng), Action::Stop);
        assert_eq!(
            decide(0.49, false, ActMode::Greedy, &mut rng),
            Action::Forward
        );
        assert_eq!(decide(0.0, true, ActMode::Greedy, &mut rng), Action::Stop);
        assert_eq!(decide(0.0, true, ActMode::Sample, &mut rng), Action::Stop);
        assert_eq!(
            decide(0.0, false, ActMode::Sample, &mut rng),
            Action::Forward
        );
        assert_eq!(decide(1.0, false, ActMode::Sample, &mut rng), Action::Stop);
        let stops = (0..10_000)
            .filter(|_| decide(0.3, false, ActMode::Sample, &mut rng) == Action::Stop)
            .count();
        assert!((2_800..3_200).contains(&stops), "{stops}");
    }

    #[test]
    fn options_are_validated() {
        assert!(TrainOptions::default().validate().is_ok());
        for budget in [0.0, -1.0, f64::NAN] {
            let o = TrainOptions {
                budget: Some(budget),
                ..Default::default()
            };
            assert!(o.validate().unwrap_err().to_string().contains("budget"));
        }
        let o = TrainOptions {
            spec: RewardSpec::with_alpha(-1.0),
            ..Default::default()
        };
        assert!(o.validate().is_err());
        for (alpha, budget) in [(1e308, None), (0.1, Some(1e300))] {
            let o = TrainOptions {
                spec: RewardSpec::with_alpha(alpha),
                budget,
                ..Default::default()
            };
            let e = o.validate().unwrap_err().to_string();
            assert!(e.len() < 200, "{e}");
        }
    }

    #[test]
    fn manifests_of_other_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = AgentManifest {
            format_version: AGENT_FORMAT_VERSION,
            name: "static-1".into(),
            num_stages: 2,
            state: AgentState::Static(crate::static_k::StaticState { stage_index: 0 }),
            trained_with: None,
            spec: Some(crate::spec::AgentSpec::Static { stage: 1 }),
        };
        write_manifest(dir.path(), &m).unwrap();
        assert_eq!(read_manifest(dir.path()).unwrap(), m);
        let text = std::fs::read_to_string(dir.path().join(AGENT_FILE)).unwrap();
        std::fs::write(
            dir.path().join(AGENT_FILE),
            text.replace("\"format_version\": 1", "\"format_version\": 9"),
        )
        .unwrap();
        let err = load_agent(dir.path()).unwrap_err().to_string();
        assert!(err.contains("format version 9"), "{err}");
        let err = load_agent(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("agent.json"), "{err}");
    }
}
