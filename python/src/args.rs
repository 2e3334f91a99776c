//! The Python arguments of the env classes parsed into the env crate's
//! types: reward spec, actions, the last-stage rule. Bad values are
//! `ValueError`s naming what is accepted.

use cascade_env::{Action, CostModel, Loss, Prediction, RewardSpec};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::to_py_err;

/// Lower case with `_` read as `-`, so `zero_one` and `Zero-One` both name
/// the 0-1 loss.
pub(crate) fn normalise(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('_', "-")
}

/// The reward spec from the Python names; unknown names and a negative or
/// non-finite alpha are `ValueError`s.
pub(crate) fn parse_spec(
    alpha: f64,
    loss: &str,
    cost: &str,
    prediction: &str,
) -> PyResult<RewardSpec> {
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
pub(crate) fn parse_action(a: i64, env: Option<usize>) -> PyResult<Action> {
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
pub(crate) fn parse_last_stage_forward(value: &str) -> PyResult<bool> {
    match normalise(value).as_str() {
        "error" => Ok(false),
        "stop" => Ok(true),
        _ => Err(PyValueError::new_err(format!(
            "unknown last_stage_forward {value:?}: expected \"error\" (the default) or \"stop\""
        ))),
    }
}
