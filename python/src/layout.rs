//! What both env classes take from their trace: the trace loaded without
//! the GIL, its [`Layout`] (feature widths, classes, samples, header) with
//! the read-only properties it gives each class, the stage costs, and a
//! numpy matrix from a flat buffer.

use std::path::Path;

use cascade_env::{ReplayBackend, RewardModel, StageBackend};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::to_py_err;

pub(crate) fn load_backend(py: Python<'_>, trace: &Path) -> PyResult<ReplayBackend> {
    py.detach(|| ReplayBackend::load(trace)).map_err(to_py_err)
}

pub(crate) fn header_json(backend: &ReplayBackend) -> PyResult<String> {
    serde_json::to_string(&backend.header())
        .map_err(|e| PyRuntimeError::new_err(format!("cannot encode the trace header: {e}")))
}

/// The static description shared by both env classes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    pub(crate) dims: Vec<usize>,
    pub(crate) max_dim: usize,
    pub(crate) num_classes: usize,
    pub(crate) num_samples: usize,
    pub(crate) header: String,
}

impl Layout {
    pub(crate) fn of(backend: &ReplayBackend) -> PyResult<Self> {
        let dims = backend.feature_dims().to_vec();
        Ok(Layout {
            max_dim: dims.iter().copied().max().unwrap_or(0),
            dims,
            num_classes: backend.num_classes(),
            num_samples: backend.num_samples(),
            header: header_json(backend)?,
        })
    }
}

/// The read-only properties both envs take from their trace [`Layout`]
/// (field `layout`), as one more `#[pymethods]` block per class.
macro_rules! layout_getters {
    ($class:ty) => {
        #[pyo3::pymethods]
        impl $class {
            /// Number of stages K.
            #[getter]
            fn num_stages(&self) -> usize {
                self.layout.dims.len()
            }

            /// Number of classes C.
            #[getter]
            fn num_classes(&self) -> usize {
                self.layout.num_classes
            }

            /// Feature width `d_t` per stage.
            #[getter]
            fn feature_dims(&self) -> Vec<usize> {
                self.layout.dims.clone()
            }

            /// Number of samples N in the trace.
            #[getter]
            fn num_samples(&self) -> usize {
                self.layout.num_samples
            }

            /// The trace header as JSON.
            #[getter]
            fn header_json(&self) -> String {
                self.layout.header.clone()
            }
        }
    };
}

pub(crate) use layout_getters;

pub(crate) fn costs(model: &RewardModel) -> Vec<f64> {
    (0..model.num_stages()).map(|t| model.cost(t)).collect()
}

pub(crate) fn arr2<T: numpy::Element>(
    py: Python<'_>,
    v: Vec<T>,
    cols: usize,
) -> PyResult<Bound<'_, PyArray2<T>>> {
    let rows = v.len().checked_div(cols).unwrap_or(0);
    let a = Array2::from_shape_vec((rows, cols), v)
        .map_err(|e| PyRuntimeError::new_err(format!("buffer shape: {e}")))?;
    Ok(a.into_pyarray(py))
}
