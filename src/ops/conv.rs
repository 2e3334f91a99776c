//! 2-D convolution on the CPU as im2col + one GEMM per image, with both
//! gradients as GEMMs too (the weight gradient against the same im2col
//! buffer, the input gradient as a GEMM followed by col2im). The forward
//! of the shapes [`super::direct`] takes (the ResNets' 3x3 and 1x1 layers
//! on CPUs with AVX-512F) skips im2col and computes the same numbers bit
//! for bit straight from the image.
//!
//! The batch is split across rayon's threads; each GEMM runs on one thread
//! then. With fewer images than threads the GEMMs themselves go parallel.

use super::cpu::{
    add_into, add_strided, copy_strided, give_scratch, num_threads, par_init, relu_inplace,
    relu_mask, sgemm, slice_f32, sum, sum_sq_shifted, take_scratch, to_vec_f32, with_f32, Mat,
};
use super::direct;
use super::norm;
use super::pool::pool_plane;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;
use std::sync::Arc;
use std::sync::Mutex;

/// Sizes of one convolution, derived once from the operand shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
    pub ho: usize,
    pub wo: usize,
}

impl Geom {
    /// Checks the shapes of `x: [n, c, h, w]` and `w: [co, c, k, k]`.
    pub fn new(x: &[usize], w: &[usize], stride: usize, padding: usize) -> Result<Self> {
        let (&[n, c, h, wd], &[co, ci, kh, kw]) = (x, w) else {
            bail!("conv2d: expected a 4-d input and a 4-d weight, got {x:?} and {w:?}")
        };
        if ci != c {
            bail!("conv2d: input has {c} channels but the weight expects {ci} (weight {w:?})")
        }
        if kh != kw {
            bail!("conv2d: only square kernels are supported, got {kh}x{kw}")
        }
        if stride == 0 {
            bail!("conv2d: stride must be at least 1")
        }
        if h + 2 * padding < kh || wd + 2 * padding < kw {
            bail!("conv2d: kernel {kh}x{kw} larger than the padded input {h}x{wd} (padding {padding})")
        }
        let ho = (h + 2 * padding - kh) / stride + 1;
        let wo = (wd + 2 * padding - kw) / stride + 1;
        Ok(Geom {
            n,
            c,
            h,
            w: wd,
            co,
            k: kh,
            s: stride,
            p: padding,
            ho,
            wo,
        })
    }
    /// Rows of the im2col matrix: `c * k * k`.
    pub fn kk(&self) -> usize {
        self.c * self.k * self.k
    }
    /// Output pixels per channel.
    pub fn pp(&self) -> usize {
        self.ho * self.wo
    }
    pub fn in_img(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn out_img(&self) -> usize {
        self.co * self.pp()
    }
    /// A 1x1, stride-1, unpadded conv: the image itself is the im2col matrix.
    pub fn pointwise(&self) -> bool {
        self.k == 1 && self.s == 1 && self.p == 0
    }
    /// The output columns `[lo, hi)` whose input column `ow * s + kj - p`
    /// lies inside the image.
    fn ow_range(&self, kj: usize) -> (usize, usize) {
        let lo = if self.p > kj {
            (self.p - kj).div_ceil(self.s)
        } else {
            0
        };
        let hi = if self.w + self.p > kj {
            (self.w - 1 + self.p - kj) / self.s + 1
        } else {
            0
        };
        let hi = hi.min(self.wo);
        (lo.min(hi), hi)
    }
    /// The input row of output row `oh` at kernel row `ki`, if inside.
    pub(crate) fn ih(&self, oh: usize, ki: usize) -> Option<usize> {
        (oh * self.s + ki)
            .checked_sub(self.p)
            .filter(|&ih| ih < self.h)
    }
    /// The input column of output column `ow` at kernel column `kj`, if
    /// inside.
    pub(crate) fn iw(&self, ow: usize, kj: usize) -> Option<usize> {
        (ow * self.s + kj)
            .checked_sub(self.p)
            .filter(|&iw| iw < self.w)
    }
    /// Stride 1 with the output the size of the input ("same" padding).
    pub(crate) fn is_same(&self) -> bool {
        self.s == 1 && self.ho == self.h && self.wo == self.w
    }
}

/// For a stride-1 conv whose output has the input's size ("same"
/// padding), im2col row `(c, ki, kj)` is the channel plane shifted by
/// `d = (ki - p) * w + (kj - p)`: `row[j] = plane[j + d]`, except in output
/// rows whose input row is off the image and in the columns that wrap
/// around an edge. Returns `(j0, j1, d)`: `row[j]` for `j` in `[j0, j1)` is
/// `plane[j + d]` up to the wrapped columns, everything else is zero.
fn same_shift(g: &Geom, ki: usize, kj: usize) -> (usize, usize, isize) {
    let (h, w, p) = (g.h, g.w, g.p);
    let oh_lo = p.saturating_sub(ki);
    let oh_hi = (h + p).saturating_sub(ki).min(h);
    let d = (ki as isize - p as isize) * w as isize + (kj as isize - p as isize);
    let hw = (h * w) as isize;
    // Clamped to the plane: with a kernel taller than the image plus one,
    // a whole row of taps can fall off it (then `j0 = j1 = h * w`, and
    // `j0 + d` may lie outside the plane: callers skip empty ranges).
    let j0 = ((oh_lo * w) as isize).max(-d).clamp(0, hw) as usize;
    let j1 = ((oh_hi * w) as isize).min(hw - d).max(j0 as isize) as usize;
    (j0, j1, d)
}

/// The wrapped columns of a "same" conv at kernel column `kj`: `[0, lo)` and
/// `[hi, w)` of every output row.
fn same_cols(g: &Geom, kj: usize) -> (usize, usize) {
    (
        g.p.saturating_sub(kj),
        (g.w + g.p).saturating_sub(kj).min(g.w),
    )
}

/// Zeroes columns `[0, lo)` and `[hi, wo)` of every `wo`-wide row of
/// `rows`. The edges are a column or two wide (the padding), so they are
/// written element by element rather than through a `memset` call per row.
fn zero_edge_cols(rows: &mut [f32], wo: usize, lo: usize, hi: usize) {
    if lo == 0 && hi >= wo {
        return;
    }
    // Column by column down the rows: strided stores, which the compiler
    // does not turn into a `memset` call per row.
    for j in (0..lo).chain(hi.min(wo)..wo) {
        for r in rows.chunks_exact_mut(wo) {
            r[j] = 0.0;
        }
    }
}

/// Unfolds one image `[c, h, w]` into `col: [c * k * k, ho * wo]`.
pub(crate) fn im2col(g: &Geom, x: &[f32], col: &mut [f32]) {
    let (pp, wo) = (g.pp(), g.wo);
    let same = g.is_same();
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        for ki in 0..g.k {
            for kj in 0..g.k {
                let row = &mut col[((c * g.k + ki) * g.k + kj) * pp..][..pp];
                if same {
                    let (j0, j1, d) = same_shift(g, ki, kj);
                    row[..j0].fill(0.0);
                    row[j1..].fill(0.0);
                    if j1 > j0 {
                        let s0 = (j0 as isize + d) as usize;
                        row[j0..j1].copy_from_slice(&plane[s0..s0 + (j1 - j0)]);
                    }
                    let (lo, hi) = same_cols(g, kj);
                    zero_edge_cols(row, wo, lo, hi);
                    continue;
                }
                let (lo, hi) = g.ow_range(kj);
                for oh in 0..g.ho {
                    let dst = &mut row[oh * wo..][..wo];
                    let Some(ih) = g.ih(oh, ki) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let src = &plane[ih * g.w..][..g.w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if g.s == 1 {
                        let iw0 = lo + kj - g.p;
                        dst[lo..hi].copy_from_slice(&src[iw0..iw0 + hi - lo]);
                    } else {
                        copy_strided(&mut dst[lo..hi], &src[lo * g.s + kj - g.p..], g.s);
                    }
                }
            }
        }
    }
}

/// The im2col matrix of image `xn`: the image itself for a pointwise
/// convolution, else unfolded into `col`.
fn unfold<'a>(g: &Geom, xn: &'a [f32], col: &'a mut [f32]) -> &'a [f32] {
    if g.pointwise() {
        xn
    } else {
        im2col(g, xn, col);
        col
    }
}

/// Folds `col: [c * k * k, ho * wo]` back onto one image `[c, h, w]`,
/// adding into `x` (the adjoint of [`im2col`]). `col` is scratch: the
/// entries that fall off the image may be overwritten.
pub(crate) fn col2im(g: &Geom, col: &mut [f32], x: &mut [f32]) {
    let (pp, wo) = (g.pp(), g.wo);
    let same = g.is_same();
    for c in 0..g.c {
        let plane = &mut x[c * g.h * g.w..][..g.h * g.w];
        for ki in 0..g.k {
            for kj in 0..g.k {
                let row = &mut col[((c * g.k + ki) * g.k + kj) * pp..][..pp];
                if same {
                    // Zero the wrapped columns, then one contiguous add.
                    let (lo, hi) = same_cols(g, kj);
                    zero_edge_cols(row, wo, lo, hi);
                    let (j0, j1, d) = same_shift(g, ki, kj);
                    if j1 > j0 {
                        let s0 = (j0 as isize + d) as usize;
                        add_into(&mut plane[s0..s0 + (j1 - j0)], &row[j0..j1]);
                    }
                    continue;
                }
                let (lo, hi) = g.ow_range(kj);
                if lo >= hi {
                    continue;
                }
                for oh in 0..g.ho {
                    let Some(ih) = g.ih(oh, ki) else { continue };
                    let dst = &mut plane[ih * g.w..][..g.w];
                    let src = &row[oh * wo..][..wo];
                    if g.s == 1 {
                        let iw0 = lo + kj - g.p;
                        add_into(&mut dst[iw0..iw0 + hi - lo], &src[lo..hi]);
                    } else {
                        add_strided(&mut dst[lo * g.s + kj - g.p..], &src[lo..hi], g.s);
                    }
                }
            }
        }
    }
}

/// How to spread `n` images over the thread pool: `(images per task,
/// parallelism inside each GEMM)`.
fn schedule(n: usize) -> (usize, Parallelism) {
    let t = num_threads();
    if t <= 1 {
        (n.max(1), Parallelism::None)
    } else if n < t {
        // Too few images to share out: one task, parallel GEMMs.
        (n.max(1), Parallelism::Rayon(t))
    } else {
        // A few tasks per thread so a busy core does not hold up the step.
        (n.div_ceil(4 * t).max(1), Parallelism::None)
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| candle_core::Error::Msg("conv2d: poisoned lock".into()))
}

/// One result slot per task, filled in parallel and read back in task order.
struct Slots<T>(Vec<Mutex<T>>);

impl<T: Default> Slots<T> {
    fn new(n: usize) -> Self {
        Slots((0..n).map(|_| Mutex::default()).collect())
    }
    fn put(&self, t: usize, v: T) {
        if let Ok(mut s) = self.0[t].lock() {
            *s = v;
        }
    }
    fn into_vec(self) -> Vec<T> {
        self.0
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }
}

/// What follows the GEMM of [`ConvAct`], per image and while it is in cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Act {
    /// `max(., 0)` after the bias.
    pub relu: bool,
    /// Non-overlapping `pool x pool` max pooling last (1: none).
    pub pool: usize,
}

impl Act {
    pub const NONE: Act = Act {
        relu: false,
        pool: 1,
    };
    /// Output size per channel.
    fn out_hw(&self, g: &Geom) -> (usize, usize) {
        (g.ho / self.pool, g.wo / self.pool)
    }
}

/// Forward convolution with bias and epilogue:
/// `y[i] = act(w * im2col(x[i]) + bias)`. With pooling, also returns the
/// argmax record of every output (see [`super::pool`]).
pub(crate) fn conv_fwd(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Act,
) -> (Vec<f32>, Vec<u8>) {
    let (kk, pp, in_img) = (g.kk(), g.pp(), g.in_img());
    let (ho, wo) = act.out_hw(g);
    let out_img = g.co * ho * wo;
    if g.n == 0 || out_img == 0 {
        return (
            vec![0f32; g.n * out_img],
            vec![0u8; if act.pool > 1 { g.n * out_img } else { 0 }],
        );
    }
    let (per_task, par) = schedule(g.n);
    let col_len = if g.pointwise() { 0 } else { kk * pp };
    let pooled = act.pool > 1;
    let mut argmax = vec![0u8; if pooled { g.n * out_img } else { 0 }];
    let arg_chunks: Vec<Mutex<&mut [u8]>> = if pooled {
        argmax
            .chunks_mut(per_task * out_img)
            .map(Mutex::new)
            .collect()
    } else {
        Vec::new()
    };
    let taps = (!pooled && direct::eligible(g)).then(|| direct::Taps::new(g));
    let ph_len = taps.as_ref().map_or(0, direct::Taps::phase_len);
    let col_len = if taps.is_some() { 0 } else { col_len };
    let y = par_init(g.n * out_img, per_task * out_img, |t, ys| {
        let mut col = take_scratch(col_len);
        let mut ph = take_scratch(ph_len);
        let mut z = take_scratch(if pooled { g.co * pp } else { 0 });
        let mut args = if pooled {
            arg_chunks[t].lock().ok()
        } else {
            None
        };
        for (j, yn) in ys.chunks_mut(out_img).enumerate() {
            let i = t * per_task + j;
            let xn = &x[i * in_img..][..in_img];
            let zn: &mut [f32] = if pooled { &mut z } else { yn };
            conv_image(g, taps.as_ref(), xn, w, bias, zn, &mut col, &mut ph, par);
            if pooled {
                let an = match args.as_deref_mut() {
                    Some(a) => &mut a[j * out_img..][..out_img],
                    None => continue,
                };
                for ((zp, yp), ap) in z
                    .chunks(pp)
                    .zip(yn.chunks_mut(ho * wo))
                    .zip(an.chunks_mut(ho * wo))
                {
                    pool_plane(act.pool, g.wo, wo, zp, yp, ap);
                    if act.relu {
                        relu_inplace(yp);
                    }
                }
            } else if act.relu {
                relu_inplace(yn);
            }
        }
        give_scratch(col);
        give_scratch(ph);
        give_scratch(z);
    });
    drop(arg_chunks);
    (y, argmax)
}

/// Where the backward finds the gradient `gz` of the GEMM output of image
/// `i`: straight in the output gradient, or rebuilt from it through the
/// fused epilogue (ReLU, pooling, batch norm).
pub(crate) enum GradSrc<'a> {
    /// `gz = gy`.
    Direct(&'a [f32]),
    /// `gz = gy * (y > 0)`, or with pooling: `gy` scattered to each window's
    /// argmax (where `y > 0` if `relu`), zero elsewhere.
    Act {
        gy: &'a [f32],
        y: &'a [f32],
        argmax: &'a [u8],
        act: Act,
    },
    /// Batch norm (training, closed form): `gz = a g + b z + k` per channel,
    /// `g = gy` masked by the ReLU after the batch norm `relu` when given.
    Bn {
        gy: &'a [f32],
        z: &'a [f32],
        coef: &'a norm::Coef,
        relu: Option<&'a norm::Affine>,
    },
}

impl GradSrc<'_> {
    /// `gz` of image `i` (`[co, pp]`), built in `scratch` when needed.
    fn image<'s>(&'s self, g: &Geom, i: usize, scratch: &'s mut Vec<f32>) -> &'s [f32] {
        let (pp, co) = (g.pp(), g.co);
        let n = co * pp;
        match self {
            GradSrc::Direct(gy) => &gy[i * n..][..n],
            GradSrc::Act { gy, y, argmax, act } => {
                scratch.resize(n, 0.0);
                if act.pool <= 1 {
                    let (gy, y) = (&gy[i * n..][..n], &y[i * n..][..n]);
                    if act.relu {
                        relu_mask(gy, y, scratch);
                    } else {
                        scratch.copy_from_slice(gy);
                    }
                } else {
                    let (ho, wo) = act.out_hw(g);
                    let m = co * ho * wo;
                    let (gy, y, am) = (&gy[i * m..][..m], &y[i * m..][..m], &argmax[i * m..][..m]);
                    scratch.fill(0.0);
                    let k = act.pool;
                    for c in 0..co {
                        let plane = &mut scratch[c * pp..][..pp];
                        for oh in 0..ho {
                            for ow in 0..wo {
                                let j = (c * ho + oh) * wo + ow;
                                if act.relu && y[j] <= 0.0 {
                                    continue;
                                }
                                let a = am[j] as usize;
                                plane[(oh * k + a / k) * g.wo + ow * k + a % k] = gy[j];
                            }
                        }
                    }
                }
                scratch
            }
            GradSrc::Bn { gy, z, coef, relu } => {
                scratch.resize(n, 0.0);
                let (gy, z) = (&gy[i * n..][..n], &z[i * n..][..n]);
                for c in 0..co {
                    let r = c * pp..(c + 1) * pp;
                    let rl = norm::Affine::relu_of(*relu, c);
                    coef.apply(c, &gy[r.clone()], &z[r.clone()], rl, &mut scratch[r]);
                }
                scratch
            }
        }
    }
}

/// Gradients of a convolution; each is computed only when asked for.
pub(crate) struct ConvGrads {
    pub dx: Option<Vec<f32>>,
    pub dw: Option<Vec<f32>>,
    pub db: Option<Vec<f32>>,
}

/// Backward convolution: with `gz[i]` from `src`,
/// `dw = sum_i gz[i] im2col(x[i])^T`, `db = sum gz`,
/// `dx[i] = col2im(w^T gz[i])`, in one pass over the batch.
pub(crate) fn conv_bwd(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    src: &GradSrc<'_>,
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> ConvGrads {
    let (kk, pp, in_img) = (g.kk(), g.pp(), g.in_img());
    let (per_task, par) = schedule(g.n);
    let tasks = g.n.div_ceil(per_task);
    let col_len = if need_dw && !g.pointwise() {
        kk * pp
    } else {
        0
    };
    let dx_taps = (need_dx && direct::eligible_dx(g)).then(|| direct::Taps::new(g));
    let dcol_len = if need_dx && !g.pointwise() && dx_taps.is_none() {
        kk * pp
    } else {
        0
    };

    // One task: images [t * per_task, ..) -> partial (dw, db); writes dx.
    let run = |t: usize, mut dxs: Option<&mut [f32]>| -> (Vec<f32>, Vec<f32>) {
        let mut col = take_scratch(col_len);
        let mut dcol = take_scratch(dcol_len);
        let mut scratch = take_scratch(0);
        let mut dw = vec![0f32; if need_dw { g.co * kk } else { 0 }];
        let mut db = vec![0f64; if need_db { g.co } else { 0 }];
        let lo = t * per_task;
        let hi = (lo + per_task).min(g.n);
        for i in lo..hi {
            let gzn = src.image(g, i, &mut scratch);
            let xn = &x[i * in_img..][..in_img];
            if need_dw {
                let colref = unfold(g, xn, &mut col);
                sgemm(
                    g.co,
                    kk,
                    pp,
                    &mut dw,
                    kk,
                    i > lo,
                    Mat::rows(gzn, pp),
                    Mat::trans(colref, pp),
                    par,
                );
            }
            if need_db {
                for (acc, row) in db.iter_mut().zip(gzn.chunks(pp)) {
                    *acc += sum(row);
                }
            }
            if let Some(dxs) = dxs.as_deref_mut() {
                let dxn = &mut dxs[(i - lo) * in_img..][..in_img];
                let wt = Mat::trans(w, kk);
                if let Some(taps) = &dx_taps {
                    direct::dx_image(g, taps, gzn, w, dxn);
                } else if g.pointwise() {
                    sgemm(kk, pp, g.co, dxn, pp, false, wt, Mat::rows(gzn, pp), par);
                } else {
                    sgemm(
                        kk,
                        pp,
                        g.co,
                        &mut dcol,
                        pp,
                        false,
                        wt,
                        Mat::rows(gzn, pp),
                        par,
                    );
                    col2im(g, &mut dcol, dxn);
                }
            }
        }
        give_scratch(col);
        give_scratch(dcol);
        give_scratch(scratch);
        (dw, db.into_iter().map(|v| v as f32).collect())
    };

    let slots = Slots::new(tasks);
    let dx = if need_dx && in_img > 0 {
        Some(par_init(g.n * in_img, per_task * in_img, |t, dxs| {
            slots.put(t, run(t, Some(dxs)))
        }))
    } else {
        (0..tasks)
            .into_par_iter()
            .for_each(|t| slots.put(t, run(t, None)));
        need_dx.then(Vec::new)
    };
    let partials = slots.into_vec();
    let reduce = |pick: fn(&WeightGrads) -> &Vec<f32>, len: usize| {
        let mut acc = vec![0f32; len];
        for p in &partials {
            for (a, v) in acc.iter_mut().zip(pick(p)) {
                *a += v;
            }
        }
        acc
    };
    ConvGrads {
        dx,
        dw: need_dw.then(|| reduce(|p| &p.0, g.co * kk)),
        db: need_db.then(|| reduce(|p| &p.1, g.co)),
    }
}

/// One worker's partial weight and bias gradients.
type WeightGrads = (Vec<f32>, Vec<f32>);

/// Runs [`conv_bwd`] on tensors and wraps the gradients. Only operands that
/// take part in autograd (`track_op`) get one: the input gradient of a first
/// layer fed raw images is skipped.
fn conv_bwd_tensors(
    g: &Geom,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    src: impl FnOnce(&dyn Fn(&GradSrc<'_>) -> ConvGrads) -> Result<ConvGrads>,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let need_dx = x.track_op();
    let need_dw = w.track_op();
    let need_db = bias.is_some_and(|b| b.track_op());
    let grads = with_f32(x, "conv2d input", |xs| {
        with_f32(w, "conv2d weight", |ws| {
            src(&|s: &GradSrc<'_>| conv_bwd(g, xs, ws, s, need_dx, need_dw, need_db))
        })
    })?;
    let dev = x.device();
    let dx = grads
        .dx
        .map(|v| Tensor::from_vec(v, x.shape(), dev))
        .transpose()?;
    let dw = grads
        .dw
        .map(|v| Tensor::from_vec(v, w.shape(), dev))
        .transpose()?;
    let db = grads
        .db
        .map(|v| Tensor::from_vec(v, g.co, dev))
        .transpose()?;
    Ok((dx, dw, db))
}

/// Convolution, optional bias, then [`Act`], as a candle custom op over
/// `(x, w)` ([`CustomOp2`]) or `(x, w, bias)` ([`CustomOp3`]).
pub(crate) struct ConvAct {
    pub stride: usize,
    pub padding: usize,
    pub act: Act,
    argmax: Mutex<Vec<u8>>,
}

impl ConvAct {
    pub fn new(stride: usize, padding: usize, act: Act) -> Self {
        ConvAct {
            stride,
            padding,
            act,
            argmax: Mutex::new(Vec::new()),
        }
    }

    fn fwd(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(x.1.dims(), w.1.dims(), self.stride, self.padding)?;
        if b.is_some_and(|b| b.len() != g.co) {
            bail!(
                "conv2d: bias has {} elements, expected {}",
                b.map_or(0, |b| b.len()),
                g.co
            )
        }
        if self.act.pool > super::pool::MAX_K || g.ho < self.act.pool || g.wo < self.act.pool {
            bail!(
                "conv2d: pooling window {} does not fit the {}x{} output",
                self.act.pool,
                g.ho,
                g.wo
            )
        }
        let xs = slice_f32(x.0, x.1, "conv2d input")?;
        let ws = slice_f32(w.0, w.1, "conv2d weight")?;
        let (y, argmax) = conv_fwd(&g, xs, ws, b, self.act);
        *lock(&self.argmax)? = argmax;
        let (ho, wo) = self.act.out_hw(&g);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.co, ho, wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = Geom::new(x.dims(), w.dims(), self.stride, self.padding)?;
        let gy = gy.contiguous()?;
        if self.act == Act::NONE {
            return conv_bwd_tensors(&g, x, w, b, |run| {
                with_f32(&gy, "conv2d output gradient", |gys| {
                    Ok(run(&GradSrc::Direct(gys)))
                })
            });
        }
        let argmax = lock(&self.argmax)?;
        conv_bwd_tensors(&g, x, w, b, |run| {
            with_f32(&gy, "conv2d output gradient", |gys| {
                with_f32(y, "conv2d output", |ys| {
                    if self.act.pool > 1 && argmax.len() != ys.len() {
                        bail!("conv2d: backward without a matching forward")
                    }
                    Ok(run(&GradSrc::Act {
                        gy: gys,
                        y: ys,
                        argmax: &argmax,
                        act: self.act,
                    }))
                })
            })
        })
    }
}

impl CustomOp2 for ConvAct {
    fn name(&self) -> &'static str {
        "cascade-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = ConvAct::bwd(self, x, w, None, y, gy)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for ConvAct {
    fn name(&self) -> &'static str {
        "cascade-conv2d-bias"
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
        let b = slice_f32(s3, l3, "conv2d bias")?;
        self.fwd((s1, l1), (s2, l2), Some(b))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        ConvAct::bwd(self, x, w, Some(b), y, gy)
    }
}

/// What the forward of [`ConvBn`] keeps for the backward and the caller.
#[derive(Default)]
pub(crate) struct BnSaved {
    /// The conv output before normalisation, `[n, co, ho, wo]`.
    pub z: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub invstd: Vec<f32>,
}

/// Forward conv and per-channel `(mean, biased var)` of its output, the
/// statistics gathered per image while the output is in cache and merged
/// with Chan's formula.
fn conv_stats_fwd(g: &Geom, x: &[f32], w: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (kk, pp, in_img, out_img) = (g.kk(), g.pp(), g.in_img(), g.out_img());
    let (per_task, par) = schedule(g.n);
    let tasks = g.n.div_ceil(per_task).max(1);
    let taps = direct::eligible(g).then(|| direct::Taps::new(g));
    let col_len = if g.pointwise() || taps.is_some() {
        0
    } else {
        kk * pp
    };
    let ph_len = taps.as_ref().map_or(0, direct::Taps::phase_len);
    // Per task and channel: (count, mean, M2).
    let slots: Slots<Vec<(f64, f64, f64)>> = Slots::new(tasks);
    let z = par_init(g.n * out_img, per_task * out_img, |t, zs| {
        let mut col = take_scratch(col_len);
        let mut ph = take_scratch(ph_len);
        let mut acc = vec![(0f64, 0f64, 0f64); g.co];
        for (j, zn) in zs.chunks_mut(out_img).enumerate() {
            let i = t * per_task + j;
            let xn = &x[i * in_img..][..in_img];
            conv_image(g, taps.as_ref(), xn, w, None, zn, &mut col, &mut ph, par);
            for (a, row) in acc.iter_mut().zip(zn.chunks(pp)) {
                let m0 = (sum(row) / pp as f64) as f32;
                let (s, q) = sum_sq_shifted(row, m0);
                let row_stats = (
                    pp as f64,
                    m0 as f64 + s / pp as f64,
                    (q - s * s / pp as f64).max(0.0),
                );
                *a = chan(*a, row_stats);
            }
        }
        give_scratch(col);
        give_scratch(ph);
        slots.put(t, acc);
    });
    let mut total = vec![(0f64, 0f64, 0f64); g.co];
    for part in slots.into_vec() {
        for (t, p) in total.iter_mut().zip(part) {
            *t = chan(*t, p);
        }
    }
    let mean = total.iter().map(|t| t.1 as f32).collect();
    let var = total
        .iter()
        .map(|t| {
            if t.0 > 0.0 {
                (t.2 / t.0) as f32
            } else {
                f32::NAN
            }
        })
        .collect();
    (z, mean, var)
}

/// One image's convolution, `zn = w * xn` plus `bias` per output channel:
/// the direct kernel where `taps` says it applies (reading the image or its
/// phases, split into `ph`), else im2col into `col` and a GEMM.
#[allow(clippy::too_many_arguments)]
fn conv_image(
    g: &Geom,
    taps: Option<&direct::Taps>,
    xn: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    zn: &mut [f32],
    col: &mut [f32],
    ph: &mut [f32],
    par: Parallelism,
) {
    if let Some(taps) = taps {
        let src = direct_source(g, taps, xn, ph);
        direct::conv_image(g, taps, src, w, bias, zn);
        return;
    }
    let (kk, pp) = (g.kk(), g.pp());
    if let Some(b) = bias {
        for (row, &bv) in zn.chunks_mut(pp).zip(b) {
            row.fill(bv);
        }
    }
    let colref = unfold(g, xn, col);
    sgemm(
        g.co,
        pp,
        kk,
        zn,
        pp,
        bias.is_some(),
        Mat::rows(w, kk),
        Mat::rows(colref, pp),
        par,
    );
}

/// What the direct kernel reads for image `xn`: the image itself at
/// stride 1, else its phases, split into `ph`.
fn direct_source<'a>(g: &Geom, taps: &direct::Taps, xn: &'a [f32], ph: &'a mut [f32]) -> &'a [f32] {
    if g.s == 1 {
        xn
    } else {
        direct::split_phases(g, taps, xn, ph);
        ph
    }
}

/// Merges two `(count, mean, M2)` summaries (Chan et al.).
fn chan(a: (f64, f64, f64), b: (f64, f64, f64)) -> (f64, f64, f64) {
    let n = a.0 + b.0;
    if n == 0.0 {
        return a;
    }
    let d = b.1 - a.1;
    (n, a.1 + d * b.0 / n, a.2 + b.2 + d * d * a.0 * b.0 / n)
}

/// Convolution (no bias) followed by training-mode batch norm and an
/// optional ReLU, as a candle custom op over `(x, w, [gamma; beta])`.
pub(crate) struct ConvBn {
    pub stride: usize,
    pub padding: usize,
    pub eps: f64,
    pub relu: bool,
    pub saved: Arc<Mutex<BnSaved>>,
}

impl CustomOp3 for ConvBn {
    fn name(&self) -> &'static str {
        "cascade-conv2d-batch-norm"
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
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        let x = slice_f32(s1, l1, "conv2d input")?;
        let w = slice_f32(s2, l2, "conv2d weight")?;
        let gb = slice_f32(s3, l3, "batch_norm gamma and beta")?;
        if gb.len() != 2 * g.co {
            bail!(
                "batch_norm: expected {} gamma and beta values, got {}",
                2 * g.co,
                gb.len()
            )
        }
        let (z, mean, var) = conv_stats_fwd(&g, x, w);
        let invstd: Vec<f32> = var
            .iter()
            .map(|&v| (1.0 / (v as f64 + self.eps).sqrt()) as f32)
            .collect();
        let scale: Vec<f32> = (0..g.co).map(|c| gb[c] * invstd[c]).collect();
        let shift: Vec<f32> = (0..g.co)
            .map(|c| gb[g.co + c] - mean[c] * scale[c])
            .collect();
        let y = norm::affine(&z, g.co, g.pp(), &scale, &shift, self.relu);
        *lock(&self.saved)? = BnSaved {
            z,
            mean,
            var,
            invstd,
        };
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.co, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gb: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = Geom::new(x.dims(), w.dims(), self.stride, self.padding)?;
        let gy = gy.contiguous()?;
        let saved = lock(&self.saved)?;
        if saved.z.len() != g.n * g.out_img() {
            bail!("conv2d_bn: backward without a matching forward")
        }
        let gbv = to_vec_f32(gb)?;
        let (gamma, beta) = gbv.split_at(g.co);
        let affine = norm::Affine::new(gamma, beta, &saved.mean, &saved.invstd);
        let relu = self.relu.then_some(&affine);
        let mut dgb = None;
        let (dx, dw, _) = conv_bwd_tensors(&g, x, w, None, |run| {
            with_f32(&gy, "conv2d_bn output gradient", |gys| {
                let sums = norm::grad_sums(gys, &saved.z, relu, &saved.mean, g.n, g.co, g.pp());
                let coef =
                    norm::Coef::new(&sums, gamma, &saved.mean, &saved.invstd, g.n * g.pp(), true);
                dgb = Some([coef.dgamma.clone(), coef.dbeta.clone()].concat());
                Ok(run(&GradSrc::Bn {
                    gy: gys,
                    z: &saved.z,
                    coef: &coef,
                    relu,
                }))
            })
        })?;
        let dgb = match dgb {
            Some(v) if gb.track_op() => Some(Tensor::from_vec(v, 2 * g.co, gb.device())?),
            _ => None,
        };
        Ok((dx, dw, dgb))
    }
}
