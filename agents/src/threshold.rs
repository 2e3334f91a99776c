//! `threshold`: stop at the first stage whose top class probability
//! reaches tau (one tau shared by all stages, or one per stage).
//!
//! The classic confidence cascade. Training chooses tau on the VALIDATION
//! split (never test), over a grid of candidates, either
//!
//! - to maximise the mean reward at the spec's alpha (no budget), or
//! - to meet a cost budget B: among candidates with validation mean cost
//!   <= B the one with the lowest error (then the lowest cost); if none
//!   meets B, the cheapest, and the summary says the budget is not met.
//!
//! With `per_stage`, the shared best tau is refined by coordinate search:
//! sweep the stages, for each try every grid value while the others stay
//! fixed, keep strict improvements, until a sweep changes nothing (or
//! `max_sweeps`). Ties keep the earlier grid value. Every candidate is
//! scored by [`crate::evaluate`] through the env on a recording of the
//! validation split, so the scores are the env's rewards and costs.
//!
//! The stop rule needs only the top probability, which the classifier's
//! own argmax computes anyway: the policy adds no MACs.

use std::path::Path;
use std::time::Instant;

use cascade_env::BatchObservation;
use serde::{Deserialize, Serialize};

use crate::agent::{write_manifest, ActMode, Agent, AgentManifest, AgentState, TrainData};
use crate::agent::{TrainOptions, TrainSummary, AGENT_FORMAT_VERSION};
use crate::error::{Error, Result};
use crate::eval::{evaluate, record_split, EvalConfig};
use crate::training::{meets_budget, ValScore};

/// The threshold that never stops before the last stage (above every
/// probability).
pub const NEVER_STOP: f32 = 1.01;

/// A usable threshold: a probability, or [`NEVER_STOP`].
fn valid_tau(t: f32) -> bool {
    (0.0..=1.0).contains(&t) || t == NEVER_STOP
}

/// How thresholds are chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThresholdConfig {
    /// The candidate thresholds, in search order. A value above 1 means
    /// "never stop before the last stage".
    pub grid: Vec<f32>,
    /// One tau per stage (coordinate search) instead of one shared tau.
    pub per_stage: bool,
    /// Most coordinate-search sweeps over the stages.
    pub max_sweeps: usize,
    /// The confidence compared with the threshold.
    pub confidence: Confidence,
}

/// The confidence a threshold agent compares with its threshold; both lie
/// in `[0, 1]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// The top label probability.
    #[default]
    MaxProb,
    /// One minus the entropy of the label probabilities over its maximum
    /// `ln C` (BranchyNet's exit criterion, Teerapittayanon, McDanel and
    /// Kung, ICPR 2016, rescaled to `[0, 1]`).
    Entropy,
}

impl Confidence {
    /// The confidence of one probability row (`[C]`).
    #[inline]
    pub fn of(self, probs: &[f32]) -> f32 {
        match self {
            Confidence::MaxProb => probs.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            Confidence::Entropy => {
                if probs.len() < 2 {
                    return 1.0;
                }
                let h: f32 = probs
                    .iter()
                    .filter(|&&p| p > 0.0)
                    .map(|&p| -p * p.ln())
                    .sum();
                1.0 - h / (probs.len() as f32).ln()
            }
        }
    }
}

impl Default for ThresholdConfig {
    /// The grid 0.00, 0.01, ..., 1.00 and 1.01 (never stop early); shared tau.
    fn default() -> Self {
        let mut grid: Vec<f32> = (0..=100).map(|i| i as f32 / 100.0).collect();
        grid.push(NEVER_STOP);
        ThresholdConfig {
            grid,
            per_stage: false,
            max_sweeps: 3,
            confidence: Confidence::MaxProb,
        }
    }
}

impl ThresholdConfig {
    /// Refuses an empty grid, values that are neither probabilities nor
    /// [`NEVER_STOP`], and zero sweeps with `per_stage`.
    pub fn validate(&self) -> Result<()> {
        if self.grid.is_empty() {
            return Err(Error::Config("threshold grid is empty".into()));
        }
        if let Some(t) = self.grid.iter().find(|t| !valid_tau(**t)) {
            return Err(Error::Config(format!(
                "threshold grid values must be probabilities in [0, 1] or {NEVER_STOP} \
                 (never stop early), got {t}"
            )));
        }
        if self.per_stage && self.max_sweeps == 0 {
            return Err(Error::Config(
                "threshold per_stage search needs max_sweeps >= 1".into(),
            ));
        }
        Ok(())
    }
}

/// The validation numbers of one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridPoint {
    /// The thresholds, `[K - 1]`.
    pub taus: Vec<f32>,
    /// Validation mean reward.
    pub mean_reward: f64,
    /// Validation error.
    pub error: f64,
    /// Validation mean normalised cost.
    pub cost: f64,
}

/// The saved state of a [`ThresholdAgent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdState {
    /// The search settings.
    pub config: ThresholdConfig,
    /// The thresholds of stages `0..K-1`, `[K - 1]`.
    pub taus: Vec<f32>,
    /// Every shared-tau candidate scored on validation, in grid order
    /// (empty if never trained).
    pub grid_scores: Vec<GridPoint>,
}

/// Stops once the stage's confidence (the top probability, or one minus
/// the normalised entropy) reaches the stage's threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdAgent {
    config: ThresholdConfig,
    taus: Vec<f32>,
    num_stages: usize,
    grid_scores: Vec<GridPoint>,
    trained_with: Option<TrainOptions>,
}

impl ThresholdAgent {
    /// An untrained agent (tau = 1.01 everywhere: run to the last stage)
    /// that [`Agent::train`] fits with `config`.
    pub fn new(config: ThresholdConfig, num_stages: usize) -> Result<Self> {
        config.validate()?;
        if num_stages == 0 {
            return Err(Error::Config("threshold: the cascade has no stages".into()));
        }
        Ok(ThresholdAgent {
            config,
            taus: vec![NEVER_STOP; num_stages - 1],
            num_stages,
            grid_scores: Vec::new(),
            trained_with: None,
        })
    }

    /// An agent with fixed thresholds: `taus` has one value per stage
    /// before the last (`[K - 1]`), or a single value shared by all.
    pub fn with_taus(taus: &[f32], num_stages: usize) -> Result<Self> {
        let mut a = Self::new(ThresholdConfig::default(), num_stages)?;
        a.set_taus(taus)?;
        Ok(a)
    }

    pub(crate) fn from_state(
        s: ThresholdState,
        num_stages: usize,
        trained_with: Option<TrainOptions>,
        dir: &Path,
    ) -> Result<Self> {
        let mut a =
            Self::new(s.config, num_stages).map_err(|e| Error::agent_file(dir, e.to_string()))?;
        a.set_taus(&s.taus)
            .map_err(|e| Error::agent_file(dir, e.to_string()))?;
        a.grid_scores = s.grid_scores;
        a.trained_with = trained_with;
        Ok(a)
    }

    fn set_taus(&mut self, taus: &[f32]) -> Result<()> {
        let k1 = self.num_stages - 1;
        if let Some(t) = taus.iter().find(|t| !valid_tau(**t)) {
            return Err(Error::Config(format!(
                "threshold {t} is neither a probability in [0, 1] nor {NEVER_STOP} (never stop early)"
            )));
        }
        self.taus = match taus.len() {
            1 => vec![taus[0]; k1],
            n if n == k1 => taus.to_vec(),
            n => {
                return Err(Error::Config(format!(
                    "{n} thresholds for a {}-stage cascade: {}",
                    self.num_stages,
                    cascade_rl::error::give_one_or(k1)
                )))
            }
        };
        Ok(())
    }

    /// The thresholds of stages `0..K-1`, `[K - 1]`.
    pub fn taus(&self) -> &[f32] {
        &self.taus
    }

    /// The search settings.
    pub fn config(&self) -> &ThresholdConfig {
        &self.config
    }

    /// Every shared-tau candidate's validation numbers, in grid order (the
    /// reported grid; empty before training).
    pub fn grid_scores(&self) -> &[GridPoint] {
        &self.grid_scores
    }

    #[inline]
    fn prob(&self, stage: usize, probs: &[f32]) -> f32 {
        if stage + 1 >= self.num_stages {
            return 1.0;
        }
        if self.config.confidence.of(probs) >= self.taus[stage] {
            1.0
        } else {
            0.0
        }
    }

    /// Scores the current thresholds on the recorded validation split.
    fn score(
        &self,
        val: &mut cascade_env::ReplayBackend,
        opts: &TrainOptions,
    ) -> Result<GridPoint> {
        let cfg = EvalConfig {
            split: "val".into(),
            seed: opts.seed,
            num_envs: opts.num_envs,
            mode: ActMode::Greedy,
            count_policy_cost: opts.count_policy_cost,
        };
        let r = evaluate(self, val, &opts.spec, &cfg)?;
        Ok(GridPoint {
            taus: self.taus.clone(),
            mean_reward: r.mean_reward,
            error: r.error,
            cost: r.cost_pct_mean / 100.0,
        })
    }
}

/// Whether candidate `a` beats the incumbent `b` (see
/// [`crate::training::better`]).
fn better(a: &GridPoint, b: &GridPoint, budget: Option<f64>) -> bool {
    let score = |p: &GridPoint| ValScore {
        mean_reward: p.mean_reward,
        error: p.error,
        cost: p.cost,
    };
    crate::training::better(&score(a), &score(b), budget)
}

impl Agent for ThresholdAgent {
    fn family(&self) -> crate::spec::Family {
        crate::spec::Family::Threshold
    }

    /// `threshold`, with `-entropy` for the entropy confidence and
    /// `-per-stage` for one threshold per stage.
    fn name(&self) -> String {
        let mut name = String::from("threshold");
        if self.config.confidence == Confidence::Entropy {
            name.push_str("-entropy");
        }
        if self.config.per_stage {
            name.push_str("-per-stage");
        }
        name
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "taus": self.taus,
            "per_stage": self.config.per_stage,
            "confidence": self.config.confidence,
            "grid_size": self.config.grid.len(),
            "objective": match self.trained_with.as_ref().and_then(|o| o.budget) {
                Some(b) => format!("lowest validation error at mean cost <= {b}"),
                None => "highest validation mean reward".to_string(),
            },
        })
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
            for &i in obs.envs_at_stage(t) {
                let i = i as usize;
                out[i] = self.prob(t, obs.probs_of(i));
            }
        }
        Ok(())
    }

    /// Chooses the thresholds on `data.val` (the training split is not
    /// used: there is nothing to fit on it).
    fn train(&mut self, data: TrainData<'_>, opts: &TrainOptions) -> Result<TrainSummary> {
        opts.validate()?;
        self.config.validate()?;
        self.check_fits(&*data.val)?;
        let start = Instant::now();
        let mut val = record_split(data.val, "val")?;
        let grid = self.config.grid.clone();

        // Shared tau over the whole grid.
        let mut scores = Vec::with_capacity(grid.len());
        let mut best: Option<GridPoint> = None;
        for &tau in &grid {
            self.taus.fill(tau);
            let p = self.score(&mut val, opts)?;
            if best.as_ref().is_none_or(|b| better(&p, b, opts.budget)) {
                best = Some(p.clone());
            }
            scores.push(p);
        }
        let mut best = best.ok_or_else(|| Error::Config("threshold grid is empty".into()))?;

        // Per-stage refinement by coordinate search.
        if self.config.per_stage && self.num_stages > 2 {
            for _ in 0..self.config.max_sweeps {
                let mut changed = false;
                for t in 0..self.num_stages - 1 {
                    for &tau in &grid {
                        if tau == best.taus[t] {
                            continue;
                        }
                        self.taus.clone_from(&best.taus);
                        self.taus[t] = tau;
                        let p = self.score(&mut val, opts)?;
                        if better(&p, &best, opts.budget) {
                            best = p;
                            changed = true;
                        }
                    }
                }
                if !changed {
                    break;
                }
            }
        }
        self.taus.clone_from(&best.taus);
        self.grid_scores = scores;
        self.trained_with = Some(opts.clone());
        Ok(TrainSummary {
            agent: self.name(),
            epochs_run: 0,
            best_epoch: 0,
            val_mean_reward: best.mean_reward,
            val_error: best.error,
            val_cost: best.cost,
            alpha: opts.spec.alpha,
            budget: opts.budget,
            budget_met: opts.budget.map(|b| meets_budget(best.cost, b)),
            seconds: start.elapsed().as_secs_f64(),
            history: Vec::new(),
        })
    }

    fn save(&self, dir: &Path) -> Result<()> {
        write_manifest(
            dir,
            &AgentManifest {
                format_version: AGENT_FORMAT_VERSION,
                name: self.name(),
                num_stages: self.num_stages,
                state: AgentState::Threshold(ThresholdState {
                    config: self.config.clone(),
                    taus: self.taus.clone(),
                    grid_scores: self.grid_scores.clone(),
                }),
                trained_with: self.trained_with.clone(),
                spec: None,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_env::Observation;

    #[test]
    fn stop_rule_and_bad_settings() {
        let a = ThresholdAgent::with_taus(&[0.6, 0.8], 3).unwrap();
        let obs = |stage, top: f32| Observation {
            stage,
            features: vec![],
            probs: vec![top, 1.0 - top],
            cost_so_far: 0.0,
        };
        assert_eq!(a.stop_prob(&obs(0, 0.6), None).unwrap(), 1.0);
        assert_eq!(a.stop_prob(&obs(0, 0.59), None).unwrap(), 0.0);
        assert_eq!(a.stop_prob(&obs(1, 0.7), None).unwrap(), 0.0);
        assert_eq!(a.stop_prob(&obs(2, 0.5), None).unwrap(), 1.0);
        assert_eq!(
            ThresholdAgent::with_taus(&[0.9], 3).unwrap().taus(),
            &[0.9, 0.9]
        );
        assert!(ThresholdAgent::with_taus(&[0.9, 0.9, 0.9], 3).is_err());
        assert!(ThresholdAgent::with_taus(&[f32::NAN], 3).is_err());
        for bad in [-0.01, 1.005, 2.0] {
            let err = ThresholdAgent::with_taus(&[bad], 3)
                .unwrap_err()
                .to_string();
            assert!(err.contains("neither a probability"), "{err}");
        }
        assert!(ThresholdAgent::with_taus(&[0.0, NEVER_STOP], 3).is_ok());
        // The entropy confidence: 1 for a one-hot row, 0 for a uniform one.
        let e = Confidence::Entropy;
        assert_eq!(e.of(&[1.0, 0.0, 0.0]), 1.0);
        assert!(e.of(&[0.25; 4]).abs() < 1e-6);
        assert!(e.of(&[0.7, 0.2, 0.1]) < Confidence::MaxProb.of(&[0.7, 0.2, 0.1]));
        let mut a = ThresholdAgent::new(
            ThresholdConfig {
                confidence: Confidence::Entropy,
                per_stage: true,
                ..Default::default()
            },
            2,
        )
        .unwrap();
        assert_eq!(a.name(), "threshold-entropy-per-stage");
        a.set_taus(&[0.5]).unwrap();
        let row = |p: f32| Observation {
            stage: 0,
            features: vec![],
            probs: vec![p, 1.0 - p],
            cost_so_far: 0.0,
        };
        // H(0.9, 0.1) / ln 2 = 0.469: confidence 0.531 stops at 0.5, and
        // H(0.85, 0.15) / ln 2 = 0.610 does not.
        assert_eq!(a.stop_prob(&row(0.9), None).unwrap(), 1.0);
        assert_eq!(a.stop_prob(&row(0.85), None).unwrap(), 0.0);
        for bad in [
            ThresholdConfig {
                grid: vec![],
                ..Default::default()
            },
            ThresholdConfig {
                grid: vec![-0.1],
                ..Default::default()
            },
            ThresholdConfig {
                per_stage: true,
                max_sweeps: 0,
                ..Default::default()
            },
        ] {
            assert!(ThresholdAgent::new(bad, 3).is_err());
        }
        assert_eq!(ThresholdConfig::default().grid.len(), 102);
    }
}
