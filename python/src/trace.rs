//! Trace files from Python: `load_trace` (a trace's arrays and header)
//! and `write_synthetic_trace`.

use std::path::PathBuf;

use cascade_env::{Error, ReplayBackend, StageBackend, SyntheticTraceConfig};
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::prelude::*;

use crate::layout::{arr2, header_json, load_backend};
use crate::to_py_err;

/// `(header_json, [features [N, d_t]], [probs [N, C]], labels [N] int64,
/// costs [K] float64)`.
pub(crate) type TraceTuple<'py> = (
    String,
    Vec<Bound<'py, PyArray2<f32>>>,
    Vec<Bound<'py, PyArray2<f32>>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
);

/// Reads and validates a trace file; see `cascade_env.load_trace`.
#[pyfunction]
pub(crate) fn load_trace(py: Python<'_>, path: PathBuf) -> PyResult<TraceTuple<'_>> {
    let b = load_backend(py, &path)?;
    let header = header_json(&b)?;
    let c = b.num_classes();
    let mut features = Vec::with_capacity(b.num_stages());
    let mut probs = Vec::with_capacity(b.num_stages());
    for (t, &d) in b.feature_dims().iter().enumerate() {
        features.push(arr2(py, b.stage_features(t).to_vec(), d)?);
        probs.push(arr2(py, b.stage_probs(t).to_vec(), c)?);
    }
    let labels: Vec<i64> = b.labels().iter().map(|&y| y as i64).collect();
    Ok((
        header,
        features,
        probs,
        labels.into_pyarray(py),
        b.stage_costs().to_vec().into_pyarray(py),
    ))
}

/// Writes the crate's synthetic trace; see `cascade_env.write_synthetic_trace`.
#[pyfunction]
#[pyo3(signature = (path, num_samples, seed, num_classes, feature_dims, stage_costs, hopeless_fraction))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_synthetic_trace(
    py: Python<'_>,
    path: PathBuf,
    num_samples: usize,
    seed: u64,
    num_classes: usize,
    feature_dims: Vec<usize>,
    stage_costs: Vec<f64>,
    hopeless_fraction: f64,
) -> PyResult<String> {
    let cfg = SyntheticTraceConfig {
        num_samples,
        num_classes,
        feature_dims,
        stage_costs,
        hopeless_fraction,
        seed,
    };
    py.detach(|| -> Result<String, Error> {
        let b = ReplayBackend::synthetic(&cfg)?;
        b.save(&path)?;
        serde_json::to_string(&b.header()).map_err(|e| Error::InvalidArgument(e.to_string()))
    })
    .map_err(to_py_err)
}
