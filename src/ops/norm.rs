//! Fused batch norm on the CPU, optionally followed by a ReLU.
//!
//! Training mode is one pass for the statistics and one to normalise; the
//! backward is the closed form, one pass for the two per-channel sums and one
//! to write the input gradient. Work is spread over channels (reductions) or
//! planes (element-wise passes) with rayon.

use super::cpu::{par_init, slice_f32, sum_g_gx, sum_sq_shifted, with_f32};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `(n, c, h * w)` of a `[n, c, h, w]` tensor.
pub(crate) fn dims_nchw(dims: &[usize], what: &str) -> Result<(usize, usize, usize)> {
    match dims {
        &[n, c, h, w] => Ok((n, c, h * w)),
        _ => bail!("{what}: expected an input of shape [b, c, h, w], got {dims:?}"),
    }
}

/// Planes per rayon task so a task touches at least ~64 KiB.
fn min_planes(hw: usize) -> usize {
    (16 * 1024 / hw.max(1)).max(1)
}

/// Per-channel mean and biased variance over `(n, h, w)` of contiguous
/// `[n, c, hw]` data. Sums are taken around a per-channel shift (its first
/// element) in f64, so a large mean does not cancel the variance away.
pub(crate) fn stats(x: &[f32], n: usize, c: usize, hw: usize) -> (Vec<f32>, Vec<f32>) {
    let m = (n * hw) as f64;
    (0..c)
        .into_par_iter()
        .map(|ci| {
            if n * hw == 0 {
                return (f32::NAN, f32::NAN);
            }
            let shift = x[ci * hw];
            let (mut s, mut q) = (0f64, 0f64);
            for i in 0..n {
                let (a, b) = sum_sq_shifted(&x[(i * c + ci) * hw..][..hw], shift);
                s += a;
                q += b;
            }
            let d = s / m;
            ((shift as f64 + d) as f32, (q / m - d * d).max(0.0) as f32)
        })
        .unzip()
}

/// `y = x * scale[c] + shift[c]`, then `max(y, 0)` when `relu`.
fn affine(x: &[f32], c: usize, hw: usize, scale: &[f32], shift: &[f32], relu: bool) -> Vec<f32> {
    if hw == 0 {
        return vec![0f32; x.len()];
    }
    let per = min_planes(hw);
    par_init(x.len(), per * hw, |t, ys| {
        for (j, yp) in ys.chunks_mut(hw).enumerate() {
            let plane = t * per + j;
            let xp = &x[plane * hw..][..hw];
            let (a, b) = (scale[plane % c], shift[plane % c]);
            if relu {
                for (yv, &xv) in yp.iter_mut().zip(xp) {
                    *yv = (xv * a + b).max(0.0);
                }
            } else {
                for (yv, &xv) in yp.iter_mut().zip(xp) {
                    *yv = xv * a + b;
                }
            }
        }
    })
}

/// Batch norm with the statistics fixed at construction, as a candle custom
/// op over `(x, gamma, beta)`. With `batch_stats` the statistics are the
/// batch's own (training mode) and the backward carries their dependence on
/// `x`; without, they are constants (inference mode). No gradient flows to
/// the statistics themselves.
pub(crate) struct BatchNorm {
    pub mean: Vec<f32>,
    pub invstd: Vec<f32>,
    pub relu: bool,
    pub batch_stats: bool,
}

impl CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        "cascade-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, hw) = dims_nchw(l1.dims(), "batch_norm")?;
        let x = slice_f32(s1, l1, "batch_norm input")?;
        let gamma = slice_f32(s2, l2, "batch_norm gamma")?;
        let beta = slice_f32(s3, l3, "batch_norm beta")?;
        let scale: Vec<f32> = gamma.iter().zip(&self.invstd).map(|(g, s)| g * s).collect();
        let shift: Vec<f32> = (0..c).map(|i| beta[i] - self.mean[i] * scale[i]).collect();
        let y = affine(x, c, hw, &scale, &shift, self.relu);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, hw) = dims_nchw(x.dims(), "batch_norm")?;
        let gy = gy.contiguous()?;
        let m = (n * hw) as f64;
        let need_dx = x.track_op();
        let (dx, dgamma, dbeta) = with_f32(x, "batch_norm input", |xs| {
            with_f32(&gy, "batch_norm output gradient", |gys| {
                with_f32(y, "batch_norm output", |ys| {
                    let gamma = super::cpu::to_vec_f32(gamma)?;
                    let mask = self.relu.then_some(ys);
                    // Pass 1: per channel, sum(g) and sum(g * (x - mean)).
                    let sums: Vec<(f64, f64)> = (0..c)
                        .into_par_iter()
                        .map(|ci| {
                            let (mut s, mut q) = (0f64, 0f64);
                            for i in 0..n {
                                let o = (i * c + ci) * hw;
                                let mk = mask.map(|y| &y[o..o + hw]);
                                let (a, b) =
                                    sum_g_gx(&gys[o..o + hw], &xs[o..o + hw], self.mean[ci], mk);
                                s += a;
                                q += b;
                            }
                            (s, q)
                        })
                        .collect();
                    let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
                    let dgamma: Vec<f32> = sums
                        .iter()
                        .zip(&self.invstd)
                        .map(|(s, &is)| (s.1 * is as f64) as f32)
                        .collect();
                    // Pass 2: dx = a g + b x + k, per channel constants.
                    let dx = need_dx.then(|| {
                        let mut a = vec![0f32; c];
                        let mut b = vec![0f32; c];
                        let mut k = vec![0f32; c];
                        for ci in 0..c {
                            let is = self.invstd[ci] as f64;
                            let ac = gamma[ci] as f64 * is;
                            a[ci] = ac as f32;
                            if self.batch_stats {
                                let bc = -ac * is * is * sums[ci].1 / m;
                                b[ci] = bc as f32;
                                k[ci] = (-ac * sums[ci].0 / m - bc * self.mean[ci] as f64) as f32;
                            }
                        }
                        if hw == 0 {
                            return vec![0f32; xs.len()];
                        }
                        let per = min_planes(hw);
                        par_init(xs.len(), per * hw, |t, dxs| {
                            for (j, d) in dxs.chunks_mut(hw).enumerate() {
                                let plane = t * per + j;
                                let ci = plane % c;
                                let o = plane * hw;
                                let (g, xp) = (&gys[o..o + hw], &xs[o..o + hw]);
                                let (ac, bc, kc) = (a[ci], b[ci], k[ci]);
                                match mask {
                                    None => {
                                        for ((d, &g), &xv) in d.iter_mut().zip(g).zip(xp) {
                                            *d = ac * g + bc * xv + kc;
                                        }
                                    }
                                    Some(ys) => {
                                        let yp = &ys[o..o + hw];
                                        for (((d, &g), &xv), &yv) in
                                            d.iter_mut().zip(g).zip(xp).zip(yp)
                                        {
                                            let g = if yv > 0.0 { g } else { 0.0 };
                                            *d = ac * g + bc * xv + kc;
                                        }
                                    }
                                }
                            }
                        })
                    });
                    Ok((dx, dgamma, dbeta))
                })
            })
        })?;
        let dev = x.device();
        let dx = dx
            .map(|v| Tensor::from_vec(v, x.shape(), dev))
            .transpose()?;
        let dgamma = gamma
            .track_op()
            .then(|| Tensor::from_vec(dgamma, gamma.shape(), dev))
            .transpose()?;
        let dbeta = beta
            .track_op()
            .then(|| Tensor::from_vec(dbeta, beta.shape(), dev))
            .transpose()?;
        Ok((dx, dgamma, dbeta))
    }
}
