//! [`AgentFolder`]: the files of an agent folder, by name, in one place.
//!
//! | file | what |
//! |---|---|
//! | `agent.json` | the manifest ([`crate::AgentManifest`]: state, options, spec) |
//! | `policy.safetensors` | a learned policy's weights |
//! | `cascade/` | a joint agent's fine-tuned classifiers |
//! | `train_log.csv` | per-epoch training log |
//! | `train_summary.json` | [`crate::TrainSummary`] |
//! | `train_args.json` | how `cascade train` ran (on a cascade) |
//! | `train_traces.json` | how it was fitted on traces ([`crate::TraceTrainRecord`]) |
//! | `eval_{split}.json`, `eval_{split}.csv` | an evaluation ([`crate::EvalReport`]) |

use std::path::PathBuf;

/// An agent folder: where each of its files lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFolder {
    dir: PathBuf,
}

impl AgentFolder {
    /// The agent folder `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        AgentFolder { dir: dir.into() }
    }

    /// `agent.json`.
    pub fn manifest(&self) -> PathBuf {
        self.dir.join(crate::agent::AGENT_FILE)
    }

    /// `train_log.csv`.
    pub fn train_log(&self) -> PathBuf {
        self.dir.join(cascade_rl::checkpoint::TRAIN_LOG_FILE)
    }

    /// `train_summary.json`.
    pub fn train_summary(&self) -> PathBuf {
        self.dir.join(TRAIN_SUMMARY_FILE)
    }

    /// `train_args.json`.
    pub fn train_args(&self) -> PathBuf {
        self.dir.join(TRAIN_ARGS_FILE)
    }

    /// `train_traces.json`.
    pub fn trace_record(&self) -> PathBuf {
        self.dir.join(TRACE_RECORD_FILE)
    }

    /// `eval_{split}.json`.
    pub fn eval_json(&self, split: &str) -> PathBuf {
        self.dir.join(format!("eval_{split}.json"))
    }
}

/// File of the training summary in an agent folder.
pub const TRAIN_SUMMARY_FILE: &str = "train_summary.json";

/// File of `cascade train`'s resolved arguments in an agent folder.
pub const TRAIN_ARGS_FILE: &str = "train_args.json";

/// File of the [`crate::TraceTrainRecord`] in an agent folder fitted on
/// traces.
pub const TRACE_RECORD_FILE: &str = "train_traces.json";
