//! The same operations written with candle's own ops only. They run on
//! every device and dtype and are the fallback of the functions in
//! [`crate::ops`]; tests and benchmarks use them as the reference.

use candle_core::{Result, Tensor};

/// 2-D convolution through candle's `conv2d`.
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
    let y = x.conv2d(w, padding, stride, 1, 1)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}

/// Batch norm in training mode from reductions and broadcasts. Returns
/// `(y, batch_mean, batch_var)` (biased variance); the statistics stay in
/// the autograd graph.
///
/// # Shapes
/// `x: [b, c, h, w]`, `gamma, beta: [c]` -> `y: [b, c, h, w]`, `mean, var: [c]`
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = x.dim(1)?;
    let xt = x.transpose(0, 1)?.contiguous()?.reshape((c, ()))?;
    let mean = xt.mean(1)?;
    let centered = xt.broadcast_sub(&mean.unsqueeze(1)?)?;
    let var = centered.sqr()?.mean(1)?;
    let y = batch_norm_eval(x, gamma, beta, &mean, &var, eps)?;
    Ok((y, mean, var))
}

/// Batch norm with given statistics, from broadcasts.
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
    let shape = (1, (), 1, 1);
    let inv_std = (var + eps)?.sqrt()?.recip()?;
    let scale = (gamma * &inv_std)?;
    let shift = (beta - (mean * &scale)?)?;
    x.broadcast_mul(&scale.reshape(shape)?)?
        .broadcast_add(&shift.reshape(shape)?)
}

/// candle's `max_pool2d` with stride equal to the window. Its backward in
/// candle 0.11.1 scales the gradient by `1 / k^2` (it multiplies by the
/// fraction of maxima in the window instead of dividing by their count);
/// [`max_pool2d_by_reduction`] has the right gradient.
///
/// # Shapes
/// `x: [b, c, h, w]` -> `[b, c, h / k, w / k]`
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    x.max_pool2d(k)
}

/// Max pooling from a reshape and two max reductions, whose candle backward
/// is right: the gradient goes to every maximum of a window. Trailing rows
/// and columns that fill no window are dropped, as in [`max_pool2d`].
///
/// # Shapes
/// `x: [b, c, h, w]` -> `[b, c, h / k, w / k]`
pub fn max_pool2d_by_reduction(x: &Tensor, k: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if k == 0 || h < k || w < k {
        candle_core::bail!("max_pool2d: kernel size {k} does not fit the input {h}x{w}")
    }
    let (ho, wo) = (h / k, w / k);
    x.narrow(2, 0, ho * k)?
        .narrow(3, 0, wo * k)?
        .reshape((n, c, ho, k, wo, k))?
        .max(5)?
        .max(3)
}

/// `x[:, :, ::s, ::s]` with `left` zero channels before and `right` after,
/// from `index_select` and `pad_with_zeros`.
///
/// # Shapes
/// `x: [b, c, h, w]` -> `[b, left + c + right, ceil(h / s), ceil(w / s)]`
pub fn subsample_pad(x: &Tensor, stride: usize, left: usize, right: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if stride == 0 {
        candle_core::bail!("subsample_pad: stride must be positive")
    }
    let idx = |n: usize| -> Result<Tensor> {
        let v: Vec<u32> = (0..n as u32).step_by(stride).collect();
        let len = v.len();
        Tensor::from_vec(v, len, x.device())
    };
    let s = if stride == 1 {
        x.clone()
    } else {
        x.index_select(&idx(h)?, 2)?.index_select(&idx(w)?, 3)?
    };
    s.pad_with_zeros(1, left, right)
}
