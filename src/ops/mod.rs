//! Tensor operations used by the classifier zoo, behind one stable set of
//! functions so the models never call a slow path directly.
//!
//! Each function has candle's semantics. On the CPU with f32 tensors it runs
//! a custom op written for training speed:
//!
//! - [`conv2d`]: im2col + one GEMM per image (rayon over the batch); the
//!   weight gradient is a GEMM against the same im2col buffer and the input
//!   gradient a GEMM + col2im. The input gradient is skipped when the input
//!   takes no part in autograd (raw images into a first layer). On CPUs
//!   with AVX-512F the forward of the ResNets' layers (stride 1 "same" or
//!   strided, output channels a multiple of 8) is a direct convolution with
//!   no im2col, bit-identical to the GEMM it replaces (`direct.rs` says
//!   when that holds and the tests check it).
//! - [`batch_norm_train`] / [`batch_norm_relu_train`]: fused, two passes
//!   forward and two backward (the closed-form gradient).
//! - [`max_pool2d`]: records each window's argmax; the backward is one
//!   scatter.
//! - [`relu`], [`add_relu`], [`subsample_pad`]: one pass forward and
//!   backward.
//! - [`linear`]: a GEMM forward and a backward of two GEMMs straight into
//!   the layouts of `x` and `w`.
//! - [`AdamW`]: candle_nn's AdamW update, fused and in place.
//! - Fused layers, fewer passes over memory and fewer autograd nodes:
//!   [`conv2d_relu`], [`conv2d_relu_pool`], [`conv2d_bn_train`],
//!   [`conv2d_bn_relu_train`] (statistics gathered while each image's conv
//!   output is in cache; the backward rebuilds the conv output's gradient
//!   per image) and their inference forms [`conv2d_bn_eval`],
//!   [`conv2d_bn_relu_eval`] (batch norm folded into the weights).
//!
//! On other devices and dtypes every function falls back to candle's own ops
//! ([`mod@reference`]), which also serve as the yardstick in tests and
//! benchmarks. Custom ops support first-order gradients only.

mod act;
mod conv;
mod cpu;
mod direct;
mod linear;
mod norm;
mod optim;
mod pool;
pub mod reference;
mod shortcut;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod trace;

use candle_core::{bail, Result, Tensor};
use cpu::{fast_path, with_f32};
use std::sync::{Arc, Mutex};

pub use optim::AdamW;

/// 2-D convolution, NCHW input, OIHW weights, square stride and padding.
///
/// # Shapes
/// `x: [b, c_in, h, w]`, `w: [c_out, c_in, k, k]`, `bias: [c_out]`
/// -> `[b, c_out, (h + 2p - k) / s + 1, (w + 2p - k) / s + 1]`
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv_act(x, w, bias, stride, padding, conv::Act::NONE)
}

/// [`conv2d`] followed by a ReLU, fused: `max(conv2d(x), 0)`. The ReLU is
/// applied to each image's output while it is in cache, and its backward
/// folds into the convolution's.
///
/// # Shapes
/// as [`conv2d`]
pub fn conv2d_relu(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv_act(
        x,
        w,
        bias,
        stride,
        padding,
        conv::Act {
            relu: true,
            pool: 1,
        },
    )
}

/// [`conv2d`], ReLU and `k x k` max pooling (stride `k`), fused:
/// `max_pool2d(max(conv2d(x), 0), k)`, the classic small-CNN stage. Only the
/// pooled output is written to memory.
///
/// # Shapes
/// `x: [b, c_in, h, w]`, `w: [c_out, c_in, kc, kc]`, `bias: [c_out]`
/// -> `[b, c_out, h_out / k, w_out / k]` with `h_out, w_out` as in [`conv2d`]
pub fn conv2d_relu_pool(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    k: usize,
) -> Result<Tensor> {
    if k == 0 || k > pool::MAX_K {
        bail!(
            "conv2d_relu_pool: pooling window {k} must be between 1 and {}",
            pool::MAX_K
        )
    }
    conv_act(
        x,
        w,
        bias,
        stride,
        padding,
        conv::Act {
            relu: true,
            pool: k,
        },
    )
}

fn conv_act(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    act: conv::Act,
) -> Result<Tensor> {
    #[cfg(test)]
    trace::conv(x, w, stride, padding);
    let mut ts = vec![x, w];
    ts.extend(bias);
    if !fast_path(&ts) {
        let y = reference::conv2d(x, w, bias, stride, padding)?;
        let y = if act.relu { y.relu()? } else { y };
        return if act.pool > 1 {
            reference::max_pool2d_by_reduction(&y, act.pool)
        } else {
            Ok(y)
        };
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let op = conv::ConvAct::new(stride, padding, act);
    match bias {
        None => x.apply_op2(&w, op),
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
    }
}

/// The parameters of a batch norm fused into a convolution
/// ([`conv2d_bn_train`] and friends).
#[derive(Clone, Copy, Debug)]
pub struct BatchNormParams<'a> {
    /// Scale, one per output channel.
    pub gamma: &'a Tensor,
    /// Shift, one per output channel.
    pub beta: &'a Tensor,
    /// Added to the variance before the square root.
    pub eps: f64,
}

fn conv_bn_train(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    bn: &BatchNormParams<'_>,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    #[cfg(test)]
    trace::conv(x, w, stride, padding);
    if !fast_path(&[x, w, bn.gamma, bn.beta]) {
        let z = reference::conv2d(x, w, None, stride, padding)?;
        return bn_train(&z, bn.gamma, bn.beta, bn.eps, relu);
    }
    let co = w.dim(0)?;
    check_bn_params(co, &[("gamma", bn.gamma), ("beta", bn.beta)])?;
    let gb = Tensor::cat(&[bn.gamma, bn.beta], 0)?;
    let saved = Arc::new(Mutex::new(conv::BnSaved::default()));
    let op = conv::ConvBn {
        stride,
        padding,
        eps: bn.eps,
        relu,
        saved: saved.clone(),
    };
    let y = x.contiguous()?.apply_op3(&w.contiguous()?, &gb, op)?;
    let s = saved
        .lock()
        .map_err(|_| candle_core::Error::Msg("conv2d_bn: poisoned lock".into()))?;
    let mean = Tensor::from_vec(s.mean.clone(), co, x.device())?;
    let var = Tensor::from_vec(s.var.clone(), co, x.device())?;
    Ok((y, mean, var))
}

/// Convolution (no bias) followed by batch norm in training mode, fused:
/// equals [`batch_norm_train`] of [`conv2d`]. The statistics are gathered
/// while each image's output is in cache, and the backward rebuilds the
/// conv output's gradient per image instead of materialising it. Returns
/// `(y, batch_mean, batch_var)` like [`batch_norm_train`].
///
/// # Shapes
/// `x: [b, c_in, h, w]`, `w: [c_out, c_in, k, k]`, `gamma, beta: [c_out]`
/// -> `y` as [`conv2d`], `mean, var: [c_out]`
pub fn conv2d_bn_train(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    bn: &BatchNormParams<'_>,
) -> Result<(Tensor, Tensor, Tensor)> {
    conv_bn_train(x, w, stride, padding, bn, false)
}

/// [`conv2d_bn_train`] followed by a ReLU, fused.
///
/// # Shapes
/// as [`conv2d_bn_train`]
pub fn conv2d_bn_relu_train(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    bn: &BatchNormParams<'_>,
) -> Result<(Tensor, Tensor, Tensor)> {
    conv_bn_train(x, w, stride, padding, bn, true)
}

#[allow(clippy::too_many_arguments)]
fn conv_bn_eval(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    bn: &BatchNormParams<'_>,
    mean: &Tensor,
    var: &Tensor,
    relu: bool,
) -> Result<Tensor> {
    let co = w.dim(0)?;
    check_bn_params(
        co,
        &[
            ("gamma", bn.gamma),
            ("beta", bn.beta),
            ("mean", mean),
            ("var", var),
        ],
    )?;
    // Fold the batch norm into the weights with (cheap, per-channel) candle
    // ops, so gradients still reach w, gamma and beta.
    let scale = bn.gamma.broadcast_div(&(var.detach() + bn.eps)?.sqrt()?)?;
    let w2 = w.broadcast_mul(&scale.reshape((co, 1, 1, 1))?)?;
    let b2 = (bn.beta - (mean.detach() * &scale)?)?;
    let act = conv::Act { relu, pool: 1 };
    conv_act(x, &w2, Some(&b2), stride, padding, act)
}

/// Convolution (no bias) followed by batch norm with given statistics
/// (inference mode), computed as one convolution with the batch norm folded
/// into its weights and bias. Gradients reach `x`, `w`, `gamma` and `beta`;
/// `mean` and `var` are constants.
///
/// # Shapes
/// `x: [b, c_in, h, w]`, `w: [c_out, c_in, k, k]`,
/// `gamma, beta, mean, var: [c_out]` -> as [`conv2d`]
pub fn conv2d_bn_eval(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    bn: &BatchNormParams<'_>,
    mean: &Tensor,
    var: &Tensor,
) -> Result<Tensor> {
    conv_bn_eval(x, w, stride, padding, bn, mean, var, false)
}

/// [`conv2d_bn_eval`] followed by a ReLU, fused.
///
/// # Shapes
/// as [`conv2d_bn_eval`]
pub fn conv2d_bn_relu_eval(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    bn: &BatchNormParams<'_>,
    mean: &Tensor,
    var: &Tensor,
) -> Result<Tensor> {
    conv_bn_eval(x, w, stride, padding, bn, mean, var, true)
}

fn check_bn_params(c: usize, params: &[(&str, &Tensor)]) -> Result<()> {
    for (name, t) in params {
        if t.dims() != [c] {
            bail!(
                "batch_norm: {name} has shape {:?}, expected [{c}] (one per channel)",
                t.dims()
            )
        }
    }
    Ok(())
}

fn bn_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    if !fast_path(&[x, gamma, beta]) {
        let (y, mean, var) = reference::batch_norm_train(x, gamma, beta, eps)?;
        let y = if relu { y.relu()? } else { y };
        return Ok((y, mean, var));
    }
    let (n, c, hw) = norm::dims_nchw(x.dims(), "batch_norm")?;
    check_bn_params(c, &[("gamma", gamma), ("beta", beta)])?;
    let x = x.contiguous()?;
    let (mean, var) = with_f32(&x, "batch_norm input", |xs| Ok(norm::stats(xs, n, c, hw)))?;
    let invstd = var
        .iter()
        .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect();
    let dev = x.device().clone();
    let mean_t = Tensor::from_vec(mean.clone(), c, &dev)?;
    let var_t = Tensor::from_vec(var, c, &dev)?;
    let op = norm::BatchNorm {
        mean,
        invstd,
        relu,
        batch_stats: true,
    };
    let y = x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    Ok((y, mean_t, var_t))
}

/// Batch norm in training mode: normalises with the batch statistics.
/// Returns `(y, batch_mean, batch_var)`; the variance is the biased one
/// (divided by `b*h*w`), as used for the normalisation. The gradient of `y`
/// accounts for the statistics' dependence on `x`; the returned statistics
/// themselves are detached (they feed the running averages).
///
/// # Shapes
/// `x: [b, c, h, w]`, `gamma, beta: [c]` -> `y: [b, c, h, w]`, `mean, var: [c]`
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    bn_train(x, gamma, beta, eps, false)
}

/// [`batch_norm_train`] followed by a ReLU, fused: `y = max(bn(x), 0)`.
///
/// # Shapes
/// `x: [b, c, h, w]`, `gamma, beta: [c]` -> `y: [b, c, h, w]`, `mean, var: [c]`
pub fn batch_norm_relu_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    bn_train(x, gamma, beta, eps, true)
}

fn bn_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    if !fast_path(&[x, gamma, beta, mean, var]) {
        let y = reference::batch_norm_eval(x, gamma, beta, mean, var, eps)?;
        return if relu { y.relu() } else { Ok(y) };
    }
    let (_, c, _) = norm::dims_nchw(x.dims(), "batch_norm")?;
    check_bn_params(
        c,
        &[
            ("gamma", gamma),
            ("beta", beta),
            ("mean", mean),
            ("var", var),
        ],
    )?;
    let mean = cpu::to_vec_f32(mean)?;
    let invstd = cpu::to_vec_f32(var)?
        .iter()
        .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect();
    let op = norm::BatchNorm {
        mean,
        invstd,
        relu,
        batch_stats: false,
    };
    x.contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)
}

/// Batch norm with given statistics (inference mode). Gradients flow to `x`,
/// `gamma` and `beta`; `mean` and `var` are treated as constants.
///
/// # Shapes
/// `x: [b, c, h, w]`, `gamma, beta, mean, var: [c]` -> `[b, c, h, w]`
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    bn_eval(x, gamma, beta, mean, var, eps, false)
}

/// [`batch_norm_eval`] followed by a ReLU, fused.
///
/// # Shapes
/// `x: [b, c, h, w]`, `gamma, beta, mean, var: [c]` -> `[b, c, h, w]`
pub fn batch_norm_relu_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    bn_eval(x, gamma, beta, mean, var, eps, true)
}

/// Non-overlapping max pooling with a square `k x k` window and stride `k`.
/// Where a window holds several maxima, the gradient goes to the first in
/// row-major order. On other devices and dtypes it runs
/// [`reference::max_pool2d_by_reduction`] (candle's own `max_pool2d`
/// gets the gradient wrong by a factor `k^2`).
///
/// # Shapes
/// `x: [b, c, h, w]` -> `[b, c, h / k, w / k]`
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    if !fast_path(&[x]) || x.rank() != 4 || k == 0 || k > pool::MAX_K {
        return reference::max_pool2d_by_reduction(x, k);
    }
    let (h, w) = (x.dim(2)?, x.dim(3)?);
    if h < k || w < k {
        bail!("max_pool2d: kernel size {k} is larger than the input {h}x{w}")
    }
    x.contiguous()?.apply_op1(pool::MaxPool2d::new(k))
}

/// Rectified linear unit, `max(x, 0)`.
///
/// # Shapes
/// any -> same
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !fast_path(&[x]) {
        return x.relu();
    }
    x.contiguous()?.apply_op1(act::Relu)
}

/// The parameter-free shortcut of a residual block that changes width
/// ("option A"): `x[:, :, ::stride, ::stride]` with `left` zero channels
/// before and `right` after, one pass forward and backward.
///
/// # Shapes
/// `x: [b, c, h, w]` -> `[b, left + c + right, ceil(h / stride), ceil(w / stride)]`
pub fn subsample_pad(x: &Tensor, stride: usize, left: usize, right: usize) -> Result<Tensor> {
    if !fast_path(&[x]) || x.rank() != 4 || stride == 0 {
        return reference::subsample_pad(x, stride, left, right);
    }
    x.contiguous()?.apply_op1(shortcut::SubsamplePad {
        stride,
        left,
        right,
    })
}

/// `max(a + b, 0)`, fused: the join of a residual block.
///
/// # Shapes
/// `a, b`: the same shape -> that shape
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !fast_path(&[a, b]) {
        return (a + b)?.relu();
    }
    if a.shape() != b.shape() {
        bail!("add_relu: shapes differ, {:?} and {:?}", a.dims(), b.dims())
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, act::AddRelu)
}

/// Fully connected layer, `y = x w^T + b` (candle_nn's `Linear`).
///
/// # Shapes
/// `x: [.., in]`, `w: [out, in]`, `b: [out]` -> `[.., out]`
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    #[cfg(test)]
    trace::linear(x, w);
    let mut ts = vec![x, w];
    ts.extend(b);
    if !fast_path(&ts) || x.rank() < 2 {
        let y = x.broadcast_matmul(&w.t()?)?;
        return match b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        };
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    match b {
        None => x.apply_op2(&w, linear::Linear),
        Some(b) => x.apply_op3(&w, &b.contiguous()?, linear::Linear),
    }
}

/// Folds an inference-mode batch norm into the convolution before it:
/// `bn(conv(x, w, b))` equals `conv(x, w', b')` with
/// `w' = w * s`, `b' = (b - mean) * s + beta`, `s = gamma / sqrt(var + eps)`
/// (per output channel). `b = None` means a conv without bias. Works on any
/// device; the results are detached from autograd.
///
/// # Shapes
/// `w: [c_out, c_in, k, k]`, `b, gamma, beta, mean, var: [c_out]`
/// -> `(w': [c_out, c_in, k, k], b': [c_out])`
pub fn fold_bn_into_conv(
    w: &Tensor,
    b: Option<&Tensor>,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let co = w.dim(0)?;
    let mut params = vec![
        ("gamma", gamma),
        ("beta", beta),
        ("mean", mean),
        ("var", var),
    ];
    params.extend(b.map(|b| ("conv bias", b)));
    check_bn_params(co, &params)?;
    let scale = (gamma.detach() / (var.detach() + eps)?.sqrt()?)?;
    let w2 = w.detach().broadcast_mul(&scale.reshape((co, 1, 1, 1))?)?;
    let shifted = match b {
        Some(b) => (b.detach() - mean.detach())?,
        None => mean.detach().neg()?,
    };
    let b2 = ((shifted * scale)? + beta.detach())?;
    Ok((w2, b2))
}
