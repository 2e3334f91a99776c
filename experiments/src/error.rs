//! The error type of the experiment library (studies, result files,
//! figures, summaries). Binaries wrap it in `anyhow`.

use std::path::{Path, PathBuf};

/// What can go wrong in a study.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad setting, named with the offending value.
    #[error("{0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A CSV file could not be read or written.
    #[error("{path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: csv::Error,
    },
    /// A JSON file could not be read or written.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A file of the run folder holds something this build cannot use.
    #[error("{path}: {msg}")]
    RunFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// The run folder was made with different settings than requested.
    #[error("{path}: {msg}")]
    Mismatch {
        /// The file holding the earlier settings.
        path: PathBuf,
        /// The settings that differ and what to do.
        msg: String,
    },
    /// Another process holds the run folder.
    #[error("{path}: {msg}")]
    Busy {
        /// The run folder.
        path: PathBuf,
        /// Who holds it and what to do.
        msg: String,
    },
    /// From the cascade library (data, models, checkpoints, pretraining).
    #[error(transparent)]
    Cascade(#[from] cascade_rl::Error),
    /// From an agent.
    #[error(transparent)]
    Agent(#[from] cascade_agents::Error),
    /// From the environment.
    #[error(transparent)]
    Env(#[from] cascade_env::Error),
    /// From a figure.
    #[error(transparent)]
    Plot(#[from] cascade_plots::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A CSV error on `path`.
    pub fn csv(path: impl AsRef<Path>, source: csv::Error) -> Self {
        Error::Csv {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A JSON error on `path`.
    pub fn json(path: impl AsRef<Path>, source: serde_json::Error) -> Self {
        Error::Json {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A run-folder file with unusable content.
    pub fn run_file(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::RunFile {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
}

/// Writes `bytes` to `path` atomically (temporary file + rename).
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    cascade_env::fsutil::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}

/// Writes `value` as pretty JSON to `path`, atomically.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::json(path, e))?;
    bytes.push(b'\n');
    write_file(path, &bytes)
}

/// Reads JSON from `path`.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(path, e))
}
