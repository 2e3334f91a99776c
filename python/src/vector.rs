//! The `VecEnv` class: n episodes of CascadeStopping-v0 in lock step,
//! its size and seeds checked before anything is allocated.

use std::path::PathBuf;

use cascade_env::{Action, AutoReset, Error, ReplayBackend, VecEnv};
use numpy::{PyArray2, PyReadonlyArray1};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::args::{normalise, parse_action, parse_last_stage_forward, parse_spec};
use crate::arrays::{
    fill_obs_info, fill_outcome, Access, BatchInfoTuple, BatchObsTuple, FinalsOut, ObsInfo,
    ObsInfoOut, OutcomeOut, Outcomes, StepTuple, Tables,
};
use crate::layout::{arr2, costs, layout_getters, load_backend, Layout};
use crate::to_py_err;

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
pub(crate) struct NativeVecEnv {
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

layout_getters!(NativeVecEnv);
