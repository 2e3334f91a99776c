//! [`VarMap`] utilities: a [`VarBuilder`] that initialises missing
//! variables from a seeded RNG, the variables by name (trainable weights
//! and batch-norm buffers told apart), and snapshots of their values.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// Suffixes of the tensors that are state, not trainable parameters.
const BUFFER_SUFFIXES: [&str; 2] = ["running_mean", "running_var"];

/// True when the parameter named `name` is a buffer (batch-norm running
/// statistics) rather than a trainable weight.
pub fn is_buffer(name: &str) -> bool {
    BUFFER_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// A [`VarMap`] backend that creates missing variables from its own seeded
/// RNG, so the same seed gives the same weights on every device and run
/// (candle's CPU device cannot be seeded).
struct SeededVarMap {
    varmap: VarMap,
    rng: Mutex<StdRng>,
}

fn lock_err<T>(_: T) -> candle_core::Error {
    candle_core::Error::Msg("variable map lock poisoned".into())
}

/// Draws a tensor of `shape` for `init` on the CPU with `rng`.
fn init_values(shape: &Shape, init: Init, rng: &mut StdRng) -> Result<Vec<f32>> {
    let n = shape.elem_count();
    let normal = |rng: &mut StdRng, mean: f64, std: f64| -> Result<Vec<f32>> {
        let dist = Normal::new(mean, std)
            .map_err(|e| candle_core::Error::Msg(format!("bad normal init: {e}")))?;
        Ok((0..n).map(|_| dist.sample(rng) as f32).collect())
    };
    let uniform = |rng: &mut StdRng, lo: f64, up: f64| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..up) as f32).collect()
    };
    match init {
        Init::Const(v) => Ok(vec![v as f32; n]),
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Uniform { lo, up } => Ok(uniform(rng, lo, up)),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = fan.for_shape(shape).max(1) as f64;
            let std = non_linearity.gain() / fan.sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Normal => normal(rng, 0.0, std),
                candle_nn::init::NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    Ok(uniform(rng, -bound, bound))
                }
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.varmap.data().lock().map_err(lock_err)?;
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!(
                    "shape mismatch on {name}: {s:?} requested, {:?} stored",
                    var.shape()
                )
            }
            return Ok(var.as_tensor().clone());
        }
        let values = {
            let mut rng = self.rng.lock().map_err(lock_err)?;
            init_values(&s, h, &mut rng)?
        };
        let t = Tensor::from_vec(values, s, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(dev)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let data = self.varmap.data().lock().map_err(lock_err)?;
        match data.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("no variable named {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

/// A [`VarBuilder`] that stores variables in `varmap` and initialises the
/// missing ones from an RNG seeded with `seed`. Variables are drawn in the
/// order the model asks for them, so a model built twice with the same seed
/// gets identical weights. Variables already in `varmap` are returned as is.
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let backend = SeededVarMap {
        varmap: varmap.clone(),
        rng: Mutex::new(StdRng::seed_from_u64(seed)),
    };
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

/// The variables of `varmap` by name, sorted by name.
pub fn named_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap.data().lock().map_err(lock_err)?;
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// The trainable variables of `varmap` (everything except batch-norm running
/// statistics), sorted by name.
pub fn trainable_vars(varmap: &VarMap) -> Result<Vec<Var>> {
    Ok(named_vars(varmap)?
        .into_iter()
        .filter(|(k, _)| !is_buffer(k))
        .map(|(_, v)| v)
        .collect())
}

/// A copy of every tensor in `varmap` (detached), to restore later with
/// [`restore_snapshot`].
pub fn snapshot(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    named_vars(varmap)?
        .into_iter()
        .map(|(k, v)| Ok((k, v.as_tensor().detach().copy()?)))
        .collect()
}

/// Writes a [`snapshot`] back into the variables of `varmap`.
pub fn restore_snapshot(varmap: &VarMap, snap: &HashMap<String, Tensor>) -> Result<()> {
    for (name, var) in named_vars(varmap)? {
        match snap.get(&name) {
            Some(t) => var.set(t)?,
            None => candle_core::bail!("snapshot has no tensor named {name}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Linear;

    #[test]
    fn seeded_builder_is_deterministic_and_seed_dependent() {
        let build = |seed| {
            let vm = VarMap::new();
            let vb = seeded_var_builder(&vm, seed, DType::F32, &Device::Cpu);
            let l = Linear::new(4, 3, vb.pp("fc")).unwrap();
            l.weight().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(build(7), build(7));
        assert_ne!(build(7), build(8));
        // PyTorch's bound for in_features = 4 is 1/2.
        assert!(build(7).iter().all(|v| v.abs() <= 0.5));
    }
}
