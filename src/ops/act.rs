//! ReLU and the residual `relu(a + b)` as single multi-threaded passes whose
//! backward is one pass too (candle's ReLU backward builds a mask, converts
//! it and multiplies: several single-threaded passes).

use super::cpu::{add_relu_into, par_init, relu_mask, slice_f32, with_f32};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

const CHUNK: usize = 1 << 14;

/// `g * (y > 0)`: the gradient through a ReLU whose output is `y`.
fn relu_grad(gy: &Tensor, y: &Tensor) -> Result<Tensor> {
    let gy = gy.contiguous()?;
    let dx = with_f32(&gy, "relu output gradient", |gs| {
        with_f32(y, "relu output", |ys| {
            Ok(par_init(gs.len(), CHUNK, |t, d| {
                relu_mask(&gs[t * CHUNK..][..d.len()], &ys[t * CHUNK..][..d.len()], d);
            }))
        })
    })?;
    Tensor::from_vec(dx, y.shape(), y.device())
}

/// `max(x, 0)` as a candle custom op.
pub(crate) struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "cascade-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice_f32(s, l, "relu input")?;
        let y = par_init(x.len(), CHUNK, |t, y| {
            add_relu_into(&x[t * CHUNK..][..y.len()], &[], y);
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(relu_grad(gy, y)?))
    }
}

/// `max(a + b, 0)` as a candle custom op (the end of a residual block).
pub(crate) struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "cascade-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            bail!(
                "add_relu: shapes differ, {:?} and {:?}",
                l1.dims(),
                l2.dims()
            )
        }
        let a = slice_f32(s1, l1, "add_relu lhs")?;
        let b = slice_f32(s2, l2, "add_relu rhs")?;
        let y = par_init(a.len(), CHUNK, |t, y| {
            let n = y.len();
            add_relu_into(&a[t * CHUNK..][..n], &b[t * CHUNK..][..n], y);
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = relu_grad(gy, y)?;
        match (a.track_op(), b.track_op()) {
            (true, true) => Ok((Some(g.clone()), Some(g))),
            (true, false) => Ok((Some(g), None)),
            (false, true) => Ok((None, Some(g))),
            (false, false) => Ok((None, None)),
        }
    }
}
