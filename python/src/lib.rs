//! `cascade_env._native`: the Rust side of the `cascade_env` Python
//! package. It wraps [`cascade_env::OptimalStoppingEnv`] and
//! [`cascade_env::VecEnv`] over a [`cascade_env::ReplayBackend`] and hands
//! numpy arrays to the Gymnasium classes of `cascade_env/envs.py`, which
//! build the observation and info dicts.
//!
//! Every error of the env crate becomes a Python exception carrying the
//! Rust message ([`to_py_err`]); nothing here unwraps user input, and a
//! panic would surface as pyo3's `PanicException` rather than abort the
//! interpreter. The vector env's step and reset release the GIL while the
//! Rust env runs and fills the output buffers; the buffers become numpy
//! arrays without a copy. A second thread calling into a vector env while
//! that runs gets a `RuntimeError` saying so. A vector env's size is
//! checked against `MAX_NUM_ENVS` and `MAX_BUFFER_BYTES` (in `vector`)
//! before anything is allocated, and its seeds so that no sub-env seed
//! `seed + i` wraps around.
//!
//! | module | holds |
//! |---|---|
//! | `env` | the `Env` class (one episode at a time) |
//! | `vector` | the `VecEnv` class (n episodes in lock step) |
//! | `arrays` | the numpy arrays the vector env writes into |
//! | `layout` | what both env classes read from their trace |
//! | `args` | Python arguments parsed into the env crate's types |
//! | `trace` | `load_trace`, `write_synthetic_trace` |
//! | `byo` | bring your own cascade: `write_trace` and the agents |

use std::io::ErrorKind;

use cascade_env::Error;
use pyo3::exceptions::{
    PyFileNotFoundError, PyIsADirectoryError, PyOSError, PyPermissionError, PyRuntimeError,
    PyValueError,
};
use pyo3::prelude::*;

mod args;
mod arrays;
mod byo;
mod env;
mod layout;
mod trace;
mod vector;

/// The Python exception for an env error, with the Rust message:
/// `ValueError` for bad arguments, corrupt traces and illegal actions,
/// `FileNotFoundError`/`PermissionError`/`IsADirectoryError`/`OSError` for
/// file errors, `RuntimeError` for misuse (step before reset or after the
/// end) and anything else.
pub(crate) fn to_py_err(e: Error) -> PyErr {
    let msg = e.to_string();
    match &e {
        Error::InvalidArgument(_) | Error::IllegalAction { .. } | Error::Trace { .. } => {
            PyValueError::new_err(msg)
        }
        Error::Io { source, .. } => match source.kind() {
            ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
            ErrorKind::PermissionDenied => PyPermissionError::new_err(msg),
            ErrorKind::IsADirectory => PyIsADirectoryError::new_err(msg),
            _ => PyOSError::new_err(msg),
        },
        _ => PyRuntimeError::new_err(msg),
    }
}

/// The Rust side of the `cascade_env` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<env::NativeEnv>()?;
    m.add_class::<vector::NativeVecEnv>()?;
    m.add_function(wrap_pyfunction!(trace::load_trace, m)?)?;
    m.add_function(wrap_pyfunction!(trace::write_synthetic_trace, m)?)?;
    m.add_function(wrap_pyfunction!(byo::write_trace, m)?)?;
    m.add_function(wrap_pyfunction!(byo::fit_agent, m)?)?;
    m.add_function(wrap_pyfunction!(byo::load_agent, m)?)?;
    m.add_function(wrap_pyfunction!(byo::stop_rewards, m)?)?;
    m.add_class::<byo::NativeAgent>()?;
    m.add("ENV_ID", cascade_env::ENV_ID)?;
    m.add("TRACE_FORMAT_VERSION", cascade_env::TRACE_FORMAT_VERSION)?;
    m.add("TRACE_AGENTS", cascade_agents::TRACE_AGENTS.to_vec())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
