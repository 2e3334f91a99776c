//! cascade-agents: stopping agents for the cascade MDP of cascade-env, and
//! their evaluation.
//!
//! Every agent implements [`Agent`]: it maps observations (one
//! [`cascade_env::Observation`] or a batch [`cascade_env::BatchObservation`])
//! to stop probabilities and actions, trains from its own config
//! ([`Agent::train`] on the training and validation splits' stage outputs),
//! saves and loads itself ([`load_agent`]), and is scored on a split by
//! [`evaluate`] into one [`EvalReport`].
//!
//! | agent | file | what it does |
//! |---|---|---|
//! | `static-k` | [`static_k`] | always stops at stage k (the paper's static classifiers) |
//! | `oracle` | [`oracle`] | first stage whose argmax is right (reads the label; the bound) |
//! | `threshold` | [`threshold`] | first stage whose top probability (`-entropy`: one minus the normalised entropy) reaches tau, one tau or one per stage (`-per-stage`), chosen on validation |
//! | `reinforce` | [`reinforce`], [`joint`], [`expected`] | learned policy, REINFORCE; frozen (policy only) or joint (with the classifiers) |
//! | `backward-induction` | [`backward`] | optimal stopping by least squares from the last stage back (Longstaff-Schwartz) |
//! | `ann` | [`backward`] | ANN's exits: weighted binary classification from the last stage back (Bolukbasi et al. 2017) |
//!
//! [`on_traces`] builds and fits, by name, every agent that needs only
//! recorded outputs on traces written by any framework
//! ([`cascade_env::TraceArrays`]); the CLI and the Python package use it.
//!
//! Agents that need only stage outputs work on any
//! [`cascade_env::StageBackend`]: a recorded [`cascade_env::ReplayBackend`]
//! or the live [`cascade_rl::backend::CandleBackend`]. Joint training
//! needs the classifiers themselves ([`cascade_rl::cascade::Cascade`]).
//!
//! ```
//! use cascade_agents::{evaluate, Agent, EvalConfig, ThresholdAgent, ThresholdConfig, TrainData, TrainOptions};
//! use cascade_env::{ReplayBackend, RewardSpec, SyntheticTraceConfig};
//! # fn main() -> Result<(), cascade_agents::Error> {
//! let trace = |seed| ReplayBackend::synthetic(&SyntheticTraceConfig { num_samples: 300, seed, ..Default::default() });
//! let (mut train, mut val, mut test) = (trace(0)?, trace(1)?, trace(2)?);
//! let mut agent = ThresholdAgent::new(ThresholdConfig::default(), 3)?;
//! let opts = TrainOptions { quiet: true, count_policy_cost: false, ..Default::default() };
//! agent.train(TrainData { train: &mut train, val: &mut val }, &opts)?;
//! let cfg = EvalConfig { count_policy_cost: false, ..EvalConfig::for_split("test") };
//! let report = evaluate(&agent, &mut test, &RewardSpec::default(), &cfg)?;
//! assert!(report.error < 0.2);
//! # Ok(()) }
//! ```

pub mod agent;
pub mod backward;
mod error;
pub mod eval;
pub mod expected;
pub mod folder;
pub mod joint;
pub mod kind;
pub mod on_traces;
pub mod oracle;
pub mod policy;
pub mod reinforce;
pub mod spec;
pub mod static_k;
pub mod threshold;
pub mod training;

pub use agent::{
    decide, load_agent, read_manifest, record_spec, ActMode, Agent, AgentManifest, AgentState,
    EpochMetrics, TrainData, TrainOptions, TrainSummary, AGENT_FILE, AGENT_FORMAT_VERSION,
};
pub use backward::{BackwardAgent, BackwardConfig, StopFit, StopInputs};
pub use error::{Error, Result};
pub use eval::{evaluate, EvalConfig, EvalReport, Evaluated, ReportContext};
pub use expected::{ClassifierObjective, ExpectedJointConfig, JointSplits};
pub use folder::{AgentFolder, TRACE_RECORD_FILE, TRAIN_ARGS_FILE, TRAIN_SUMMARY_FILE};
pub use joint::{JointConfig, JointImages};
pub use kind::AgentKind;
pub use on_traces::{
    counts_policy_cost, fit_on_traces, TraceAgent, TraceRef, TraceTrainRecord, TRACE_AGENTS,
};
pub use oracle::OracleAgent;
pub use policy::{FeatureNorm, PolicyInputs, PolicySpec, StopPolicy};
pub use reinforce::estimator::Baseline;
pub use reinforce::{Estimator, PolicyInit, ReinforceAgent, ReinforceConfig, ReinforceMode};
pub use spec::{train, AgentSpec, Family, JointInputs, JointSpec, JointStart, TrainInputs};
pub use static_k::StaticAgent;
pub use threshold::{Confidence, GridPoint, ThresholdAgent, ThresholdConfig};
