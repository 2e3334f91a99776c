//! The crate error type.

use std::path::PathBuf;

/// Errors of the agents crate. Messages name the thing (agent, file,
/// setting, stage) and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid configuration value or argument.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// An agent does not fit the cascade or split it is used with (stage
    /// count, feature widths, classes).
    #[error("agent '{agent}' does not fit this cascade: {problem}")]
    Mismatch {
        /// The agent's name.
        agent: String,
        /// What differs.
        problem: String,
    },

    /// The oracle was asked to act without the true labels.
    #[error("agent '{0}' needs the true label of every sample (it is an oracle); evaluate it with `evaluate`, which reads labels from the stage backend")]
    NeedsLabels(String),

    /// Training produced a NaN or an infinity.
    #[error("training diverged: {what} is {value} at epoch {epoch}, step {step}")]
    NonFinite {
        /// The metric or loss, by its logged name (e.g. `losses/policy`).
        what: String,
        /// The offending value.
        value: f64,
        /// 1-based epoch.
        epoch: usize,
        /// 1-based optimisation step within the run.
        step: usize,
    },

    /// A saved agent folder that is missing, corrupt or of another kind.
    #[error("saved agent {path}: {msg}")]
    AgentFile {
        /// The folder or file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },

    /// An evaluation report whose content contradicts itself (per-image
    /// outcomes that are not 0/1, exits beyond the last stage, ...).
    #[error("evaluation report {path}: {msg}")]
    Report {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON (de)serialisation failure on a named file.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// A CSV failure on a named file.
    #[error("{path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: csv::Error,
    },

    /// An error of the environment crate (env, backend, trace).
    #[error(transparent)]
    Env(#[from] cascade_env::Error),

    /// An error of the cascade-rl crate (models, checkpoints, data).
    #[error(transparent)]
    Cascade(#[from] cascade_rl::Error),

    /// A tensor error.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A problem with a saved agent.
    pub fn agent_file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::AgentFile {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// Turns an env error that wraps an error of this crate (raised inside
    /// a policy callback) back into that error.
    pub(crate) fn from_env(e: cascade_env::Error) -> Self {
        match e {
            cascade_env::Error::Policy(inner) => match inner.downcast::<Error>() {
                Ok(mine) => *mine,
                Err(other) => Error::Env(cascade_env::Error::Policy(other)),
            },
            other => Error::Env(other),
        }
    }
}

/// Result with the crate [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
