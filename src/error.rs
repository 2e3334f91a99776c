//! The crate's error type. Every fallible path in the library returns
//! [`Result`]; messages name the thing (file, model, stage) and what is wrong.

use std::path::PathBuf;

/// Errors of the cascade-rl library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A data file that exists but is not what it should be.
    #[error("{path}: {msg}")]
    BadData { path: PathBuf, msg: String },
    /// A data set that could not be found; the message says where we looked.
    #[error("{0}")]
    DataNotFound(String),
    /// An invalid configuration value or argument.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A checkpoint that is missing, corrupt or does not match the request.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    /// A device that cannot be used in this build or on this machine.
    #[error("device: {0}")]
    Device(String),
    /// Training diverged or produced a non-finite value.
    #[error("training: {0}")]
    Training(String),
    /// An error from the candle tensor library.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An error from the environment crate.
    #[error(transparent)]
    Env(#[from] cascade_env::Error),
    /// A JSON (de)serialisation failure on a named file.
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A CSV failure on a named file.
    #[error("{path}: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed data file.
    pub fn bad_data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadData {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
