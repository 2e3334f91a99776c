//! 2-D convolution on the CPU as im2col + one GEMM per image, with both
//! gradients as GEMMs too (the weight gradient against the same im2col
//! buffer, the input gradient as a GEMM followed by col2im).
//!
//! The batch is split across rayon's threads; each GEMM runs on one thread
//! then. With fewer images than threads the GEMMs themselves go parallel.

use super::cpu::{num_threads, par_init, sgemm, slice_f32, sum, with_f32, Mat};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;
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
    fn ih(&self, oh: usize, ki: usize) -> Option<usize> {
        (oh * self.s + ki)
            .checked_sub(self.p)
            .filter(|&ih| ih < self.h)
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
    let j0 = ((oh_lo * w) as isize).max(-d).max(0) as usize;
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

fn is_same(g: &Geom) -> bool {
    g.s == 1 && g.ho == g.h && g.wo == g.w
}

/// Unfolds one image `[c, h, w]` into `col: [c * k * k, ho * wo]`.
fn im2col(g: &Geom, x: &[f32], col: &mut [f32]) {
    let (pp, wo) = (g.pp(), g.wo);
    let same = is_same(g);
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        for ki in 0..g.k {
            for kj in 0..g.k {
                let row = &mut col[((c * g.k + ki) * g.k + kj) * pp..][..pp];
                if same {
                    let (j0, j1, d) = same_shift(g, ki, kj);
                    row[..j0].fill(0.0);
                    row[j1..].fill(0.0);
                    let s0 = (j0 as isize + d) as usize;
                    row[j0..j1].copy_from_slice(&plane[s0..s0 + (j1 - j0)]);
                    let (lo, hi) = same_cols(g, kj);
                    if lo > 0 || hi < wo {
                        for r in row.chunks_exact_mut(wo) {
                            r[..lo].fill(0.0);
                            r[hi..].fill(0.0);
                        }
                    }
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
                        let src = &src[lo * g.s + kj - g.p..];
                        for (d, &v) in dst[lo..hi].iter_mut().zip(src.iter().step_by(g.s)) {
                            *d = v;
                        }
                    }
                }
            }
        }
    }
}

/// Folds `col: [c * k * k, ho * wo]` back onto one image `[c, h, w]`,
/// adding into `x` (the adjoint of [`im2col`]). `col` is scratch: the
/// entries that fall off the image may be overwritten.
fn col2im(g: &Geom, col: &mut [f32], x: &mut [f32]) {
    let (pp, wo) = (g.pp(), g.wo);
    let same = is_same(g);
    for c in 0..g.c {
        let plane = &mut x[c * g.h * g.w..][..g.h * g.w];
        for ki in 0..g.k {
            for kj in 0..g.k {
                let row = &mut col[((c * g.k + ki) * g.k + kj) * pp..][..pp];
                if same {
                    // Zero the wrapped columns, then one contiguous add.
                    let (lo, hi) = same_cols(g, kj);
                    if lo > 0 || hi < wo {
                        for r in row.chunks_exact_mut(wo) {
                            r[..lo].fill(0.0);
                            r[hi..].fill(0.0);
                        }
                    }
                    let (j0, j1, d) = same_shift(g, ki, kj);
                    let s0 = (j0 as isize + d) as usize;
                    for (dst, &v) in plane[s0..s0 + (j1 - j0)].iter_mut().zip(&row[j0..j1]) {
                        *dst += v;
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
                        for (d, &v) in dst[iw0..iw0 + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        let dst = &mut dst[lo * g.s + kj - g.p..];
                        for (d, &v) in dst.iter_mut().step_by(g.s).zip(&src[lo..hi]) {
                            *d += v;
                        }
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

/// Forward convolution. `y[i] = w * im2col(x[i]) + bias`.
pub(crate) fn conv_fwd(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (kk, pp, in_img, out_img) = (g.kk(), g.pp(), g.in_img(), g.out_img());
    if g.n == 0 || out_img == 0 {
        return vec![0f32; g.n * out_img];
    }
    let (per_task, par) = schedule(g.n);
    let col_len = if g.pointwise() { 0 } else { kk * pp };
    par_init(g.n * out_img, per_task * out_img, |t, ys| {
        let mut col = vec![0f32; col_len];
        for (j, yn) in ys.chunks_mut(out_img).enumerate() {
            let i = t * per_task + j;
            let xn = &x[i * in_img..][..in_img];
            let colref: &[f32] = if g.pointwise() {
                xn
            } else {
                im2col(g, xn, &mut col);
                &col
            };
            if let Some(b) = bias {
                for (row, &bv) in yn.chunks_mut(pp).zip(b) {
                    row.fill(bv);
                }
            }
            sgemm(
                g.co,
                pp,
                kk,
                yn,
                pp,
                bias.is_some(),
                Mat::rows(w, kk),
                Mat::rows(colref, pp),
                par,
            );
        }
    })
}

/// Gradients of a convolution; each is computed only when asked for.
pub(crate) struct ConvGrads {
    pub dx: Option<Vec<f32>>,
    pub dw: Option<Vec<f32>>,
    pub db: Option<Vec<f32>>,
}

/// Backward convolution: `dw = sum_i gy[i] im2col(x[i])^T`,
/// `db = sum gy`, `dx[i] = col2im(w^T gy[i])`, in one pass over the batch.
pub(crate) fn conv_bwd(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> ConvGrads {
    let (kk, pp, in_img, out_img) = (g.kk(), g.pp(), g.in_img(), g.out_img());
    let (per_task, par) = schedule(g.n);
    let tasks = g.n.div_ceil(per_task);
    let col_len = if need_dw && !g.pointwise() {
        kk * pp
    } else {
        0
    };
    let dcol_len = if need_dx && !g.pointwise() {
        kk * pp
    } else {
        0
    };

    // One task: images [t * per_task, ..) -> partial (dw, db); writes dx.
    let run = |t: usize, dxs: Option<&mut [f32]>| -> (Vec<f32>, Vec<f32>) {
        let mut col = vec![0f32; col_len];
        let mut dcol = vec![0f32; dcol_len];
        let mut dw = vec![0f32; if need_dw { g.co * kk } else { 0 }];
        let mut db = vec![0f64; if need_db { g.co } else { 0 }];
        let lo = t * per_task;
        let hi = (lo + per_task).min(g.n);
        let mut dxs = dxs;
        for i in lo..hi {
            let gyn = &gy[i * out_img..][..out_img];
            let xn = &x[i * in_img..][..in_img];
            if need_dw {
                let colref: &[f32] = if g.pointwise() {
                    xn
                } else {
                    im2col(g, xn, &mut col);
                    &col
                };
                sgemm(
                    g.co,
                    kk,
                    pp,
                    &mut dw,
                    kk,
                    i > lo,
                    Mat::rows(gyn, pp),
                    Mat::trans(colref, pp),
                    par,
                );
            }
            if need_db {
                for (acc, row) in db.iter_mut().zip(gyn.chunks(pp)) {
                    *acc += sum(row);
                }
            }
            if let Some(dxs) = dxs.as_deref_mut() {
                let dxn = &mut dxs[(i - lo) * in_img..][..in_img];
                let wt = Mat::trans(w, kk);
                if g.pointwise() {
                    sgemm(kk, pp, g.co, dxn, pp, false, wt, Mat::rows(gyn, pp), par);
                } else {
                    sgemm(
                        kk,
                        pp,
                        g.co,
                        &mut dcol,
                        pp,
                        false,
                        wt,
                        Mat::rows(gyn, pp),
                        par,
                    );
                    col2im(g, &mut dcol, dxn);
                }
            }
        }
        (dw, db.into_iter().map(|v| v as f32).collect())
    };

    let slots: Vec<Mutex<(Vec<f32>, Vec<f32>)>> = (0..tasks).map(|_| Mutex::default()).collect();
    let store = |t: usize, r: (Vec<f32>, Vec<f32>)| {
        if let Ok(mut slot) = slots[t].lock() {
            *slot = r;
        }
    };
    let dx = if need_dx && in_img > 0 {
        Some(par_init(g.n * in_img, per_task * in_img, |t, dxs| {
            store(t, run(t, Some(dxs)))
        }))
    } else {
        (0..tasks)
            .into_par_iter()
            .for_each(|t| store(t, run(t, None)));
        need_dx.then(Vec::new)
    };
    let partials: Vec<(Vec<f32>, Vec<f32>)> = slots
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    let reduce = |pick: fn(&(Vec<f32>, Vec<f32>)) -> &Vec<f32>, len: usize| {
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

/// Backward of [`Conv2d`] / [`Conv2dBias`] as tensors. Only the gradients of
/// operands that take part in autograd (`track_op`) are computed: the input
/// gradient of a first layer fed raw images is skipped.
fn conv_bwd_tensors(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    gy: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let gy = gy.contiguous()?;
    let need_dx = x.track_op();
    let need_dw = w.track_op();
    let need_db = bias.is_some_and(|b| b.track_op());
    let g = Geom::new(x.dims(), w.dims(), stride, padding)?;
    let grads = with_f32(x, "conv2d input", |xs| {
        with_f32(w, "conv2d weight", |ws| {
            with_f32(&gy, "conv2d output gradient", |gys| {
                Ok(conv_bwd(&g, xs, ws, gys, need_dx, need_dw, need_db))
            })
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

/// Convolution without bias, as a candle custom op over `(x, w)`.
pub(crate) struct Conv2d {
    pub stride: usize,
    pub padding: usize,
}

impl CustomOp2 for Conv2d {
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
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        let x = slice_f32(s1, l1, "conv2d input")?;
        let w = slice_f32(s2, l2, "conv2d weight")?;
        let y = conv_fwd(&g, x, w, None);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.co, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = conv_bwd_tensors(x, w, None, gy, self.stride, self.padding)?;
        Ok((dx, dw))
    }
}

/// Convolution with bias, as a candle custom op over `(x, w, b)`.
pub(crate) struct Conv2dBias {
    pub stride: usize,
    pub padding: usize,
}

impl CustomOp3 for Conv2dBias {
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
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        let x = slice_f32(s1, l1, "conv2d input")?;
        let w = slice_f32(s2, l2, "conv2d weight")?;
        let b = slice_f32(s3, l3, "conv2d bias")?;
        if b.len() != g.co {
            bail!("conv2d: bias has {} elements, expected {}", b.len(), g.co)
        }
        let y = conv_fwd(&g, x, w, Some(b));
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.co, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        conv_bwd_tensors(x, w, Some(b), gy, self.stride, self.padding)
    }
}
