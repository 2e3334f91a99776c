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
//! arrays without a copy.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use cascade_env::{
    Action, AutoReset, BatchInfo, BatchObservation, CostModel, Error, Loss, OptimalStoppingEnv,
    Prediction, ReplayBackend, RewardModel, RewardSpec, StageBackend, SyntheticConfig, VecEnv,
    VecStep,
};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1};
use pyo3::exceptions::{
    PyFileNotFoundError, PyIsADirectoryError, PyOSError, PyPermissionError, PyRuntimeError,
    PyValueError,
};
use pyo3::prelude::*;

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
    let loss = match normalise(loss).as_str() {
        "zero-one" | "0-1" => Loss::ZeroOne,
        "cross-entropy" => Loss::CrossEntropy,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unknown loss {loss:?}: expected \"zero-one\" or \"cross-entropy\""
            )))
        }
    };
    let cost = match normalise(cost).as_str() {
        "cumulative" => CostModel::Cumulative,
        "exit" => CostModel::Exit,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unknown cost model {cost:?}: expected \"cumulative\" or \"exit\""
            )))
        }
    };
    let prediction = match normalise(prediction).as_str() {
        "argmax" => Prediction::Argmax,
        "sample" => Prediction::Sample,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unknown prediction {prediction:?}: expected \"argmax\" or \"sample\""
            )))
        }
    };
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

fn load_backend(py: Python<'_>, trace: &Path) -> PyResult<ReplayBackend> {
    py.detach(|| ReplayBackend::load(trace)).map_err(to_py_err)
}

fn header_json(backend: &ReplayBackend) -> PyResult<String> {
    serde_json::to_string(&backend.header())
        .map_err(|e| PyRuntimeError::new_err(format!("cannot encode the trace header: {e}")))
}

/// The static description shared by both env classes.
#[derive(Debug, Clone)]
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

/// CascadeStopping-v0 over a replay trace, one episode at a time (the Rust
/// `OptimalStoppingEnv`). The Gymnasium class is `cascade_env.CascadeStoppingEnv`.
#[pyclass(module = "cascade_env._native", name = "Env")]
struct NativeEnv {
    env: OptimalStoppingEnv<ReplayBackend>,
    layout: Layout,
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
    #[pyo3(signature = (trace, alpha=0.1, loss="zero-one", cost="cumulative", prediction="argmax"))]
    fn new(
        py: Python<'_>,
        trace: PathBuf,
        alpha: f64,
        loss: &str,
        cost: &str,
        prediction: &str,
    ) -> PyResult<Self> {
        let spec = parse_spec(alpha, loss, cost, prediction)?;
        let backend = load_backend(py, &trace)?;
        let layout = Layout::of(&backend)?;
        let env = OptimalStoppingEnv::new(backend, spec).map_err(to_py_err)?;
        Ok(NativeEnv { env, layout })
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
        let action = parse_action(action, None)?;
        let s = self.env.step(action).map_err(to_py_err)?;
        let info = self.info(s.obs.stage, &s.info);
        Ok((self.obs(py, s.obs), s.reward, s.terminated, info))
    }

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

    /// Normalised `Cost(t+1)` per 0-based stage t under the cost model.
    #[getter]
    fn stage_costs(&self) -> Vec<f64> {
        costs(self.env.reward_model())
    }
}

fn costs(model: &RewardModel) -> Vec<f64> {
    (0..model.num_stages()).map(|t| model.cost(t)).collect()
}

/// The per-step buffers of the vector env, filled without the GIL and
/// handed to numpy without a copy.
#[derive(Debug, Default)]
struct Batch {
    stage: Vec<i64>,
    features: Vec<f32>,
    probs: Vec<f32>,
    cost_so_far: Vec<f32>,
    action_mask: Vec<i8>,
    sample: Vec<i64>,
    cost: Vec<f64>,
    raw_cost: Vec<f64>,
    feature_dim: Vec<i64>,
}

/// The outcome of the episodes that terminated in a step (zero where none
/// did), plus for same-step autoreset the final info of those episodes.
#[derive(Debug, Default)]
struct Outcome {
    reward: Vec<f64>,
    terminated: Vec<bool>,
    prediction: Vec<i64>,
    label: Vec<i64>,
    loss: Vec<f64>,
    /// `(sample, cost, raw_cost, feature_dim)` of the terminated episodes.
    finals: Option<Finals>,
}

/// `(sample, cost, raw_cost, feature_dim)` per sub-env.
type Finals = (Vec<i64>, Vec<f64>, Vec<f64>, Vec<i64>);

fn fill_batch(
    obs: &BatchObservation,
    info: &BatchInfo,
    layout: &Layout,
    costs: &[f64],
    raw: &[f64],
) -> Batch {
    let n = obs.num_envs();
    let (k, m) = (layout.dims.len(), layout.max_dim);
    let mut b = Batch {
        stage: Vec::with_capacity(n),
        features: Vec::with_capacity(n * m),
        probs: obs.probs().to_vec(),
        cost_so_far: obs.cost_so_far().to_vec(),
        action_mask: Vec::with_capacity(2 * n),
        sample: info.sample().iter().map(|&s| s as i64).collect(),
        cost: Vec::with_capacity(n),
        raw_cost: Vec::with_capacity(n),
        feature_dim: Vec::with_capacity(n),
    };
    for (i, (&t, &done)) in obs.stage().iter().zip(info.done()).enumerate() {
        let t = t as usize;
        let d = layout.dims[t];
        b.stage.push(t as i64);
        b.features
            .extend_from_slice(&obs.stage_features(t)[i * d..(i + 1) * d]);
        b.features.resize(b.features.len() + (m - d), 0.0);
        b.action_mask.push(i8::from(!done));
        b.action_mask.push(i8::from(!done && t + 1 < k));
        b.cost.push(costs[t]);
        b.raw_cost.push(raw[t]);
        b.feature_dim.push(d as i64);
    }
    b
}

fn fill_outcome(
    step: &VecStep<'_>,
    layout: &Layout,
    costs: &[f64],
    raw: &[f64],
    same_step: bool,
) -> Outcome {
    let info = step.info;
    let term = step.terminated;
    let pick = |ok: bool, v: i64| if ok { v } else { 0 };
    let mut o = Outcome {
        reward: step.rewards.to_vec(),
        terminated: term.to_vec(),
        prediction: term
            .iter()
            .zip(info.prediction())
            .map(|(&t, &p)| pick(t, p as i64))
            .collect(),
        label: term
            .iter()
            .zip(info.label())
            .map(|(&t, &y)| pick(t, y as i64))
            .collect(),
        loss: term
            .iter()
            .zip(info.loss())
            .map(|(&t, &l)| if t { l } else { 0.0 })
            .collect(),
        finals: None,
    };
    if same_step {
        let n = term.len();
        let (mut s, mut c, mut r, mut d) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (i, &t) in term.iter().enumerate() {
            let stage = info.stop_stage()[i] as usize;
            let ok = t && stage < costs.len();
            s.push(pick(ok, info.final_sample()[i] as i64));
            c.push(if ok { costs[stage] } else { 0.0 });
            r.push(if ok { raw[stage] } else { 0.0 });
            d.push(pick(
                ok,
                layout.dims.get(stage).copied().unwrap_or(0) as i64,
            ));
        }
        o.finals = Some((s, c, r, d));
    }
    o
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

/// `(prediction, label, loss, finals)` with `finals = (sample, cost,
/// raw_cost, feature_dim)` under same-step autoreset.
type BatchOutcomeTuple<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
    Option<BatchInfoFinals<'py>>,
);

type BatchInfoFinals<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<i64>>,
);

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

impl Batch {
    fn into_py<'py>(
        self,
        py: Python<'py>,
        layout: &Layout,
    ) -> PyResult<(BatchObsTuple<'py>, BatchInfoTuple<'py>)> {
        let obs = (
            self.stage.into_pyarray(py),
            arr2(py, self.features, layout.max_dim)?,
            arr2(py, self.probs, layout.num_classes)?,
            arr2(py, self.cost_so_far, 1)?,
        );
        let info = (
            arr2(py, self.action_mask, 2)?,
            self.sample.into_pyarray(py),
            self.cost.into_pyarray(py),
            self.raw_cost.into_pyarray(py),
            self.feature_dim.into_pyarray(py),
        );
        Ok((obs, info))
    }
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
}

/// What `VecEnv.step` returns: `(obs, reward, terminated, info, outcome)`.
type StepTuple<'py> = (
    BatchObsTuple<'py>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<bool>>,
    BatchInfoTuple<'py>,
    BatchOutcomeTuple<'py>,
);

#[pymethods]
impl NativeVecEnv {
    /// Loads `trace` and builds `num_envs` sub-envs; `autoreset` is
    /// `"next-step"`, `"same-step"` or `"disabled"`.
    #[new]
    #[pyo3(signature = (trace, num_envs, autoreset="next-step", alpha=0.1, loss="zero-one", cost="cumulative", prediction="argmax"))]
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
    ) -> PyResult<Self> {
        let spec = parse_spec(alpha, loss, cost, prediction)?;
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
        let venv = VecEnv::new(backend, spec, num_envs, mode).map_err(to_py_err)?;
        let model = venv.reward_model();
        let k = model.num_stages();
        Ok(NativeVecEnv {
            costs: costs(model),
            raw_costs: (0..k).map(|t| model.raw_cost(t)).collect(),
            actions: vec![Action::Stop; num_envs],
            venv,
            layout,
        })
    }

    /// Resets every sub-env (`mask=None`) or those where `mask` is true;
    /// sub-env i is reseeded with `seed + i`. Returns `(obs, info)` tuples.
    #[pyo3(signature = (seed=None, mask=None))]
    fn reset<'py>(
        &mut self,
        py: Python<'py>,
        seed: Option<u64>,
        mask: Option<PyReadonlyArray1<'py, bool>>,
    ) -> PyResult<(BatchObsTuple<'py>, BatchInfoTuple<'py>)> {
        let mask: Option<Vec<bool>> = mask.map(|m| m.as_array().to_vec());
        let this = &mut *self;
        let batch = py.detach(|| -> Result<Batch, Error> {
            let step = match &mask {
                Some(m) => this.venv.reset_envs(m, seed)?,
                None => this.venv.reset(seed)?,
            };
            Ok(fill_batch(
                step.obs,
                step.info,
                &this.layout,
                &this.costs,
                &this.raw_costs,
            ))
        });
        batch.map_err(to_py_err)?.into_py(py, &self.layout)
    }

    /// Takes one action per sub-env (`int64 [n]`, 0 = stop, 1 = forward):
    /// `(obs, reward, terminated, info, outcome)` tuples.
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        actions: PyReadonlyArray1<'py, i64>,
    ) -> PyResult<StepTuple<'py>> {
        let n = self.actions.len();
        let view = actions.as_array();
        if view.len() != n {
            return Err(PyValueError::new_err(format!(
                "step: {} actions for {n} sub-envs",
                view.len()
            )));
        }
        for (i, (slot, &a)) in self.actions.iter_mut().zip(view.iter()).enumerate() {
            *slot = parse_action(a, Some(i))?;
        }
        let same_step = self.venv.autoreset() == AutoReset::SameStep;
        let this = &mut *self;
        let out = py.detach(|| -> Result<(Batch, Outcome), Error> {
            let step = this.venv.step(&this.actions)?;
            let (layout, costs, raw) = (&this.layout, &this.costs, &this.raw_costs);
            let b = fill_batch(step.obs, step.info, layout, costs, raw);
            let o = fill_outcome(&step, layout, costs, raw, same_step);
            Ok((b, o))
        });
        let (batch, outcome) = out.map_err(to_py_err)?;
        let (obs, info) = batch.into_py(py, &self.layout)?;
        let finals = outcome.finals.map(|(s, c, r, d)| {
            (
                s.into_pyarray(py),
                c.into_pyarray(py),
                r.into_pyarray(py),
                d.into_pyarray(py),
            )
        });
        Ok((
            obs,
            outcome.reward.into_pyarray(py),
            outcome.terminated.into_pyarray(py),
            info,
            (
                outcome.prediction.into_pyarray(py),
                outcome.label.into_pyarray(py),
                outcome.loss.into_pyarray(py),
                finals,
            ),
        ))
    }

    /// Number of sub-envs n.
    #[getter]
    fn num_envs(&self) -> usize {
        self.actions.len()
    }

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
    let cfg = SyntheticConfig {
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
    m.add("ENV_ID", cascade_env::ENV_ID)?;
    m.add("TRACE_FORMAT_VERSION", cascade_env::TRACE_FORMAT_VERSION)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
