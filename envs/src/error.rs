//! The crate error type.

use std::path::PathBuf;

use crate::reward::Action;

/// A boxed error from outside the crate (a stage backend, a policy).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the environment crate.
///
/// Misuse of an env (stepping before `reset`, after the episode ended, or an
/// action the mask forbids) has its own variant, so callers can match on it;
/// an illegal action is always an error, never silently clamped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid argument or configuration value; the message names it.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// `step` was called before the first `reset` (or after a backend
    /// failure left a vector env in an unknown state).
    #[error("step called before reset: call reset first{}", if *.after_failure { " (a stage backend failed during the previous step, so the env state is unknown)" } else { "" })]
    NotReset {
        /// True when the env was reset but a later backend failure voided it.
        after_failure: bool,
    },

    /// `step` was called after the episode terminated.
    #[error("step called after the episode terminated (stopped at stage index {stage}); call reset to start a new episode")]
    EpisodeOver {
        /// 0-based stage index at which the episode stopped.
        stage: usize,
    },

    /// The action is not allowed by the current action mask.
    #[error("illegal action {action:?} at stage index {stage} of a {num_stages}-stage cascade{}: only Stop is legal at the last stage", match .env { Some(i) => format!(" (env {i})"), None => String::new() })]
    IllegalAction {
        /// The refused action.
        action: Action,
        /// 0-based stage index the env was at.
        stage: usize,
        /// Number of stages K.
        num_stages: usize,
        /// Index of the sub-env in a vector env, if any.
        env: Option<usize>,
    },

    /// The stage backend failed (e.g. a tensor error in a neural backend).
    #[error("stage backend failed: {0}")]
    Backend(#[source] BoxError),

    /// The stage backend returned data of the wrong size.
    #[error(
        "stage backend returned {found} {what} values for stage index {stage}, expected {expected}"
    )]
    BackendOutput {
        /// 0-based stage index.
        stage: usize,
        /// `"feature"` or `"probability"`.
        what: &'static str,
        /// Expected number of `f32` values.
        expected: usize,
        /// Number returned.
        found: usize,
    },

    /// A batch policy failed (see [`crate::VecEnv::evaluate`]).
    #[error("policy failed: {0}")]
    Policy(#[source] BoxError),

    /// A trace (in memory or on disk) is malformed or inconsistent.
    #[error("{}: {problem}", match .path { Some(p) => format!("trace file {}", p.display()), None => "trace".to_string() })]
    Trace {
        /// The file, when the trace came from one.
        path: Option<PathBuf>,
        /// What is wrong.
        problem: String,
    },

    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// An env failed a check of [`crate::checker`].
    #[error("env check failed: {0}")]
    CheckFailed(String),
}

impl Error {
    /// Wraps any error of a stage backend as [`Error::Backend`].
    pub fn backend(e: impl Into<BoxError>) -> Self {
        Error::Backend(e.into())
    }

    /// Wraps any error of a policy as [`Error::Policy`].
    pub fn policy(e: impl Into<BoxError>) -> Self {
        Error::Policy(e.into())
    }

    pub(crate) fn trace(path: Option<&std::path::Path>, problem: impl Into<String>) -> Self {
        Error::Trace {
            path: path.map(|p| p.to_path_buf()),
            problem: problem.into(),
        }
    }
}

/// Result with the crate [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
