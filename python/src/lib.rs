//! `cascade_env._native`: the Rust side of the `cascade_env` Python
//! package. It wraps [`cascade_env::OptimalStoppingEnv`] and
//! [`cascade_env::VecEnv`] over a [`ReplayBackend`] and hands numpy arrays
//! to the Gymnasium classes of `cascade_env/envs.py`, which build the
//! observation and info dicts.
//!
//! Every error of the env crate becomes a Python exception carrying the
//! Rust message ([`to_py_err`]); nothing here unwraps user input, and a
//! panic would surface as pyo3's `PanicException` rather than abort the
//! interpreter. The vector env's step and reset release the GIL while the
//! Rust env runs and fills the output buffers; the buffers become numpy
//! arrays without a copy. A second thread calling into a vector env while
//! that runs gets a `RuntimeError` saying so. A vector env's size is
//! checked against [`MAX_NUM_ENVS`] and [`MAX_BUFFER_BYTES`] before
//! anything is allocated, and its seeds so that no sub-env seed `seed + i`
//! wraps around.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

mod byo;

use cascade_env::{
    Action, AutoReset, BatchInfo, BatchObservation, CostModel, Error, Loss, OptimalStoppingEnv,
    Prediction, ReplayBackend, RewardModel, RewardSpec, StageBackend, SyntheticTraceConfig, VecEnv,
    VecStep,
};
use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadwriteArray,
};
use pyo3::exceptions::{
    PyFileNotFoundError, PyIsADirectoryError, PyOSError, PyPermissionError, PyRuntimeError,
    PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::type_object::PyTypeCheck;

/// The Python exception for an env error, with the Rust message:
/// `ValueError` for bad arguments, corrupt traces and illegal actions,
/// `FileNotFoundError`/`PermissionError`/`IsADirectoryError`/`OSError` for
/// file errors, `RuntimeError` for misuse (step before reset or after the
/// end) and anything else.
fn to_py_err(e: Error) -> PyErr {
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

/// Lower case with `_` read as `-`, so `zero_one` and `Zero-One` both name
/// the 0-1 loss.
fn normalise(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('_', "-")
}

/// The reward spec from the Python names; unknown names and a negative or
/// non-finite alpha are `ValueError`s.
fn parse_spec(alpha: f64, loss: &str, cost: &str, prediction: &str) -> PyResult<RewardSpec> {
    let loss: Loss = loss.parse().map_err(to_py_err)?;
    let cost: CostModel = cost.parse().map_err(to_py_err)?;
    let prediction: Prediction = prediction.parse().map_err(to_py_err)?;
    let spec = RewardSpec {
        alpha,
        loss,
        cost,
        prediction,
    };
    spec.validate().map_err(to_py_err)?;
    Ok(spec)
}

/// An action from its index: 0 = Stop, 1 = Forward, anything else a
/// `ValueError` (never clamped).
fn parse_action(a: i64, env: Option<usize>) -> PyResult<Action> {
    usize::try_from(a)
        .ok()
        .and_then(Action::from_index)
        .ok_or_else(|| {
            let whose = env.map_or(String::new(), |i| format!(" of sub-env {i}"));
            PyValueError::new_err(format!(
                "action {a}{whose} is not in Discrete(2) (0 = stop, 1 = forward)"
            ))
        })
}

/// What Forward at the last stage does: `"error"` (the default: a
/// `ValueError`, as the MDP says) or `"stop"` (taken as Stop, for learners
/// that sample actions without the mask).
fn parse_last_stage_forward(value: &str) -> PyResult<bool> {
    match normalise(value).as_str() {
        "error" => Ok(false),
        "stop" => Ok(true),
        _ => Err(PyValueError::new_err(format!(
            "unknown last_stage_forward {value:?}: expected \"error\" (the default) or \"stop\""
        ))),
    }
}

/// The most sub-envs a vector env may have.
const MAX_NUM_ENVS: usize = 1 << 24;

/// The most memory a vector env's per-sub-env buffers may take, in bytes
/// (16 GiB).
const MAX_BUFFER_BYTES: usize = 1 << 34;

/// Refuses a sub-env count above [`MAX_NUM_ENVS`], or one whose buffers
/// (the Rust env's and the output arrays', estimated from above) would
/// take more than [`MAX_BUFFER_BYTES`], before anything is allocated.
fn check_num_envs(num_envs: usize, layout: &Layout) -> PyResult<()> {
    if num_envs == 0 {
        return Err(PyValueError::new_err("num_envs must be >= 1, got 0"));
    }
    if num_envs > MAX_NUM_ENVS {
        return Err(PyValueError::new_err(format!(
            "num_envs {num_envs} is above the limit of {MAX_NUM_ENVS} sub-envs (2**24)"
        )));
    }
    // Per sub-env: every stage's features (Rust) and two padded output
    // rows, the probabilities likewise, per-stage index lists and a fixed
    // part for the scalars (rounded up).
    let k = layout.dims.len();
    let per_env = layout
        .dims
        .iter()
        .try_fold(0usize, |a, &d| a.checked_add(d.checked_mul(4)?))
        .and_then(|f| f.checked_add(layout.max_dim.checked_mul(8)?))
        .and_then(|f| f.checked_add(layout.num_classes.checked_mul(12)?))
        .and_then(|f| f.checked_add(k.checked_mul(16)?))
        .and_then(|f| f.checked_add(256));
    let bytes = per_env.and_then(|p| p.checked_mul(num_envs));
    match bytes {
        Some(b) if b <= MAX_BUFFER_BYTES => Ok(()),
        _ => Err(PyValueError::new_err(format!(
            "num_envs {num_envs} needs about {} of buffers for this trace ({} bytes per sub-env), above the limit of 16 GiB",
            bytes.map_or_else(|| "more than 2**64 bytes".to_string(), |b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)),
            per_env.map_or_else(|| "more than 2**64".to_string(), |p| p.to_string()),
        ))),
    }
}

/// Refuses a seed for which some sub-env seed `seed + i` would pass
/// `2**64 - 1` (it would wrap around and repeat small seeds' sub-envs).
fn check_vector_seed(seed: Option<u64>, num_envs: usize) -> PyResult<()> {
    if let Some(s) = seed {
        let last = num_envs.saturating_sub(1) as u64;
        if s.checked_add(last).is_none() {
            return Err(PyValueError::new_err(format!(
                "seed {s} is too large for {num_envs} sub-envs: sub-env i uses seed + i, which must stay <= 2**64 - 1; give a seed <= {}",
                u64::MAX - last
            )));
        }
    }
    Ok(())
}

/// The error for a vector env that is in use by another thread (its step
/// or reset runs without the GIL).
fn busy(_: pyo3::pycell::PyBorrowMutError) -> PyErr {
    PyRuntimeError::new_err(
        "the vector env is busy in another thread (a step or reset is running); \
         one vector env serves one thread at a time: give each thread its own, or hold a lock around its calls",
    )
}

fn load_backend(py: Python<'_>, trace: &Path) -> PyResult<ReplayBackend> {
    py.detach(|| ReplayBackend::load(trace)).map_err(to_py_err)
}

fn header_json(backend: &ReplayBackend) -> PyResult<String> {
    serde_json::to_string(&backend.header())
        .map_err(|e| PyRuntimeError::new_err(format!("cannot encode the trace header: {e}")))
}

/// The static description shared by both env classes.
#[derive(Debug, Clone, Default)]
struct Layout {
    dims: Vec<usize>,
    max_dim: usize,
    num_classes: usize,
    num_samples: usize,
    header: String,
}

impl Layout {
    fn of(backend: &ReplayBackend) -> PyResult<Self> {
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

/// `features` copied into a zero-padded row of `max_dim` values.
fn padded(features: &[f32], max_dim: usize) -> Vec<f32> {
    let mut row = Vec::with_capacity(max_dim);
    row.extend_from_slice(features);
    row.resize(max_dim, 0.0);
    row
}

/// One observation: `(stage, features [max_d] zero-padded, probs [C],
/// cost_so_far)`.
type ObsTuple<'py> = (
    usize,
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyArray1<f32>>,
    f32,
);

/// One info: `(mask_stop, mask_forward, sample, cost, raw_cost,
/// feature_dim, outcome)` with `outcome = (prediction, label, loss)` once
/// terminated.
type InfoTuple = (bool, bool, usize, f64, f64, usize, Option<(u32, u32, f64)>);

/// The read-only properties both envs take from their trace [`Layout`]
/// (field `layout`), as one more `#[pymethods]` block per class.
macro_rules! layout_getters {
    ($class:ty) => {
        #[pymethods]
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

layout_getters!(NativeEnv);
layout_getters!(NativeVecEnv);

/// CascadeStopping-v0 over a replay trace, one episode at a time (the Rust
/// `OptimalStoppingEnv`). The Gymnasium class is `cascade_env.CascadeStoppingEnv`.
#[pyclass(module = "cascade_env._native", name = "Env")]
struct NativeEnv {
    env: OptimalStoppingEnv<ReplayBackend>,
    layout: Layout,
    /// Forward at the last stage is taken as Stop.
    forward_stops: bool,
}

impl NativeEnv {
    fn obs<'py>(&self, py: Python<'py>, o: cascade_env::Observation) -> ObsTuple<'py> {
        (
            o.stage,
            padded(&o.features, self.layout.max_dim).into_pyarray(py),
            o.probs.into_pyarray(py),
            o.cost_so_far,
        )
    }

    fn info(&self, stage: usize, i: &cascade_env::Info) -> InfoTuple {
        let outcome = match (i.prediction, i.label, i.loss) {
            (Some(p), Some(y), Some(l)) => Some((p, y, l)),
            _ => None,
        };
        (
            i.action_mask.stop,
            i.action_mask.forward,
            i.sample,
            i.cost,
            i.raw_cost,
            self.layout.dims[stage],
            outcome,
        )
    }
}

#[pymethods]
impl NativeEnv {
    /// Loads `trace` and builds the env; see `cascade_env.CascadeStoppingEnv`.
    #[new]
    #[pyo3(signature = (trace, alpha=0.1, loss="zero-one", cost="cumulative", prediction="argmax", last_stage_forward="error"))]
    fn new(
        py: Python<'_>,
        trace: PathBuf,
        alpha: f64,
        loss: &str,
        cost: &str,
        prediction: &str,
        last_stage_forward: &str,
    ) -> PyResult<Self> {
        let spec = parse_spec(alpha, loss, cost, prediction)?;
        let forward_stops = parse_last_stage_forward(last_stage_forward)?;
        let backend = load_backend(py, &trace)?;
        let layout = Layout::of(&backend)?;
        let env = OptimalStoppingEnv::new(backend, spec).map_err(to_py_err)?;
        Ok(NativeEnv {
            env,
            layout,
            forward_stops,
        })
    }

    /// The legal actions now, `(stop, forward)`: both false before the
    /// first reset and after termination.
    fn action_mask(&self) -> (bool, bool) {
        let m = self.env.action_mask();
        (m.stop, m.forward)
    }

    /// The random generator's state `(state, increment)`.
    fn rng_state(&self) -> (u64, u64) {
        let [s, i] = self.env.rng().state();
        (s, i)
    }

    /// Restores a state of `rng_state` (the episode, if any, goes on).
    fn set_rng_state(&mut self, state: u64, increment: u64) -> PyResult<()> {
        let rng = cascade_env::EnvRng::from_state([state, increment]).map_err(to_py_err)?;
        self.env.set_rng(rng);
        Ok(())
    }

    /// Starts an episode: `(obs, info)` tuples (see `cascade_env/envs.py`).
    #[pyo3(signature = (seed=None, sample=None))]
    fn reset<'py>(
        &mut self,
        py: Python<'py>,
        seed: Option<u64>,
        sample: Option<usize>,
    ) -> PyResult<(ObsTuple<'py>, InfoTuple)> {
        let options = cascade_env::ResetOptions { sample };
        let (o, i) = self.env.reset(seed, options).map_err(to_py_err)?;
        let info = self.info(o.stage, &i);
        Ok((self.obs(py, o), info))
    }

    /// Takes `action` (0 = stop, 1 = forward): `(obs, reward, terminated,
    /// info)` tuples.
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        action: i64,
    ) -> PyResult<(ObsTuple<'py>, f64, bool, InfoTuple)> {
        let mut action = parse_action(action, None)?;
        if self.forward_stops && action == Action::Forward {
            let m = self.env.action_mask();
            if m.stop && !m.forward {
                action = Action::Stop;
            }
        }
        let s = self.env.step(action).map_err(to_py_err)?;
        let info = self.info(s.obs.stage, &s.info);
        Ok((self.obs(py, s.obs), s.reward, s.terminated, info))
    }

    /// Normalised `Cost(t+1)` per 0-based stage t under the cost model.
    #[getter]
    fn stage_costs(&self) -> Vec<f64> {
        costs(self.env.reward_model())
    }
}

fn costs(model: &RewardModel) -> Vec<f64> {
    (0..model.num_stages()).map(|t| model.cost(t)).collect()
}

fn arr2<T: numpy::Element>(
    py: Python<'_>,
    v: Vec<T>,
    cols: usize,
) -> PyResult<Bound<'_, PyArray2<T>>> {
    let rows = v.len().checked_div(cols).unwrap_or(0);
    let a = Array2::from_shape_vec((rows, cols), v)
        .map_err(|e| PyRuntimeError::new_err(format!("buffer shape: {e}")))?;
    Ok(a.into_pyarray(py))
}

/// The numpy arrays a vector-env call writes its observations and info
/// into (`[n]` unless noted).
struct ObsInfo<'py> {
    stage: Bound<'py, PyArray1<i64>>,
    /// `[n, max_d]`.
    features: Bound<'py, PyArray2<f32>>,
    /// `[n, C]`.
    probs: Bound<'py, PyArray2<f32>>,
    /// `[n, 1]`.
    cost_so_far: Bound<'py, PyArray2<f32>>,
    /// `[n, 2]`.
    action_mask: Bound<'py, PyArray2<i8>>,
    sample: Bound<'py, PyArray1<i64>>,
    cost: Bound<'py, PyArray1<f64>>,
    raw_cost: Bound<'py, PyArray1<f64>>,
    feature_dim: Bound<'py, PyArray1<i64>>,
}

/// The arrays of a step's outcome (`[n]`): the rewards and terminations,
/// and the terminated episodes' prediction, label and loss (zero where
/// none terminated); under same-step autoreset also their final sample,
/// cost, raw cost and feature width.
struct Outcomes<'py> {
    reward: Bound<'py, PyArray1<f64>>,
    terminated: Bound<'py, PyArray1<bool>>,
    prediction: Bound<'py, PyArray1<i64>>,
    label: Bound<'py, PyArray1<i64>>,
    loss: Bound<'py, PyArray1<f64>>,
    finals: Option<Finals<'py>>,
}

struct Finals<'py> {
    sample: Bound<'py, PyArray1<i64>>,
    cost: Bound<'py, PyArray1<f64>>,
    raw_cost: Bound<'py, PyArray1<f64>>,
    feature_dim: Bound<'py, PyArray1<i64>>,
}

fn cast<'py, T: PyTypeCheck>(py: Python<'py>, o: &Py<PyAny>) -> PyResult<Bound<'py, T>> {
    Ok(o.bind(py).cast::<T>()?.clone())
}

impl<'py> ObsInfo<'py> {
    fn zeros(py: Python<'py>, layout: &Layout, n: usize) -> Self {
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

    fn to_objects(&self) -> Vec<Py<PyAny>> {
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

    fn from_objects(py: Python<'py>, o: &[Py<PyAny>]) -> PyResult<Self> {
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
    fn into_tuples(self) -> (BatchObsTuple<'py>, BatchInfoTuple<'py>) {
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
    fn zeros(py: Python<'py>, n: usize, same_step: bool) -> Self {
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

    fn to_objects(&self) -> Vec<Py<PyAny>> {
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

    fn from_objects(py: Python<'py>, o: &[Py<PyAny>]) -> PyResult<Self> {
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
enum Access<'py, T: numpy::Element, D: numpy::ndarray::Dimension> {
    Fresh(Bound<'py, PyArray<T, D>>),
    Reused(PyReadwriteArray<'py, T, D>),
}

impl<'py, T: numpy::Element, D: numpy::ndarray::Dimension> Access<'py, T, D> {
    fn new(a: &Bound<'py, PyArray<T, D>>, fresh: bool) -> PyResult<Self> {
        Ok(if fresh {
            Access::Fresh(a.clone())
        } else {
            Access::Reused(writable(a)?)
        })
    }

    fn slice(&mut self) -> PyResult<&mut [T]> {
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
struct ObsInfoOut<'a> {
    stage: &'a mut [i64],
    features: &'a mut [f32],
    probs: &'a mut [f32],
    cost_so_far: &'a mut [f32],
    action_mask: &'a mut [i8],
    sample: &'a mut [i64],
    cost: &'a mut [f64],
    raw_cost: &'a mut [f64],
    feature_dim: &'a mut [i64],
}

/// Where a step's outcome goes; shapes as in [`Outcomes`].
struct OutcomeOut<'a> {
    reward: &'a mut [f64],
    terminated: &'a mut [bool],
    prediction: &'a mut [i64],
    label: &'a mut [i64],
    loss: &'a mut [f64],
    finals: Option<[FinalsOut<'a>; 1]>,
}

struct FinalsOut<'a> {
    sample: &'a mut [i64],
    cost: &'a mut [f64],
    raw_cost: &'a mut [f64],
    feature_dim: &'a mut [i64],
}

/// The static tables the fill functions read.
struct Tables<'a> {
    layout: &'a Layout,
    costs: &'a [f64],
    raw_costs: &'a [f64],
}

/// Writes every sub-env's observation (features zero-padded to `max_d`;
/// the padding is left alone when the buffer is `zeroed` already) and
/// info.
fn fill_obs_info(
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
fn fill_outcome(step: &VecStep<'_>, tab: &Tables<'_>, o: OutcomeOut<'_>) {
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
type BatchObsTuple<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray2<f32>>,
);

/// `(action_mask [n, 2], sample, cost, raw_cost, feature_dim)`.
type BatchInfoTuple<'py> = (
    Bound<'py, PyArray2<i8>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<i64>>,
);

/// `(sample, cost, raw_cost, feature_dim)` of the terminated episodes.
type FinalsTuple<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<i64>>,
);

/// `(prediction, label, loss, finals)`, finals under same-step autoreset.
type BatchOutcomeTuple<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
    Option<FinalsTuple<'py>>,
);

/// What `VecEnv.step` returns: `(obs, reward, terminated, info, outcome)`.
type StepTuple<'py> = (
    BatchObsTuple<'py>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<bool>>,
    BatchInfoTuple<'py>,
    BatchOutcomeTuple<'py>,
);

/// The output arrays kept between calls with `copy=False`: two sets of
/// observation arrays used in turn (so the previous call's observation,
/// the final observation of a same-step restart, is still intact) and one
/// set of outcome arrays.
struct Reused {
    obs_info: [Vec<Py<PyAny>>; 2],
    outcomes: Vec<Py<PyAny>>,
    turn: usize,
}

/// n episodes of CascadeStopping-v0 in lock step (the Rust `VecEnv`). The
/// Gymnasium class is `cascade_env.CascadeStoppingVectorEnv`.
#[pyclass(module = "cascade_env._native", name = "VecEnv")]
struct NativeVecEnv {
    venv: VecEnv<ReplayBackend>,
    layout: Layout,
    costs: Vec<f64>,
    raw_costs: Vec<f64>,
    actions: Vec<Action>,
    reused: Option<Reused>,
    /// Forward at the last stage is taken as Stop.
    forward_stops: bool,
}

impl NativeVecEnv {
    /// Reads one action per sub-env into `self.actions`; refuses a wrong
    /// count or a value other than 0 and 1.
    fn parse_actions(&mut self, values: impl ExactSizeIterator<Item = i64>) -> PyResult<()> {
        let n = self.actions.len();
        if values.len() != n {
            return Err(PyValueError::new_err(format!(
                "step: {} actions for {n} sub-envs",
                values.len()
            )));
        }
        for (i, (slot, a)) in self.actions.iter_mut().zip(values).enumerate() {
            *slot = parse_action(a, Some(i))?;
        }
        if self.forward_stops {
            for (i, slot) in self.actions.iter_mut().enumerate() {
                if *slot == Action::Forward {
                    let m = self.venv.action_mask(i);
                    if m.stop && !m.forward {
                        *slot = Action::Stop;
                    }
                }
            }
        }
        Ok(())
    }

    /// The arrays this call writes into: fresh ones, or with `copy=False`
    /// the next set of the reused ones.
    fn outputs<'py>(
        &mut self,
        py: Python<'py>,
        with_outcome: bool,
    ) -> PyResult<(ObsInfo<'py>, Option<Outcomes<'py>>)> {
        let n = self.actions.len();
        let same_step = self.venv.autoreset() == AutoReset::SameStep;
        match &mut self.reused {
            None => Ok((
                ObsInfo::zeros(py, &self.layout, n),
                with_outcome.then(|| Outcomes::zeros(py, n, same_step)),
            )),
            Some(r) => {
                r.turn ^= 1;
                let oi = ObsInfo::from_objects(py, &r.obs_info[r.turn])?;
                let out = if with_outcome {
                    Some(Outcomes::from_objects(py, &r.outcomes)?)
                } else {
                    None
                };
                Ok((oi, out))
            }
        }
    }
}

#[pymethods]
impl NativeVecEnv {
    /// Loads `trace` and builds `num_envs` sub-envs; `autoreset` is
    /// `"next-step"`, `"same-step"` or `"disabled"`. With `copy=False` the
    /// output arrays are reused: a call's arrays are overwritten two
    /// calls later (observations) or by the next step (outcomes).
    #[new]
    #[pyo3(signature = (trace, num_envs, autoreset="next-step", alpha=0.1, loss="zero-one", cost="cumulative", prediction="argmax", copy=true, last_stage_forward="error"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        trace: PathBuf,
        num_envs: usize,
        autoreset: &str,
        alpha: f64,
        loss: &str,
        cost: &str,
        prediction: &str,
        copy: bool,
        last_stage_forward: &str,
    ) -> PyResult<Self> {
        let spec = parse_spec(alpha, loss, cost, prediction)?;
        let forward_stops = parse_last_stage_forward(last_stage_forward)?;
        if num_envs > MAX_NUM_ENVS {
            // Refused before the trace is even read.
            check_num_envs(num_envs, &Layout::default())?;
        }
        let mode = match normalise(autoreset).as_str() {
            "next-step" | "nextstep" => AutoReset::NextStep,
            "same-step" | "samestep" => AutoReset::SameStep,
            "disabled" => AutoReset::Disabled,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "unknown autoreset mode {autoreset:?}: expected \"next-step\", \"same-step\" or \"disabled\""
                )))
            }
        };
        let backend = load_backend(py, &trace)?;
        let layout = Layout::of(&backend)?;
        check_num_envs(num_envs, &layout)?;
        let venv = VecEnv::new(backend, spec, num_envs, mode).map_err(to_py_err)?;
        let model = venv.reward_model();
        let k = model.num_stages();
        let reused = (!copy).then(|| Reused {
            obs_info: [
                ObsInfo::zeros(py, &layout, num_envs).to_objects(),
                ObsInfo::zeros(py, &layout, num_envs).to_objects(),
            ],
            outcomes: Outcomes::zeros(py, num_envs, mode == AutoReset::SameStep).to_objects(),
            turn: 0,
        });
        Ok(NativeVecEnv {
            costs: costs(model),
            raw_costs: (0..k).map(|t| model.raw_cost(t)).collect(),
            actions: vec![Action::Stop; num_envs],
            venv,
            layout,
            reused,
            forward_stops,
        })
    }

    /// The legal actions of every sub-env now, `bool [n, 2]` (stop,
    /// forward; both false for a done sub-env and before the first reset).
    fn action_masks<'py>(
        slf: &Bound<'py, Self>,
        py: Python<'py>,
    ) -> PyResult<Bound<'py, PyArray2<bool>>> {
        let this = slf.try_borrow().map_err(|_| {
            PyRuntimeError::new_err(
                "the vector env is busy in another thread (a step or reset is running); \
                 one vector env serves one thread at a time",
            )
        })?;
        let n = this.venv.num_envs();
        let mut v = Vec::with_capacity(2 * n);
        for i in 0..n {
            let m = this.venv.action_mask(i);
            v.push(m.stop);
            v.push(m.forward);
        }
        arr2(py, v, 2)
    }

    /// Resets every sub-env (`mask=None`) or those where `mask` is true;
    /// sub-env i is reseeded with `seed + i`. Returns `(obs, info)` tuples.
    #[pyo3(signature = (seed=None, mask=None))]
    fn reset<'py>(
        slf: &Bound<'py, Self>,
        py: Python<'py>,
        seed: Option<u64>,
        mask: Option<PyReadonlyArray1<'py, bool>>,
    ) -> PyResult<(BatchObsTuple<'py>, BatchInfoTuple<'py>)> {
        let mut this = slf.try_borrow_mut().map_err(busy)?;
        let this = &mut *this;
        check_vector_seed(seed, this.venv.num_envs())?;
        let mask: Option<Vec<bool>> = mask.map(|m| m.as_array().to_vec());
        let zeroed = this.reused.is_none();
        let (oi, _) = this.outputs(py, false)?;
        let z = zeroed;
        let (mut a, mut b, mut c, mut d) = (
            Access::new(&oi.stage, z)?,
            Access::new(&oi.features, z)?,
            Access::new(&oi.probs, z)?,
            Access::new(&oi.cost_so_far, z)?,
        );
        let (mut e, mut f, mut g, mut h, mut i) = (
            Access::new(&oi.action_mask, z)?,
            Access::new(&oi.sample, z)?,
            Access::new(&oi.cost, z)?,
            Access::new(&oi.raw_cost, z)?,
            Access::new(&oi.feature_dim, z)?,
        );
        let out = ObsInfoOut {
            stage: a.slice()?,
            features: b.slice()?,
            probs: c.slice()?,
            cost_so_far: d.slice()?,
            action_mask: e.slice()?,
            sample: f.slice()?,
            cost: g.slice()?,
            raw_cost: h.slice()?,
            feature_dim: i.slice()?,
        };
        let NativeVecEnv {
            venv,
            layout,
            costs,
            raw_costs,
            ..
        } = this;
        let tab = Tables {
            layout,
            costs,
            raw_costs,
        };
        py.detach(|| -> Result<(), Error> {
            let step = match &mask {
                Some(m) => venv.reset_envs(m, seed)?,
                None => venv.reset(seed)?,
            };
            fill_obs_info(step.obs, step.info, &tab, out, zeroed);
            Ok(())
        })
        .map_err(to_py_err)?;
        drop((a, b, c, d, e, f, g, h, i));
        Ok(oi.into_tuples())
    }

    /// Takes one action per sub-env (`int64 [n]`, 0 = stop, 1 = forward):
    /// `(obs, reward, terminated, info, outcome)` tuples.
    fn step<'py>(
        slf: &Bound<'py, Self>,
        py: Python<'py>,
        actions: &Bound<'py, PyAny>,
    ) -> PyResult<StepTuple<'py>> {
        let mut this = slf.try_borrow_mut().map_err(busy)?;
        let this = &mut *this;
        if let Ok(a) = actions.extract::<PyReadonlyArray1<'py, i64>>() {
            this.parse_actions(a.as_array().iter().copied())?;
        } else if let Ok(a) = actions.extract::<PyReadonlyArray1<'py, bool>>() {
            this.parse_actions(a.as_array().iter().map(|&x| i64::from(x)))?;
        } else if let Ok(a) = actions.extract::<PyReadonlyArray1<'py, i8>>() {
            this.parse_actions(a.as_array().iter().map(|&x| i64::from(x)))?;
        } else if let Ok(a) = actions.extract::<PyReadonlyArray1<'py, i32>>() {
            this.parse_actions(a.as_array().iter().map(|&x| i64::from(x)))?;
        } else {
            return Err(PyTypeError::new_err(
                "actions must be a one-dimensional numpy array of int64, int32, int8 or bool",
            ));
        }
        let zeroed = this.reused.is_none();
        let (oi, oc) = this.outputs(py, true)?;
        let oc = oc.ok_or_else(|| PyRuntimeError::new_err("no outcome arrays"))?;
        let z = zeroed;
        let (mut a, mut b, mut c, mut d) = (
            Access::new(&oi.stage, z)?,
            Access::new(&oi.features, z)?,
            Access::new(&oi.probs, z)?,
            Access::new(&oi.cost_so_far, z)?,
        );
        let (mut e, mut f, mut g, mut h, mut i) = (
            Access::new(&oi.action_mask, z)?,
            Access::new(&oi.sample, z)?,
            Access::new(&oi.cost, z)?,
            Access::new(&oi.raw_cost, z)?,
            Access::new(&oi.feature_dim, z)?,
        );
        let (mut r, mut t, mut p, mut l, mut s) = (
            Access::new(&oc.reward, z)?,
            Access::new(&oc.terminated, z)?,
            Access::new(&oc.prediction, z)?,
            Access::new(&oc.label, z)?,
            Access::new(&oc.loss, z)?,
        );
        let mut finals_rw = match &oc.finals {
            Some(x) => Some((
                Access::new(&x.sample, z)?,
                Access::new(&x.cost, z)?,
                Access::new(&x.raw_cost, z)?,
                Access::new(&x.feature_dim, z)?,
            )),
            None => None,
        };
        let finals = match &mut finals_rw {
            Some((fs, fc, fr, fd)) => Some([FinalsOut {
                sample: fs.slice()?,
                cost: fc.slice()?,
                raw_cost: fr.slice()?,
                feature_dim: fd.slice()?,
            }]),
            None => None,
        };
        let out = ObsInfoOut {
            stage: a.slice()?,
            features: b.slice()?,
            probs: c.slice()?,
            cost_so_far: d.slice()?,
            action_mask: e.slice()?,
            sample: f.slice()?,
            cost: g.slice()?,
            raw_cost: h.slice()?,
            feature_dim: i.slice()?,
        };
        let outcome = OutcomeOut {
            reward: r.slice()?,
            terminated: t.slice()?,
            prediction: p.slice()?,
            label: l.slice()?,
            loss: s.slice()?,
            finals,
        };
        let NativeVecEnv {
            venv,
            layout,
            costs,
            raw_costs,
            actions,
            ..
        } = this;
        let tab = Tables {
            layout,
            costs,
            raw_costs,
        };
        py.detach(|| -> Result<(), Error> {
            let step = venv.step(actions)?;
            fill_obs_info(step.obs, step.info, &tab, out, zeroed);
            fill_outcome(&step, &tab, outcome);
            Ok(())
        })
        .map_err(to_py_err)?;
        drop((a, b, c, d, e, f, g, h, i, r, t, p, l, s, finals_rw));
        let (obs, info) = oi.into_tuples();
        let finals = oc
            .finals
            .map(|x| (x.sample, x.cost, x.raw_cost, x.feature_dim));
        Ok((
            obs,
            oc.reward,
            oc.terminated,
            info,
            (oc.prediction, oc.label, oc.loss, finals),
        ))
    }

    /// Number of sub-envs n.
    #[getter]
    fn num_envs(&self) -> usize {
        self.actions.len()
    }

    /// Normalised `Cost(t+1)` per 0-based stage t under the cost model.
    #[getter]
    fn stage_costs(&self) -> Vec<f64> {
        self.costs.clone()
    }
}

/// `(header_json, [features [N, d_t]], [probs [N, C]], labels [N] int64,
/// costs [K] float64)`.
type TraceTuple<'py> = (
    String,
    Vec<Bound<'py, PyArray2<f32>>>,
    Vec<Bound<'py, PyArray2<f32>>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
);

/// Reads and validates a trace file; see `cascade_env.load_trace`.
#[pyfunction]
fn load_trace(py: Python<'_>, path: PathBuf) -> PyResult<TraceTuple<'_>> {
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
fn write_synthetic_trace(
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

/// The Rust side of the `cascade_env` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeEnv>()?;
    m.add_class::<NativeVecEnv>()?;
    m.add_function(wrap_pyfunction!(load_trace, m)?)?;
    m.add_function(wrap_pyfunction!(write_synthetic_trace, m)?)?;
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
