//! The `Env` class: CascadeStopping-v0 over a replay trace, one episode
//! at a time.

use std::path::PathBuf;

use cascade_env::{Action, OptimalStoppingEnv, ReplayBackend};
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use crate::args::{parse_action, parse_last_stage_forward, parse_spec};
use crate::layout::{costs, layout_getters, load_backend, Layout};
use crate::to_py_err;

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
pub(crate) struct NativeEnv {
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

layout_getters!(NativeEnv);
