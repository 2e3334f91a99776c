//! The numpy arrays a vector-env call returns and how they are filled:
//! fresh arrays per call, or (with `copy=False`) reused ones written
//! through rust-numpy's borrow check; the fill functions run without the
//! GIL on plain slices.

use cascade_env::{BatchInfo, BatchObservation, VecStep};
use numpy::{PyArray, PyArray1, PyArray2, PyArrayMethods, PyReadwriteArray};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::type_object::PyTypeCheck;

use crate::layout::Layout;

/// The numpy arrays a vector-env call writes its observations and info
/// into (`[n]` unless noted).
pub(crate) struct ObsInfo<'py> {
    pub(crate) stage: Bound<'py, PyArray1<i64>>,
    /// `[n, max_d]`.
    pub(crate) features: Bound<'py, PyArray2<f32>>,
    /// `[n, C]`.
    pub(crate) probs: Bound<'py, PyArray2<f32>>,
    /// `[n, 1]`.
    pub(crate) cost_so_far: Bound<'py, PyArray2<f32>>,
    /// `[n, 2]`.
    pub(crate) action_mask: Bound<'py, PyArray2<i8>>,
    pub(crate) sample: Bound<'py, PyArray1<i64>>,
    pub(crate) cost: Bound<'py, PyArray1<f64>>,
    pub(crate) raw_cost: Bound<'py, PyArray1<f64>>,
    pub(crate) feature_dim: Bound<'py, PyArray1<i64>>,
}

/// The arrays of a step's outcome (`[n]`): the rewards and terminations,
/// and the terminated episodes' prediction, label and loss (zero where
/// none terminated); under same-step autoreset also their final sample,
/// cost, raw cost and feature width.
pub(crate) struct Outcomes<'py> {
    pub(crate) reward: Bound<'py, PyArray1<f64>>,
    pub(crate) terminated: Bound<'py, PyArray1<bool>>,
    pub(crate) prediction: Bound<'py, PyArray1<i64>>,
    pub(crate) label: Bound<'py, PyArray1<i64>>,
    pub(crate) loss: Bound<'py, PyArray1<f64>>,
    pub(crate) finals: Option<Finals<'py>>,
}

pub(crate) struct Finals<'py> {
    pub(crate) sample: Bound<'py, PyArray1<i64>>,
    pub(crate) cost: Bound<'py, PyArray1<f64>>,
    pub(crate) raw_cost: Bound<'py, PyArray1<f64>>,
    pub(crate) feature_dim: Bound<'py, PyArray1<i64>>,
}

fn cast<'py, T: PyTypeCheck>(py: Python<'py>, o: &Py<PyAny>) -> PyResult<Bound<'py, T>> {
    Ok(o.bind(py).cast::<T>()?.clone())
}

impl<'py> ObsInfo<'py> {
    pub(crate) fn zeros(py: Python<'py>, layout: &Layout, n: usize) -> Self {
        ObsInfo {
            stage: PyArray1::zeros(py, n, false),
            features: PyArray2::zeros(py, [n, layout.max_dim], false),
            probs: PyArray2::zeros(py, [n, layout.num_classes], false),
            cost_so_far: PyArray2::zeros(py, [n, 1], false),
            action_mask: PyArray2::zeros(py, [n, 2], false),
            sample: PyArray1::zeros(py, n, false),
            cost: PyArray1::zeros(py, n, false),
            raw_cost: PyArray1::zeros(py, n, false),
            feature_dim: PyArray1::zeros(py, n, false),
        }
    }

    pub(crate) fn to_objects(&self) -> Vec<Py<PyAny>> {
        vec![
            self.stage.clone().into_any().unbind(),
            self.features.clone().into_any().unbind(),
            self.probs.clone().into_any().unbind(),
            self.cost_so_far.clone().into_any().unbind(),
            self.action_mask.clone().into_any().unbind(),
            self.sample.clone().into_any().unbind(),
            self.cost.clone().into_any().unbind(),
            self.raw_cost.clone().into_any().unbind(),
            self.feature_dim.clone().into_any().unbind(),
        ]
    }

    pub(crate) fn from_objects(py: Python<'py>, o: &[Py<PyAny>]) -> PyResult<Self> {
        Ok(ObsInfo {
            stage: cast(py, &o[0])?,
            features: cast(py, &o[1])?,
            probs: cast(py, &o[2])?,
            cost_so_far: cast(py, &o[3])?,
            action_mask: cast(py, &o[4])?,
            sample: cast(py, &o[5])?,
            cost: cast(py, &o[6])?,
            raw_cost: cast(py, &o[7])?,
            feature_dim: cast(py, &o[8])?,
        })
    }

    /// `((stage, features, probs, cost_so_far), (action_mask, sample,
    /// cost, raw_cost, feature_dim))`.
    pub(crate) fn into_tuples(self) -> (BatchObsTuple<'py>, BatchInfoTuple<'py>) {
        (
            (self.stage, self.features, self.probs, self.cost_so_far),
            (
                self.action_mask,
                self.sample,
                self.cost,
                self.raw_cost,
                self.feature_dim,
            ),
        )
    }
}

impl<'py> Outcomes<'py> {
    pub(crate) fn zeros(py: Python<'py>, n: usize, same_step: bool) -> Self {
        Outcomes {
            reward: PyArray1::zeros(py, n, false),
            terminated: PyArray1::zeros(py, n, false),
            prediction: PyArray1::zeros(py, n, false),
            label: PyArray1::zeros(py, n, false),
            loss: PyArray1::zeros(py, n, false),
            finals: same_step.then(|| Finals {
                sample: PyArray1::zeros(py, n, false),
                cost: PyArray1::zeros(py, n, false),
                raw_cost: PyArray1::zeros(py, n, false),
                feature_dim: PyArray1::zeros(py, n, false),
            }),
        }
    }

    pub(crate) fn to_objects(&self) -> Vec<Py<PyAny>> {
        let mut v = vec![
            self.reward.clone().into_any().unbind(),
            self.terminated.clone().into_any().unbind(),
            self.prediction.clone().into_any().unbind(),
            self.label.clone().into_any().unbind(),
            self.loss.clone().into_any().unbind(),
        ];
        if let Some(f) = &self.finals {
            v.push(f.sample.clone().into_any().unbind());
            v.push(f.cost.clone().into_any().unbind());
            v.push(f.raw_cost.clone().into_any().unbind());
            v.push(f.feature_dim.clone().into_any().unbind());
        }
        v
    }

    pub(crate) fn from_objects(py: Python<'py>, o: &[Py<PyAny>]) -> PyResult<Self> {
        let finals = if o.len() == 9 {
            Some(Finals {
                sample: cast(py, &o[5])?,
                cost: cast(py, &o[6])?,
                raw_cost: cast(py, &o[7])?,
                feature_dim: cast(py, &o[8])?,
            })
        } else {
            None
        };
        Ok(Outcomes {
            reward: cast(py, &o[0])?,
            terminated: cast(py, &o[1])?,
            prediction: cast(py, &o[2])?,
            label: cast(py, &o[3])?,
            loss: cast(py, &o[4])?,
            finals,
        })
    }
}

/// A writable view of an array's data; refused (`RuntimeError`) if the
/// caller made a returned array read-only or non-contiguous.
fn writable<'py, T: numpy::Element, D: numpy::ndarray::Dimension>(
    a: &Bound<'py, PyArray<T, D>>,
) -> PyResult<PyReadwriteArray<'py, T, D>> {
    a.try_readwrite().map_err(|e| {
        PyRuntimeError::new_err(format!(
            "cannot write into an output array of the vector env (copy=False): {e}"
        ))
    })
}

fn slice_mut<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    a: &'a mut PyReadwriteArray<'_, T, D>,
) -> PyResult<&'a mut [T]> {
    a.as_slice_mut().map_err(|e| {
        PyRuntimeError::new_err(format!(
            "an output array of the vector env is not contiguous (copy=False): {e}"
        ))
    })
}

/// Mutable access to an output array for one call: a fresh array (made in
/// this call, so nothing else refers to it) is written directly, a reused
/// one (`copy=False`) through rust-numpy's borrow check, which also refuses
/// an array the caller made read-only.
pub(crate) enum Access<'py, T: numpy::Element, D: numpy::ndarray::Dimension> {
    Fresh(Bound<'py, PyArray<T, D>>),
    Reused(PyReadwriteArray<'py, T, D>),
}

impl<'py, T: numpy::Element, D: numpy::ndarray::Dimension> Access<'py, T, D> {
    pub(crate) fn new(a: &Bound<'py, PyArray<T, D>>, fresh: bool) -> PyResult<Self> {
        Ok(if fresh {
            Access::Fresh(a.clone())
        } else {
            Access::Reused(writable(a)?)
        })
    }

    pub(crate) fn slice(&mut self) -> PyResult<&mut [T]> {
        match self {
            // SAFETY: the array was made by `PyArray::zeros` in this call
            // (C-contiguous, writeable, owning its data) and has not been
            // handed to Python yet, so no other reference to its data
            // exists while the slice lives.
            Access::Fresh(a) => unsafe { a.as_slice_mut() }.map_err(|e| {
                PyRuntimeError::new_err(format!("a fresh output array is not contiguous: {e}"))
            }),
            Access::Reused(a) => slice_mut(a),
        }
    }
}

/// Where one call's observations and info go; shapes as in [`ObsInfo`].
pub(crate) struct ObsInfoOut<'a> {
    pub(crate) stage: &'a mut [i64],
    pub(crate) features: &'a mut [f32],
    pub(crate) probs: &'a mut [f32],
    pub(crate) cost_so_far: &'a mut [f32],
    pub(crate) action_mask: &'a mut [i8],
    pub(crate) sample: &'a mut [i64],
    pub(crate) cost: &'a mut [f64],
    pub(crate) raw_cost: &'a mut [f64],
    pub(crate) feature_dim: &'a mut [i64],
}

/// Where a step's outcome goes; shapes as in [`Outcomes`].
pub(crate) struct OutcomeOut<'a> {
    pub(crate) reward: &'a mut [f64],
    pub(crate) terminated: &'a mut [bool],
    pub(crate) prediction: &'a mut [i64],
    pub(crate) label: &'a mut [i64],
    pub(crate) loss: &'a mut [f64],
    pub(crate) finals: Option<[FinalsOut<'a>; 1]>,
}

pub(crate) struct FinalsOut<'a> {
    pub(crate) sample: &'a mut [i64],
    pub(crate) cost: &'a mut [f64],
    pub(crate) raw_cost: &'a mut [f64],
    pub(crate) feature_dim: &'a mut [i64],
}

/// The static tables the fill functions read.
pub(crate) struct Tables<'a> {
    pub(crate) layout: &'a Layout,
    pub(crate) costs: &'a [f64],
    pub(crate) raw_costs: &'a [f64],
}

/// Writes every sub-env's observation (features zero-padded to `max_d`;
/// the padding is left alone when the buffer is `zeroed` already) and
/// info.
pub(crate) fn fill_obs_info(
    obs: &BatchObservation,
    info: &BatchInfo,
    tab: &Tables<'_>,
    o: ObsInfoOut<'_>,
    zeroed: bool,
) {
    let dims = &tab.layout.dims;
    let (k, m) = (dims.len(), tab.layout.max_dim);
    o.probs.copy_from_slice(obs.probs());
    o.cost_so_far.copy_from_slice(obs.cost_so_far());
    let rows = o.features.chunks_exact_mut(m.max(1));
    let masks = o.action_mask.chunks_exact_mut(2);
    let per_env = obs.stage().iter().zip(info.done()).zip(info.sample());
    for (i, (((&t, &done), &s), (row, mask))) in per_env.zip(rows.zip(masks)).enumerate() {
        let t = t as usize;
        let d = dims[t];
        row[..d].copy_from_slice(&obs.stage_features(t)[i * d..(i + 1) * d]);
        if !zeroed {
            row[d..].fill(0.0);
        }
        mask[0] = i8::from(!done);
        mask[1] = i8::from(!done && t + 1 < k);
        o.stage[i] = t as i64;
        o.sample[i] = s as i64;
        o.cost[i] = tab.costs[t];
        o.raw_cost[i] = tab.raw_costs[t];
        o.feature_dim[i] = d as i64;
    }
}

/// Writes a step's rewards, terminations and the terminated episodes'
/// outcomes (zero elsewhere).
pub(crate) fn fill_outcome(step: &VecStep<'_>, tab: &Tables<'_>, o: OutcomeOut<'_>) {
    let info = step.info;
    o.reward.copy_from_slice(step.rewards);
    o.terminated.copy_from_slice(step.terminated);
    let mut finals = o.finals;
    for (i, &t) in step.terminated.iter().enumerate() {
        let stage = info.stop_stage()[i] as usize;
        let ok = t && stage < tab.costs.len();
        o.prediction[i] = if ok { info.prediction()[i] as i64 } else { 0 };
        o.label[i] = if ok { info.label()[i] as i64 } else { 0 };
        o.loss[i] = if ok { info.loss()[i] } else { 0.0 };
        if let Some([f]) = &mut finals {
            f.sample[i] = if ok { info.final_sample()[i] as i64 } else { 0 };
            f.cost[i] = if ok { tab.costs[stage] } else { 0.0 };
            f.raw_cost[i] = if ok { tab.raw_costs[stage] } else { 0.0 };
            f.feature_dim[i] = if ok { tab.layout.dims[stage] as i64 } else { 0 };
        }
    }
}

/// `(stage, features [n, max_d], probs [n, C], cost_so_far [n, 1])`.
pub(crate) type BatchObsTuple<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray2<f32>>,
);

/// `(action_mask [n, 2], sample, cost, raw_cost, feature_dim)`.
pub(crate) type BatchInfoTuple<'py> = (
    Bound<'py, PyArray2<i8>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<i64>>,
);

/// `(sample, cost, raw_cost, feature_dim)` of the terminated episodes.
pub(crate) type FinalsTuple<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<i64>>,
);

/// `(prediction, label, loss, finals)`, finals under same-step autoreset.
pub(crate) type BatchOutcomeTuple<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
    Option<FinalsTuple<'py>>,
);

/// What `VecEnv.step` returns: `(obs, reward, terminated, info, outcome)`.
pub(crate) type StepTuple<'py> = (
    BatchObsTuple<'py>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<bool>>,
    BatchInfoTuple<'py>,
    BatchOutcomeTuple<'py>,
);
