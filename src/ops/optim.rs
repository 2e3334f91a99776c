//! AdamW with a fused, in-place update: one pass over each parameter, its
//! gradient and the two moments, instead of candle_nn's dozen tensor ops
//! (each a fresh allocation) per parameter.

use super::cpu::with_f32;
use candle_core::backprop::GradStore;
use candle_core::{bail, CpuStorage, DType, InplaceOp2, Layout, Result, Var};
use candle_nn::{Optimizer, ParamsAdamW};
use rayon::prelude::*;
use std::sync::Mutex;

const CHUNK: usize = 1 << 14;

/// A CPU f32 parameter with its moments.
struct Slot {
    var: Var,
    m: Vec<f32>,
    v: Vec<f32>,
}

/// AdamW, the same update as [`candle_nn::AdamW`] (bias-corrected moments,
/// decoupled weight decay `theta *= 1 - lr * weight_decay`), computed for
/// CPU f32 parameters in one fused in-place pass. Parameters on other
/// devices or of other dtypes are handed to a `candle_nn::AdamW`.
pub struct AdamW {
    slots: Vec<Slot>,
    others: candle_nn::AdamW,
    params: ParamsAdamW,
    step_t: i32,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("params", &self.params)
            .field("step", &self.step_t)
            .field("fused_vars", &self.slots.len())
            .finish()
    }
}

/// The in-place update of one parameter given its gradient.
struct Update<'a> {
    m: Mutex<&'a mut [f32]>,
    v: Mutex<&'a mut [f32]>,
    lr: f32,
    decay: f32,
    b1: f32,
    b2: f32,
    scale_m: f32,
    scale_v: f32,
    eps: f32,
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "cascade-adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let theta = match (s1, l1.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &mut v[a..b],
            _ => bail!("adamw: expected a contiguous f32 parameter"),
        };
        let g = super::cpu::slice_f32(s2, l2, "adamw gradient")?;
        let mut m = self
            .m
            .lock()
            .map_err(|_| candle_core::Error::Msg("adamw: poisoned lock".into()))?;
        let mut v = self
            .v
            .lock()
            .map_err(|_| candle_core::Error::Msg("adamw: poisoned lock".into()))?;
        if g.len() != theta.len() || m.len() != theta.len() || v.len() != theta.len() {
            bail!(
                "adamw: gradient or moments do not match the parameter ({} values)",
                theta.len()
            )
        }
        let (b1, b2, c1, c2) = (self.b1, self.b2, 1.0 - self.b1, 1.0 - self.b2);
        theta
            .par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((th, g), (m, v))| {
                for (((th, &g), m), v) in th.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    *m = *m * b1 + g * c1;
                    *v = *v * b2 + g * g * c2;
                    let step = (*m * self.scale_m) / ((*v * self.scale_v).sqrt() + self.eps);
                    *th = *th * self.decay - step * self.lr;
                }
            });
        Ok(())
    }
}

impl Optimizer for AdamW {
    type Config = ParamsAdamW;

    fn new(vars: Vec<Var>, params: ParamsAdamW) -> Result<Self> {
        let (fast, rest): (Vec<Var>, Vec<Var>) = vars
            .into_iter()
            .filter(|v| v.dtype().is_float())
            .partition(|v| v.device().is_cpu() && v.dtype() == DType::F32 && v.is_contiguous());
        let slots = fast
            .into_iter()
            .map(|var| {
                let n = var.elem_count();
                Slot {
                    var,
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                }
            })
            .collect();
        Ok(AdamW {
            slots,
            others: candle_nn::AdamW::new(rest, params.clone())?,
            params,
            step_t: 0,
        })
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_t += 1;
        let p = &self.params;
        let lr = p.lr as f32;
        for slot in self.slots.iter_mut() {
            let Some(g) = grads.get(&slot.var) else {
                continue;
            };
            let g = g.contiguous()?;
            let op = Update {
                m: Mutex::new(&mut slot.m),
                v: Mutex::new(&mut slot.v),
                lr,
                decay: (1.0 - p.lr * p.weight_decay) as f32,
                b1: p.beta1 as f32,
                b2: p.beta2 as f32,
                scale_m: (1.0 / (1.0 - p.beta1.powi(self.step_t))) as f32,
                scale_v: (1.0 / (1.0 - p.beta2.powi(self.step_t))) as f32,
                eps: p.eps as f32,
            };
            // Check the gradient is readable as f32 before the in-place op
            // takes the parameter's write lock.
            with_f32(&g, "adamw gradient", |_| Ok(()))?;
            slot.var.as_tensor().inplace_op2(&g, &op)?;
        }
        self.others.step(grads)
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
        self.others.set_learning_rate(lr);
    }
}

impl AdamW {
    /// The configuration in use.
    pub fn params(&self) -> &ParamsAdamW {
        &self.params
    }
}
