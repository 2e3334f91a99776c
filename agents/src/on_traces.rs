//! Agents on recorded outputs: every agent that needs only a cascade's
//! recorded stage outputs, built by name and fitted on a training and a
//! validation trace, whatever framework made the traces
//! ([`cascade_env::TraceArrays`]).
//!
//! The `cascade` command line (`cascade train --train-trace T --val-trace
//! V`, `cascade eval --trace`) and the Python package
//! (`cascade_env.agents`) both go through [`fit_on_traces`] and
//! [`TraceAgent`], so the same arguments give the same agent and the same
//! decisions.
//!
//! | name | agent |
//! |---|---|
//! | `static-K` | always stops at stage K (1-based) |
//! | `oracle` | first stage whose argmax is right (reads labels; the bound) |
//! | `threshold`, `threshold-per-stage`, `threshold-entropy` | [`crate::ThresholdAgent`] |
//! | `backward-induction`, `ann` | [`crate::BackwardAgent`] |
//! | `reinforce-frozen` (or `reinforce`) | [`crate::ReinforceAgent`], policy only |
//!
//! # The folder
//!
//! [`TraceAgent::save`] writes what `cascade train` writes: the agent
//! (`agent.json`, `policy.safetensors` for REINFORCE),
//! [`TRAIN_SUMMARY_FILE`] and [`TRACE_RECORD_FILE`] (a
//! [`TraceTrainRecord`]: the agent name, the options and the two traces by
//! their content hash). [`TraceAgent::load`] reads any agent folder back.

use std::path::{Path, PathBuf};

use cascade_env::{ReplayBackend, RewardSpec, StageBackend};
use serde::{Deserialize, Serialize};

use crate::agent::{load_agent, read_manifest, Agent, TrainData, TrainOptions, TrainSummary};
use crate::backward::BackwardConfig;
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalConfig, EvalReport};
use crate::kind::AgentKind;
use crate::reinforce::ReinforceConfig;
use crate::spec::{train as train_spec, AgentSpec, TrainInputs};
use crate::threshold::ThresholdConfig;

pub use crate::folder::{TRACE_RECORD_FILE, TRAIN_SUMMARY_FILE};

/// The agents [`fit_on_traces`] fits (`static-K` stands for `static-1`,
/// `static-2`, ...).
pub const TRACE_AGENTS: [&str; 8] = [
    "static-K",
    "oracle",
    "threshold",
    "threshold-per-stage",
    "threshold-entropy",
    "backward-induction",
    "ann",
    "reinforce-frozen",
];

/// A trace an agent was fitted on, named by its content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRef {
    /// The file, when the trace came from one (informative only: the
    /// trace is identified by `content_sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The header's data set.
    pub dataset: String,
    /// The header's split.
    pub split: String,
    /// Samples N.
    pub num_samples: usize,
    /// Classes C.
    pub num_classes: usize,
    /// Feature width per stage, `[K]`.
    pub feature_dims: Vec<usize>,
    /// SHA-256 of the content (see [`cascade_env::replay`]).
    pub content_sha256: String,
}

impl TraceRef {
    /// The reference of `trace` (read from `path`, if from a file).
    pub fn of(trace: &ReplayBackend, path: Option<&Path>) -> Self {
        TraceRef {
            path: path.map(Path::to_path_buf),
            dataset: trace.meta().dataset.clone(),
            split: trace.meta().split.clone(),
            num_samples: trace.num_samples(),
            num_classes: trace.num_classes(),
            feature_dims: trace.feature_dims().to_vec(),
            content_sha256: trace.content_sha256().to_string(),
        }
    }
}

/// How an agent was fitted on traces (`train_traces.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceTrainRecord {
    /// The agent's name as given (`threshold`, `reinforce-frozen`, ...).
    pub agent: String,
    /// The training trace.
    pub train_trace: TraceRef,
    /// The validation trace.
    pub val_trace: TraceRef,
    /// The training options (reward, budget, seed, policy cost).
    pub options: TrainOptions,
    /// REINFORCE settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reinforce: Option<ReinforceConfig>,
    /// Threshold settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<ThresholdConfig>,
    /// Settings of backward-induction or ann.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backward: Option<BackwardConfig>,
    /// What was fitted: the agent and its settings (absent in records
    /// written before specs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<AgentSpec>,
}

/// Whether the policy's MACs are counted into the cost by default on
/// `trace`: only when its costs are MACs (otherwise the two would be added
/// in different units).
pub fn counts_policy_cost(trace: &ReplayBackend) -> bool {
    trace.meta().cost_unit.eq_ignore_ascii_case("macs")
}

/// Refuses a validation trace that does not fit the training trace.
fn check_same_cascade(train: &ReplayBackend, val: &ReplayBackend) -> Result<()> {
    let problem = if train.num_stages() != val.num_stages() {
        Some(format!(
            "{} stages in the training trace, {} in the validation trace",
            train.num_stages(),
            val.num_stages()
        ))
    } else if train.num_classes() != val.num_classes() {
        Some(format!(
            "{} classes in the training trace, {} in the validation trace",
            train.num_classes(),
            val.num_classes()
        ))
    } else if let Some(t) =
        (0..train.num_stages()).find(|&t| train.feature_dims()[t] != val.feature_dims()[t])
    {
        Some(format!(
            "stage {t} has {} features in the training trace, {} in the validation trace",
            train.feature_dims()[t],
            val.feature_dims()[t]
        ))
    } else {
        train
            .stage_costs()
            .iter()
            .zip(val.stage_costs())
            .position(|(a, b)| a != b)
            .map(|t| {
                format!(
                    "stage {t} costs {} in the training trace, {} in the validation trace",
                    train.stage_costs()[t],
                    val.stage_costs()[t]
                )
            })
    };
    match problem {
        Some(p) => Err(Error::Config(format!(
            "the training and validation traces are not of one cascade: {p}"
        ))),
        None => Ok(()),
    }
}

/// An agent fitted on (or loaded from a folder fitted on) recorded
/// outputs, with how it was fitted.
#[derive(Debug)]
pub struct TraceAgent {
    /// The agent.
    pub agent: Box<dyn Agent>,
    /// What training did (absent for a folder without one).
    pub summary: Option<TrainSummary>,
    /// How it was fitted (absent for agents trained on a cascade).
    pub record: Option<TraceTrainRecord>,
    /// The options it was trained with (from its manifest).
    pub trained_with: Option<TrainOptions>,
}

/// Builds the agent `name` (see the module docs) for the cascade of
/// `train` and fits it on `train`, selecting on `val`. `reinforce`
/// overrides REINFORCE's default settings; `paths` name the traces' files
/// in the record.
///
/// `reinforce-joint` and `expected-joint` are refused: they fine-tune the
/// classifiers, which a trace does not hold.
pub fn fit_on_traces(
    name: &str,
    train: &mut ReplayBackend,
    val: &mut ReplayBackend,
    opts: &TrainOptions,
    reinforce: Option<ReinforceConfig>,
    paths: (Option<&Path>, Option<&Path>),
) -> Result<TraceAgent> {
    opts.validate()?;
    check_same_cascade(train, val)?;
    let mut record = TraceTrainRecord {
        agent: name.to_string(),
        train_trace: TraceRef::of(train, paths.0),
        val_trace: TraceRef::of(val, paths.1),
        options: opts.clone(),
        reinforce: None,
        threshold: None,
        backward: None,
        spec: None,
    };
    // `reinforce` is the frozen learner's short name on traces.
    let spec = match name.trim() {
        "reinforce" => AgentSpec::of_kind(AgentKind::ReinforceFrozen),
        other if other.starts_with("static-") => AgentSpec::from_name(other)?,
        other => AgentSpec::from_name(other).map_err(|_| {
            Error::Config(format!(
                "unknown agent '{other}': on traces use one of {}",
                TRACE_AGENTS.join(", ")
            ))
        })?,
    };
    let spec = match (spec, reinforce) {
        (AgentSpec::ReinforceFrozen(_), Some(cfg)) => AgentSpec::ReinforceFrozen(cfg),
        (_, Some(_)) => {
            return Err(Error::Config(format!(
                "REINFORCE settings were given for agent '{name}'"
            )))
        }
        (spec, None) => spec,
    };
    if spec.joint() {
        return Err(Error::Config(format!(
            "{name} fine-tunes the classifiers, and a trace holds only their outputs; on \
             traces use one of {}",
            TRACE_AGENTS.join(", ")
        )));
    }
    match &spec {
        AgentSpec::Threshold(c)
        | AgentSpec::ThresholdPerStage(c)
        | AgentSpec::ThresholdEntropy(c) => record.threshold = Some(c.clone()),
        AgentSpec::BackwardInduction(c) | AgentSpec::Ann(c) => record.backward = Some(c.clone()),
        AgentSpec::ReinforceFrozen(c) => record.reinforce = Some(c.clone()),
        _ => {}
    }
    record.spec = Some(spec.clone());
    let inputs = TrainInputs {
        data: TrainData { train, val },
        joint: None,
    };
    let (agent, summary) = train_spec(&spec, inputs, opts)?;
    Ok(TraceAgent {
        agent,
        summary: Some(summary),
        record: Some(record),
        trained_with: Some(opts.clone()),
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    cascade_env::fsutil::write_atomic(path, &bytes).map_err(|e| Error::io(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

impl TraceAgent {
    /// Writes the agent folder `dir` (see the module docs); each file is
    /// written atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.agent.save(dir)?;
        if let Some(spec) = self.record.as_ref().and_then(|r| r.spec.as_ref()) {
            crate::agent::record_spec(dir, spec)?;
        }
        if let Some(s) = &self.summary {
            write_json(&crate::folder::AgentFolder::new(dir).train_summary(), s)?;
        }
        if let Some(r) = &self.record {
            write_json(&crate::folder::AgentFolder::new(dir).trace_record(), r)?;
        }
        Ok(())
    }

    /// Reads an agent folder (written by [`TraceAgent::save`] or `cascade
    /// train`).
    pub fn load(dir: &Path) -> Result<Self> {
        let manifest = read_manifest(dir)?;
        let record: Option<TraceTrainRecord> =
            read_json(&crate::folder::AgentFolder::new(dir).trace_record())?;
        // Agents without parameters (static, oracle) keep no options in
        // their manifest; the record has them.
        let trained_with = manifest
            .trained_with
            .or_else(|| record.as_ref().map(|r| r.options.clone()));
        Ok(TraceAgent {
            agent: load_agent(dir)?,
            summary: read_json(&crate::folder::AgentFolder::new(dir).train_summary())?,
            record,
            trained_with,
        })
    }

    /// The reward the agent is evaluated under by default: the one it was
    /// trained with, at the alpha it was selected at when trained to a
    /// budget.
    pub fn trained_spec(&self) -> RewardSpec {
        let mut spec = self
            .trained_with
            .as_ref()
            .map(|o| o.spec)
            .unwrap_or_default();
        if self
            .trained_with
            .as_ref()
            .is_some_and(|o| o.budget.is_some())
        {
            if let Some(s) = &self.summary {
                spec.alpha = s.alpha;
            }
        }
        spec
    }

    /// Whether evaluation counts the policy's MACs by default: as trained,
    /// else as [`counts_policy_cost`] says for `trace`.
    pub fn counts_policy_cost(&self, trace: &ReplayBackend) -> bool {
        match &self.trained_with {
            Some(o) => o.count_policy_cost,
            None => counts_policy_cost(trace),
        }
    }

    /// Evaluates the agent on `trace` (greedy, seed 0) under its trained
    /// reward ([`TraceAgent::trained_spec`]) or `spec`; the report's split
    /// is the trace's.
    pub fn evaluate(
        &self,
        trace: &mut ReplayBackend,
        spec: Option<RewardSpec>,
    ) -> Result<EvalReport> {
        let cfg = EvalConfig {
            split: trace.meta().split.clone(),
            count_policy_cost: self.counts_policy_cost(trace),
            ..Default::default()
        };
        let spec = spec.unwrap_or_else(|| self.trained_spec());
        evaluate(&*self.agent, trace, &spec, &cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_env::SyntheticTraceConfig;

    fn trace(seed: u64, n: usize) -> ReplayBackend {
        ReplayBackend::synthetic(&SyntheticTraceConfig {
            num_samples: n,
            seed,
            feature_dims: vec![4, 4, 4],
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn every_trace_agent_fits_saves_and_loads_with_the_same_decisions() {
        let (mut train, mut val, mut test) = (trace(0, 300), trace(1, 200), trace(2, 200));
        let opts = TrainOptions {
            spec: RewardSpec::with_alpha(0.05),
            quiet: true,
            count_policy_cost: counts_policy_cost(&train),
            num_envs: 64,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let quick = ReinforceConfig {
            epochs: 2,
            ..ReinforceConfig::mlp()
        };
        for name in [
            "static-2",
            "oracle",
            "threshold",
            "threshold-per-stage",
            "threshold-entropy",
            "backward-induction",
            "ann",
            "reinforce-frozen",
        ] {
            let rc = name.starts_with("reinforce").then(|| quick.clone());
            let a = fit_on_traces(name, &mut train, &mut val, &opts, rc, (None, None)).unwrap();
            let d = dir.path().join(name);
            a.save(&d).unwrap();
            let b = TraceAgent::load(&d).unwrap();
            assert_eq!(b.record, a.record, "{name}");
            assert_eq!(b.trained_spec(), a.trained_spec(), "{name}");
            let (ra, rb) = (
                a.evaluate(&mut test, None).unwrap(),
                b.evaluate(&mut test, None).unwrap(),
            );
            assert_eq!(ra.sample_exits, rb.sample_exits, "{name}");
            assert_eq!(ra.split, "all");
            assert!(!ra.policy_cost_counted);
        }
        let mut err = |name: &str| {
            fit_on_traces(name, &mut train, &mut val, &opts, None, (None, None))
                .unwrap_err()
                .to_string()
        };
        assert!(err("reinforce-joint").contains("fine-tunes the classifiers"));
        assert!(err("ppo").contains("unknown agent 'ppo'"));
        let mut narrow = ReplayBackend::synthetic(&SyntheticTraceConfig {
            num_samples: 50,
            feature_dims: vec![4, 4],
            stage_costs: vec![1.0, 4.0],
            ..Default::default()
        })
        .unwrap();
        let e = fit_on_traces("ann", &mut train, &mut narrow, &opts, None, (None, None))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("3 stages in the training trace, 2 in the validation"),
            "{e}"
        );
    }
}
