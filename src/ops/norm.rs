//! Fused batch norm on the CPU, optionally followed by a ReLU.
//!
//! Training mode is one pass for the statistics and one to normalise; the
//! backward is the closed form, one pass for the two per-channel sums and one
//! to write the input gradient. Work is spread over channels (reductions) or
//! planes (element-wise passes) with rayon.

use super::cpu::{
    bn_input_grad, par_init, scale_shift, slice_f32, sum_g_gx, sum_sq_shifted, with_f32,
};
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
pub(crate) fn min_planes(hw: usize) -> usize {
    (16 * 1024 / hw.max(1)).max(1)
}

/// Per-channel mean and biased variance over `(n, h, w)` of contiguous
/// `[n, c, hw]` data. Sums are taken around a per-channel shift (its first
/// element) in f64, so a large mean does not cancel the variance away.
pub(crate) fn stats(x: &[f32], n: usize, c: usize, hw: usize) -> (Vec<f32>, Vec<f32>) {
    if n * hw == 0 {
        return (vec![f32::NAN; c], vec![f32::NAN; c]);
    }
    let m = (n * hw) as f64;
    // Per-image partial sums (contiguous reads), merged per channel.
    let shift: Vec<f32> = (0..c).map(|ci| x[ci * hw]).collect();
    let sums = per_image_sums(n, c, |i, acc| {
        for (ci, a) in acc.iter_mut().enumerate() {
            let (s, q) = sum_sq_shifted(&x[(i * c + ci) * hw..][..hw], shift[ci]);
            a.0 += s;
            a.1 += q;
        }
    });
    sums.iter()
        .zip(&shift)
        .map(|(&(s, q), &sh)| {
            let d = s / m;
            ((sh as f64 + d) as f32, (q / m - d * d).max(0.0) as f32)
        })
        .unzip()
}

/// Runs `f(i, acc)` for every image `i`, in parallel over runs of images,
/// and sums the per-run `acc` (one `(f64, f64)` per channel).
fn per_image_sums(
    n: usize,
    c: usize,
    f: impl Fn(usize, &mut [(f64, f64)]) + Sync,
) -> Vec<(f64, f64)> {
    (0..n)
        .into_par_iter()
        .with_min_len(8)
        .fold(
            || vec![(0f64, 0f64); c],
            |mut acc, i| {
                f(i, &mut acc);
                acc
            },
        )
        .reduce(
            || vec![(0f64, 0f64); c],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    x.0 += y.0;
                    x.1 += y.1;
                }
                a
            },
        )
}

/// `y = x * scale[c] + shift[c]`, then `max(y, 0)` when `relu`.
pub(crate) fn affine(
    x: &[f32],
    c: usize,
    hw: usize,
    scale: &[f32],
    shift: &[f32],
    relu: bool,
) -> Vec<f32> {
    if hw == 0 {
        return vec![0f32; x.len()];
    }
    let per = min_planes(hw);
    par_init(x.len(), per * hw, |t, ys| {
        for (j, yp) in ys.chunks_mut(hw).enumerate() {
            let plane = t * per + j;
            let xp = &x[plane * hw..][..hw];
            scale_shift(xp, scale[plane % c], shift[plane % c], relu, yp);
        }
    })
}

/// The per-channel forward map of a batch norm, `y = x * scale + shift`.
pub(crate) struct Affine {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

impl Affine {
    pub fn new(gamma: &[f32], beta: &[f32], mean: &[f32], invstd: &[f32]) -> Self {
        let scale: Vec<f32> = gamma.iter().zip(invstd).map(|(g, s)| g * s).collect();
        let shift = beta
            .iter()
            .zip(mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        Affine { scale, shift }
    }
    /// `(scale, shift)` of channel `c` when `relu`, for the ReLU mask.
    pub fn relu_of(this: Option<&Self>, c: usize) -> Option<(f32, f32)> {
        this.map(|a| (a.scale[c], a.shift[c]))
    }
}

/// Per channel, `(sum(g), sum(g * (x - mean)))` over contiguous
/// `[n, c, hw]` data, `g = gy` masked by the ReLU after the batch norm
/// `relu` when given.
pub(crate) fn grad_sums(
    gy: &[f32],
    x: &[f32],
    relu: Option<&Affine>,
    mean: &[f32],
    n: usize,
    c: usize,
    hw: usize,
) -> Vec<(f64, f64)> {
    per_image_sums(n, c, |i, acc| {
        for (ci, a) in acc.iter_mut().enumerate() {
            let o = (i * c + ci) * hw;
            let (s, q) = sum_g_gx(
                &gy[o..o + hw],
                &x[o..o + hw],
                mean[ci],
                Affine::relu_of(relu, ci),
            );
            a.0 += s;
            a.1 += q;
        }
    })
}

/// The closed-form batch-norm backward as per-channel constants:
/// `dx = a g + b x + k` (`b = k = 0` with fixed statistics), and the
/// parameter gradients.
pub(crate) struct Coef {
    a: Vec<f32>,
    b: Vec<f32>,
    k: Vec<f32>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
}

impl Coef {
    /// From the sums of [`grad_sums`] over `m` elements per channel.
    pub fn new(
        sums: &[(f64, f64)],
        gamma: &[f32],
        mean: &[f32],
        invstd: &[f32],
        m: usize,
        batch_stats: bool,
    ) -> Self {
        let m = m as f64;
        let c = sums.len();
        let mut coef = Coef {
            a: vec![0.0; c],
            b: vec![0.0; c],
            k: vec![0.0; c],
            dgamma: vec![0.0; c],
            dbeta: vec![0.0; c],
        };
        for ci in 0..c {
            let is = invstd[ci] as f64;
            let ac = gamma[ci] as f64 * is;
            coef.a[ci] = ac as f32;
            if batch_stats {
                let bc = -ac * is * is * sums[ci].1 / m;
                coef.b[ci] = bc as f32;
                coef.k[ci] = (-ac * sums[ci].0 / m - bc * mean[ci] as f64) as f32;
            }
            coef.dgamma[ci] = (sums[ci].1 * is) as f32;
            coef.dbeta[ci] = sums[ci].0 as f32;
        }
        coef
    }

    /// `out = a g + b x + k` for one plane of channel `c`, `g = gy` masked
    /// by the ReLU after the batch norm, `relu = (scale, shift)`, when given.
    #[inline]
    pub fn apply(
        &self,
        c: usize,
        gy: &[f32],
        x: &[f32],
        relu: Option<(f32, f32)>,
        out: &mut [f32],
    ) {
        bn_input_grad(gy, x, (self.a[c], self.b[c], self.k[c]), relu, out);
    }
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
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, hw) = dims_nchw(x.dims(), "batch_norm")?;
        let gy = gy.contiguous()?;
        let need_dx = x.track_op();
        let gamma_v = super::cpu::to_vec_f32(gamma)?;
        let beta_v = super::cpu::to_vec_f32(beta)?;
        let affine = Affine::new(&gamma_v, &beta_v, &self.mean, &self.invstd);
        let relu = self.relu.then_some(&affine);
        let (dx, dgamma, dbeta) = with_f32(x, "batch_norm input", |xs| {
            with_f32(&gy, "batch_norm output gradient", |gys| {
                let sums = grad_sums(gys, xs, relu, &self.mean, n, c, hw);
                let coef = Coef::new(
                    &sums,
                    &gamma_v,
                    &self.mean,
                    &self.invstd,
                    n * hw,
                    self.batch_stats,
                );
                let dx = (need_dx && hw > 0).then(|| {
                    let per = min_planes(hw);
                    par_init(xs.len(), per * hw, |t, dxs| {
                        for (j, d) in dxs.chunks_mut(hw).enumerate() {
                            let o = (t * per + j) * hw;
                            let ci = (t * per + j) % c;
                            coef.apply(
                                ci,
                                &gys[o..o + hw],
                                &xs[o..o + hw],
                                Affine::relu_of(relu, ci),
                                d,
                            );
                        }
                    })
                });
                let dx = dx.or_else(|| need_dx.then(|| vec![0f32; xs.len()]));
                Ok((dx, coef.dgamma, coef.dbeta))
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
