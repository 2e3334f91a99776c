//! Bring your own cascade: `write_trace` (a trace from any framework's
//! arrays, checked by [`cascade_env::TraceArrays`]) and the stopping agents
//! of `cascade_env.agents` (the `cascade-agents` crate, fitted by
//! [`cascade_agents::fit_on_traces`], the function `cascade train
//! --train-trace` runs, so both give the same agent).

use std::io::ErrorKind;
use std::path::PathBuf;

use cascade_agents::{fit_on_traces, ReinforceConfig, TraceAgent, TrainOptions};
use cascade_env::{
    BatchObservation, ReplayBackend, StageArrays, StageBackend, StageScores, TraceArrays,
};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::args::parse_spec;
use crate::layout::{header_json, load_backend};
use crate::to_py_err;

/// The Python exception for an agents error, with the Rust message.
fn agents_err(e: cascade_agents::Error) -> PyErr {
    use cascade_agents::Error as E;
    match e {
        E::Env(e) => to_py_err(e),
        E::Config(_) | E::Mismatch { .. } | E::AgentFile { .. } | E::Json { .. } => {
            PyValueError::new_err(e.to_string())
        }
        E::Io { ref source, .. } if source.kind() == ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(e.to_string())
        }
        E::Io { .. } => PyOSError::new_err(e.to_string()),
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

/// Writes a trace from arrays; see `cascade_env.write_trace`. `scores`
/// are probabilities, or logits when `logits`.
#[pyfunction]
#[pyo3(signature = (path, features, scores, logits, labels, costs, temperature, num_classes, class_names, stage_names, dataset, split, cascade, cost_unit))]
#[allow(clippy::too_many_arguments)]
pub fn write_trace(
    path: PathBuf,
    features: Vec<PyReadonlyArray2<'_, f32>>,
    scores: Vec<PyReadonlyArray2<'_, f32>>,
    logits: bool,
    labels: PyReadonlyArray1<'_, i64>,
    costs: Vec<f64>,
    temperature: f64,
    num_classes: Option<usize>,
    class_names: Option<Vec<String>>,
    stage_names: Vec<String>,
    dataset: String,
    split: String,
    cascade: String,
    cost_unit: String,
) -> PyResult<String> {
    let k = features.len();
    if scores.len() != k || costs.len() != k || stage_names.len() != k {
        return Err(PyValueError::new_err(format!(
            "{k} feature arrays, {} score arrays, {} costs and {} stage names: give one of each per stage",
            scores.len(),
            costs.len(),
            stage_names.len()
        )));
    }
    let n = labels.as_array().len();
    let mut stages = Vec::with_capacity(k);
    for (t, ((f, s), name)) in features.iter().zip(&scores).zip(stage_names).enumerate() {
        let (fa, sa) = (f.as_array(), s.as_array());
        let what = if logits { "logits" } else { "probs" };
        for (array, rows) in [("features", fa.nrows()), (what, sa.nrows())] {
            if rows != n {
                return Err(PyValueError::new_err(format!(
                    "trace: stage{t}.{array} has {rows} samples (rows), labels has {n}"
                )));
            }
        }
        let values = sa.iter().copied().collect();
        stages.push(StageArrays {
            name,
            cost: costs[t],
            features: fa.iter().copied().collect(),
            feature_dim: fa.ncols(),
            scores: if logits {
                StageScores::Logits(values)
            } else {
                StageScores::Probs(values)
            },
        });
    }
    // Every stage's score width must be C: the first one that is not is named.
    let c = num_classes.unwrap_or_else(|| scores.first().map_or(0, |s| s.as_array().ncols()));
    if let Some(t) = scores.iter().position(|s| s.as_array().ncols() != c) {
        return Err(PyValueError::new_err(format!(
            "trace: stage{t}.{} has {} classes (columns), expected {c}",
            if logits { "logits" } else { "probs" },
            scores[t].as_array().ncols()
        )));
    }
    let arrays = TraceArrays {
        stages,
        labels: labels.as_array().iter().copied().collect(),
        num_classes: Some(c),
        temperature,
        class_names,
        dataset,
        split,
        cascade,
        cost_unit,
    };
    let trace = arrays.write(&path).map_err(to_py_err)?;
    header_json(&trace)
}

/// A fitted or loaded stopping agent; see `cascade_env.agents.Agent`.
#[pyclass(module = "cascade_env._native", name = "Agent", unsendable)]
pub struct NativeAgent {
    inner: TraceAgent,
    /// Feature widths `[K]` and classes C of the cascade it acts on.
    layout: Option<(Vec<usize>, usize)>,
}

/// The REINFORCE settings of a JSON object: the fields it gives over the
/// shipped frozen learner (`ReinforceConfig::default`), with the CLI's
/// rule for the start (a head `ann`'s rule cannot fill starts fresh unless
/// `init` is given).
fn parse_reinforce(json: Option<String>) -> PyResult<Option<ReinforceConfig>> {
    let bad = |e: serde_json::Error| PyValueError::new_err(format!("reinforce settings: {e}"));
    json.map(|j| {
        let value: serde_json::Value = serde_json::from_str(&j).map_err(bad)?;
        let start = match value.get("init") {
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(bad)?),
            None => None,
        };
        let c: ReinforceConfig = serde_json::from_value(value).map_err(bad)?;
        let (hidden, inputs) = (c.hidden, c.inputs);
        Ok(c.with_head(hidden, inputs, start))
    })
    .transpose()
}

/// Fits an agent on two trace files; see `cascade_env.agents.fit`.
#[pyfunction]
#[pyo3(signature = (name, train_trace, val_trace, alpha, budget, seed, loss, cost, prediction, count_policy_cost, reinforce, quiet))]
#[allow(clippy::too_many_arguments)]
pub fn fit_agent(
    py: Python<'_>,
    name: &str,
    train_trace: PathBuf,
    val_trace: PathBuf,
    alpha: f64,
    budget: Option<f64>,
    seed: u64,
    loss: &str,
    cost: &str,
    prediction: &str,
    count_policy_cost: Option<bool>,
    reinforce: Option<String>,
    quiet: bool,
) -> PyResult<NativeAgent> {
    let spec = parse_spec(alpha, loss, cost, prediction)?;
    let mut train = load_backend(py, &train_trace)?;
    let mut val = load_backend(py, &val_trace)?;
    let opts = TrainOptions {
        spec,
        budget,
        seed,
        quiet,
        count_policy_cost: count_policy_cost
            .unwrap_or_else(|| cascade_agents::counts_policy_cost(&train)),
        ..Default::default()
    };
    let inner = fit_on_traces(
        name,
        &mut train,
        &mut val,
        &opts,
        parse_reinforce(reinforce)?,
        (Some(&train_trace), Some(&val_trace)),
    )
    .map_err(agents_err)?;
    Ok(NativeAgent {
        inner,
        layout: Some((train.feature_dims().to_vec(), train.num_classes())),
    })
}

/// Loads an agent folder; see `cascade_env.agents.load`.
#[pyfunction]
#[pyo3(signature = (path, trace=None))]
pub fn load_agent(py: Python<'_>, path: PathBuf, trace: Option<PathBuf>) -> PyResult<NativeAgent> {
    let inner = TraceAgent::load(&path).map_err(agents_err)?;
    let layout = match &trace {
        Some(t) => {
            let b = load_backend(py, t)?;
            Some((b.feature_dims().to_vec(), b.num_classes()))
        }
        None => inner.record.as_ref().and_then(|r| {
            (!r.train_trace.feature_dims.is_empty()).then(|| {
                (
                    r.train_trace.feature_dims.clone(),
                    r.train_trace.num_classes,
                )
            })
        }),
    };
    Ok(NativeAgent { inner, layout })
}

/// `(agent, split, n, error, mean_reward, mean_cost, cost_pct_mean,
/// exit_fraction [K], exits [N] int64, correct [N] bool-as-uint8,
/// predictions [N] int64, report_json)`.
type EvalTuple<'py> = (
    String,
    String,
    usize,
    f64,
    f64,
    f64,
    Vec<f64>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<u8>>,
    Bound<'py, PyArray1<i64>>,
    String,
);

#[pymethods]
impl NativeAgent {
    /// The agent's name, e.g. `"threshold"`.
    #[getter]
    fn name(&self) -> String {
        self.inner.agent.name()
    }

    /// The agent's family (`static`, `oracle`, `threshold`, `backward`,
    /// `reinforce`, `expected`).
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.agent.family().name()
    }

    /// Number of stages K.
    #[getter]
    fn num_stages(&self) -> usize {
        self.inner.agent.num_stages()
    }

    /// The parameters, as JSON.
    #[getter]
    fn params_json(&self) -> String {
        self.inner.agent.params().to_string()
    }

    /// The training summary, as JSON (`null` when there is none).
    #[getter]
    fn summary_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.inner.summary)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// The fitting record, as JSON (`null` when there is none).
    #[getter]
    fn record_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.inner.record)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Whether the agent reads the true labels (the oracle).
    #[getter]
    fn uses_labels(&self) -> bool {
        self.inner.agent.uses_labels()
    }

    /// Writes the agent folder (the format `cascade train` writes).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.inner.save(&path).map_err(agents_err)
    }

    /// Stop probabilities of a batch of observations: `stage [n]`,
    /// `features [n, width]` (zero-padded), `probs [n, C]`,
    /// `cost_so_far [n]`, `labels [n]` (read only by the oracle).
    #[pyo3(signature = (stage, features, probs, cost_so_far, labels=None))]
    fn stop_probs<'py>(
        &self,
        py: Python<'py>,
        stage: PyReadonlyArray1<'py, i64>,
        features: PyReadonlyArray2<'py, f32>,
        probs: PyReadonlyArray2<'py, f32>,
        cost_so_far: PyReadonlyArray1<'py, f32>,
        labels: Option<PyReadonlyArray1<'py, i64>>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let Some((dims, c)) = &self.layout else {
            return Err(PyValueError::new_err(
                "this agent folder does not record its cascade's feature widths: load it with \
                 cascade_env.agents.load(path, trace=...)",
            ));
        };
        let k = dims.len();
        let st = stage.as_array();
        let stage: Vec<u32> = st
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                u32::try_from(t)
                    .ok()
                    .filter(|&t| (t as usize) < k)
                    .ok_or_else(|| {
                        PyValueError::new_err(format!(
                        "observation batch: row {i} is at stage {t}, the cascade has {k} stages"
                    ))
                    })
            })
            .collect::<PyResult<_>>()?;
        let fa = features.as_array();
        let f: Vec<f32> = fa.iter().copied().collect();
        let p: Vec<f32> = probs.as_array().iter().copied().collect();
        let cost: Vec<f32> = cost_so_far.as_array().iter().copied().collect();
        let batch = BatchObservation::from_rows(dims, *c, &stage, &f, fa.ncols(), &p, &cost)
            .map_err(to_py_err)?;
        let labels: Option<Vec<u32>> = match labels {
            Some(l) => Some(
                l.as_array()
                    .iter()
                    .map(|&y| {
                        u32::try_from(y)
                            .map_err(|_| PyValueError::new_err(format!("label {y} is negative")))
                    })
                    .collect::<PyResult<_>>()?,
            ),
            None => None,
        };
        if self.inner.agent.uses_labels() && labels.is_none() {
            return Err(PyValueError::new_err(format!(
                "{} reads the true labels: pass labels=",
                self.inner.agent.name()
            )));
        }
        let mut out = vec![0f32; stage.len()];
        self.inner
            .agent
            .stop_probs(&batch, labels.as_deref(), &mut out)
            .map_err(agents_err)?;
        // The MDP: only Stop at the last stage.
        for (i, &t) in stage.iter().enumerate() {
            if t as usize + 1 == k {
                out[i] = 1.0;
            }
        }
        Ok(out.into_pyarray(py))
    }

    /// Evaluates on a trace file; see `cascade_env.agents.evaluate`.
    #[pyo3(signature = (trace, alpha=None))]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        trace: PathBuf,
        alpha: Option<f64>,
    ) -> PyResult<EvalTuple<'py>> {
        let mut b: ReplayBackend = load_backend(py, &trace)?;
        let spec = alpha.map(|a| cascade_env::RewardSpec {
            alpha: a,
            ..self.inner.trained_spec()
        });
        let r = self.inner.evaluate(&mut b, spec).map_err(agents_err)?;
        let json = serde_json::to_string(&r).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let exits: Vec<i64> = r.sample_exits.iter().map(|&s| s as i64).collect();
        let preds: Vec<i64> = r.sample_predictions.iter().map(|&s| s as i64).collect();
        Ok((
            r.agent.clone(),
            r.split.clone(),
            r.n,
            r.error,
            r.mean_reward,
            r.cost_pct_mean / 100.0,
            r.exit_fraction.clone(),
            exits.into_pyarray(py),
            r.sample_correct.clone().into_pyarray(py),
            preds.into_pyarray(py),
            json,
        ))
    }
}

/// `[N, K]` expected stopping reward of every sample at every stage under
/// the reward (with an argmax prediction, the reward itself); see
/// `cascade_env.to_minari`.
#[pyfunction]
#[pyo3(signature = (trace, alpha, loss, cost, prediction))]
pub fn stop_rewards<'py>(
    py: Python<'py>,
    trace: PathBuf,
    alpha: f64,
    loss: &str,
    cost: &str,
    prediction: &str,
) -> PyResult<Bound<'py, numpy::PyArray2<f64>>> {
    let spec = parse_spec(alpha, loss, cost, prediction)?;
    let b = load_backend(py, &trace)?;
    let model = spec.compile(b.stage_costs()).map_err(to_py_err)?;
    let (n, k, c) = (b.num_samples(), b.num_stages(), b.num_classes());
    let mut out = numpy::ndarray::Array2::<f64>::zeros((n, k));
    for t in 0..k {
        let probs = b.stage_probs(t);
        for i in 0..n {
            out[[i, t]] = model.expected_stop_reward(t, &probs[i * c..(i + 1) * c], b.labels()[i]);
        }
    }
    Ok(out.into_pyarray(py))
}
