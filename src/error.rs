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
    /// An output folder that cannot take the result (it holds another
    /// one, or other files).
    #[error("{path}: {msg}")]
    Folder { path: PathBuf, msg: String },
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

    /// `self` as a configuration error with `what` in front, keeping one
    /// "invalid configuration" however deep the nesting.
    pub fn in_config(self, what: impl std::fmt::Display) -> Self {
        match self {
            Error::Config(m) => Error::Config(format!("{what}: {m}")),
            other => Error::Config(format!("{what}: {other}")),
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

/// A number as messages write it: plain decimals (`0`, `0.5`, `-0.1`,
/// `250`), exponent form only for magnitudes below 1e-4 or from 1e12 on
/// (`1e-7`, `3e15`), where plain decimals would be long.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if x == 0.0 {
        "0".to_string()
    } else if !x.is_finite() || (1e-4..1e12).contains(&a) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// "give 1" or "give 1 or `k`": how many values a per-stage list takes.
pub fn give_one_or(k: usize) -> String {
    if k == 1 {
        "give 1".to_string()
    } else {
        format!("give 1 or {k}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_written() {
        for (x, want) in [
            (0.0, "0"),
            (-0.0, "0"),
            (-0.5, "-0.5"),
            (0.1, "0.1"),
            (250.0, "250"),
            (1e-7, "1e-7"),
            (3e15, "3e15"),
            (-1e-9, "-1e-9"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(num(x), want);
        }
        assert_eq!(give_one_or(1), "give 1");
        assert_eq!(give_one_or(3), "give 1 or 3");
    }
}
