//! The crate error type.

use std::path::PathBuf;

/// Everything that can go wrong while validating figure data or writing a figure.
///
/// Every variant names the figure (`figure`, e.g. `"pareto"`) and the offending
/// input (`what`, e.g. `"curve \"joint\" point 3 error"`), so a caller can show the
/// message as is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value that must be finite is NaN or infinite.
    #[error("{figure}: {what} is not finite ({value})")]
    NonFinite {
        /// Figure being drawn.
        figure: &'static str,
        /// The offending input.
        what: String,
        /// The value found.
        value: f64,
    },
    /// A list that must hold at least one item is empty.
    #[error("{figure}: {what} is empty")]
    Empty {
        /// Figure being drawn.
        figure: &'static str,
        /// The offending input.
        what: String,
    },
    /// Two inputs that must have matching lengths do not.
    #[error("{figure}: {what} has length {got}, expected {expected}")]
    LengthMismatch {
        /// Figure being drawn.
        figure: &'static str,
        /// The offending input.
        what: String,
        /// Length found.
        got: usize,
        /// Length required.
        expected: usize,
    },
    /// A value lies outside its admissible range.
    #[error("{figure}: {what} = {value} is outside {range}")]
    OutOfRange {
        /// Figure being drawn.
        figure: &'static str,
        /// The offending input.
        what: String,
        /// The value found.
        value: f64,
        /// The admissible range, in words (e.g. `"[0, 1]"`).
        range: String,
    },
    /// Any other inconsistency in the input.
    #[error("{figure}: {message}")]
    Invalid {
        /// Figure being drawn.
        figure: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The embedded font could not be registered with plotters.
    #[error("the embedded DejaVu Sans font could not be registered")]
    Font,
    /// plotters failed while drawing.
    #[error("{figure}: drawing failed: {message}")]
    Draw {
        /// Figure being drawn.
        figure: &'static str,
        /// The plotters error, as text.
        message: String,
    },
    /// Writing or renaming an output file failed.
    #[error("writing {}: {source}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with the crate [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Small helpers shared by the validators of every figure.
pub(crate) mod check {
    use super::{Error, Result};

    pub fn finite(figure: &'static str, what: impl FnOnce() -> String, value: f64) -> Result<()> {
        if value.is_finite() {
            Ok(())
        } else {
            Err(Error::NonFinite {
                figure,
                what: what(),
                value,
            })
        }
    }

    /// Finite and within `[lo, hi]`.
    pub fn in_range(
        figure: &'static str,
        what: impl Fn() -> String,
        value: f64,
        lo: f64,
        hi: f64,
    ) -> Result<()> {
        finite(figure, &what, value)?;
        if value < lo || value > hi {
            return Err(Error::OutOfRange {
                figure,
                what: what(),
                value,
                range: format!("[{lo}, {hi}]"),
            });
        }
        Ok(())
    }

    /// Titles name the data set, cascade and agents; a blank one is a bug.
    pub fn title(figure: &'static str, title: &str) -> Result<()> {
        if title.trim().is_empty() {
            Err(Error::Empty {
                figure,
                what: "title".into(),
            })
        } else {
            Ok(())
        }
    }

    pub fn non_empty<T>(figure: &'static str, what: &str, items: &[T]) -> Result<()> {
        if items.is_empty() {
            Err(Error::Empty {
                figure,
                what: what.to_string(),
            })
        } else {
            Ok(())
        }
    }

    pub fn len(
        figure: &'static str,
        what: impl FnOnce() -> String,
        got: usize,
        expected: usize,
    ) -> Result<()> {
        if got == expected {
            Ok(())
        } else {
            Err(Error::LengthMismatch {
                figure,
                what: what(),
                got,
                expected,
            })
        }
    }

    /// Names (of curves, agents, runs) must be unique, or the legend is ambiguous.
    pub fn unique_names<'a>(
        figure: &'static str,
        kind: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for name in names {
            if !seen.insert(name) {
                return Err(Error::Invalid {
                    figure,
                    message: format!("{kind} name {name:?} appears twice"),
                });
            }
        }
        Ok(())
    }
}
