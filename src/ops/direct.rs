//! Direct convolution on CPUs with AVX-512F: the output is computed
//! straight from the image, 16 output pixels per register, with no im2col
//! matrix in between. Stride 1 needs "same" padding (the output the size
//! of the input), so that output pixel `q` reads input pixel `q + offset`
//! at every tap; stride `s > 1` first splits each image into its `s * s`
//! phases (`x[c, s i + a, s j + b]` for phase `(a, b)`), each laid out
//! with the output's width, where the same holds.
//!
//! # Same numbers as im2col + GEMM
//!
//! Each output is `init + acc` (or `acc`), where `acc` starts at zero and
//! takes one fused multiply-add per `(c, ki, kj)` in that order: the
//! order of im2col's rows, and the one chain the GEMM of [`super::conv`]
//! runs when its depth `c * k * k` is at most 512 and its general kernel
//! runs (`gemm` takes other routes, with other sums, for a depth of 1 or 2
//! and for a one-pixel output). Deeper, `gemm` sums blocks of 512 taps
//! into its output one after the other when both the output channels and
//! the pixels are at most 64 (the 64-channel 7x7 and 8x8 layers of the
//! ResNets), and the kernel does the same; otherwise its block depth
//! depends on the machine's caches and the GEMM path is kept. Taps that
//! fall on the zero padding are skipped, which changes nothing: `acc` starts at `+0.0` and a sum of
//! `+0.0` and a zero is `+0.0`, so adding the product with a padded zero
//! never changes `acc`. The results are therefore bit for bit those of
//! the GEMM path, which the tests check; [`eligible`] says when this path
//! applies.

use super::conv::Geom;

/// The depth of `gemm`'s blocks of taps for the shapes this path takes
/// (see the module docs).
const MAX_DEPTH: usize = 512;

/// Output channels per register block.
const CO_BLOCK: usize = 8;
/// 16-pixel vectors per register block (`CO_BLOCK * V` accumulators).
const V: usize = 3;
const LANES: usize = 16;

/// Input row and column offsets `(di, dj)` of tap `(ki, kj)` in the phase
/// plane it reads (for stride 1 the image itself): input pixel
/// `(s oh + ki - p, s ow + kj - p)` is phase `((ki - p) mod s, (kj - p) mod
/// s)`, position `(oh + di, ow + dj)`.
fn tap_shift(g: &Geom, ki: usize, kj: usize) -> (usize, isize, isize) {
    let (s, p) = (g.s as isize, g.p as isize);
    let (r, c) = (ki as isize - p, kj as isize - p);
    let phase = (r.rem_euclid(s) * s + c.rem_euclid(s)) as usize;
    (phase, r.div_euclid(s), c.div_euclid(s))
}

/// Whether every input pixel a valid tap reads has its place in a phase
/// plane of `ho x wo` (always true for the 3x3 and 1x1 convolutions of the
/// ResNets). Stride 1 reads the image itself and needs "same" padding.
fn phases_fit(g: &Geom) -> bool {
    if g.s == 1 {
        return g.is_same();
    }
    (0..g.k).all(|ki| {
        (0..g.k).all(|kj| {
            let (_, di, dj) = tap_shift(g, ki, kj);
            let rows = (0..g.ho).filter(|&oh| g.ih(oh, ki).is_some());
            let cols = (0..g.wo).filter(|&ow| g.iw(ow, kj).is_some());
            rows.map(|oh| oh as isize + di)
                .all(|i| (0..g.ho as isize).contains(&i))
                && cols
                    .map(|ow| ow as isize + dj)
                    .all(|j| (0..g.wo as isize).contains(&j))
        })
    })
}

/// Whether `g` runs through the direct kernel on this CPU.
pub(crate) fn eligible(g: &Geom) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        g.kk() >= 3
            && (g.kk() <= MAX_DEPTH || (g.co <= 64 && g.pp() <= 64))
            && g.co.is_multiple_of(CO_BLOCK)
            && g.pp() >= 2
            && g.s <= 4
            && phases_fit(g)
            && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// Input channels per register block of the input-gradient kernel.
const C_BLOCK: usize = 4;

/// Whether the input gradient of `g` runs through the direct kernel
/// ([`dx_image`]): a stride-1 "same" convolution wider than 1x1, input
/// channels a multiple of 4 and at most 512 output channels (the depth of
/// the GEMM it replaces, `W^T gz`, then col2im).
pub(crate) fn eligible_dx(g: &Geom) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        g.is_same()
            && g.k > 1
            && g.c.is_multiple_of(C_BLOCK)
            && (3..=MAX_DEPTH).contains(&g.co)
            && g.pp() >= 2
            && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// One image's input gradient of a stride-1 "same" convolution:
/// `dx[c, i] = sum over taps t (in order) of (sum over o of w[o, c, t] *
/// gz[o, i - offset(t)])`, `dx` of `[c, h, w]`, `gz` of `[co, h * w]`: the
/// numbers of `W^T gz` (one FMA chain over the output channels per entry)
/// followed by col2im (the taps' entries added to a zeroed `dx` in order),
/// bit for bit. The caller has checked [`eligible_dx`]; `taps` are the
/// forward's ([`Taps::new`]), whose flipped taps say where the gradient
/// comes from.
pub(crate) fn dx_image(g: &Geom, taps: &Taps, gz: &[f32], w: &[f32], dx: &mut [f32]) {
    assert!(gz.len() >= g.out_img() && w.len() >= g.co * g.kk() && dx.len() >= g.in_img());
    #[cfg(target_arch = "x86_64")]
    {
        assert!(
            eligible_dx(g),
            "direct conv: geometry {g:?} not eligible for dx"
        );
        // SAFETY: `eligible_dx` checked AVX-512F; the assert above bounds
        // every access (see `avx512::dx_image`).
        unsafe { avx512::dx_image(g, taps, gz, w, dx) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("direct conv: no x86_64 kernel to run")
}

/// What the kernel needs of one geometry: for each tap `(ki, kj)` its
/// offset into the source (the image, or the phase buffer for stride > 1)
/// and, for each 16-pixel vector of the output plane, the lanes whose
/// input pixel is inside the image.
pub(crate) struct Taps {
    /// `[vectors][k * k]`.
    masks: Vec<u16>,
    /// Offset of each tap into channel 0 of the source.
    offsets: Vec<isize>,
    /// Distance between channels in the source.
    channel: usize,
    /// Which of the `s * s` phases some tap reads.
    used: Vec<bool>,
    /// Floats of the phase buffer one image needs (0 for stride 1).
    phase_len: usize,
}

impl Taps {
    pub(crate) fn new(g: &Geom) -> Self {
        let (k, pp) = (g.k, g.pp());
        let vectors = pp.div_ceil(LANES);
        // Stride 1 reads the image's planes, else `s * s` phases of `c`
        // planes of `ho x wo`.
        let (channel, phase) = if g.s == 1 {
            (g.h * g.w, 0)
        } else {
            (pp, g.c * pp)
        };
        let mut offsets = Vec::with_capacity(k * k);
        let mut used = vec![false; g.s * g.s];
        for ki in 0..k {
            for kj in 0..k {
                let (p, di, dj) = tap_shift(g, ki, kj);
                used[p] = true;
                offsets.push((p * phase) as isize + di * g.wo as isize + dj);
            }
        }
        let mut masks = vec![0u16; vectors * k * k];
        for v in 0..vectors {
            for (t, m) in masks[v * k * k..][..k * k].iter_mut().enumerate() {
                let (ki, kj) = (t / k, t % k);
                for lane in 0..LANES {
                    let q = v * LANES + lane;
                    if q >= pp {
                        break;
                    }
                    let (oh, ow) = (q / g.wo, q % g.wo);
                    if g.ih(oh, ki).is_some() && g.iw(ow, kj).is_some() {
                        *m |= 1 << lane;
                    }
                }
            }
        }
        Taps {
            masks,
            offsets,
            channel,
            phase_len: used.len() * phase,
            used,
        }
    }

    /// Floats of the phase buffer one image needs (0 for stride 1).
    pub(crate) fn phase_len(&self) -> usize {
        self.phase_len
    }
}

/// Splits one image `[c, h, w]` into the `s * s` phases the taps read,
/// each `[c, ho, wo]`: `ph[(a s + b), c, i, j] = x[c, s i + a, s j + b]`.
/// Places outside the image, and phases no tap reads, are left as they
/// are (the kernel's masks never read them).
pub(crate) fn split_phases(g: &Geom, taps: &Taps, x: &[f32], ph: &mut [f32]) {
    let (s, pp) = (g.s, g.pp());
    for a in 0..s {
        if s == 2 && taps.used[2 * a] && taps.used[2 * a + 1] && g.w >= 2 {
            split_row_pairs(g, a, x, ph);
            continue;
        }
        for b in 0..s {
            if !taps.used[a * s + b] {
                continue;
            }
            let base = (a * s + b) * g.c * pp;
            for c in 0..g.c {
                let plane = &x[c * g.h * g.w..][..g.h * g.w];
                for i in 0..g.ho {
                    let ih = s * i + a;
                    if ih >= g.h || b >= g.w {
                        continue;
                    }
                    let cols = ((g.w - 1 - b) / s + 1).min(g.wo);
                    let dst = &mut ph[base + c * pp + i * g.wo..][..cols];
                    super::cpu::copy_strided(dst, &plane[ih * g.w + b..], s);
                }
            }
        }
    }
}

/// Stride 2, row phase `a`: both column phases in one pass over each row
/// (even columns to phase `(a, 0)`, odd ones to `(a, 1)`).
fn split_row_pairs(g: &Geom, a: usize, x: &[f32], ph: &mut [f32]) {
    let pp = g.pp();
    let (even, odd) = ph[2 * a * g.c * pp..][..2 * g.c * pp].split_at_mut(g.c * pp);
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        for i in 0..g.ho {
            let ih = 2 * i + a;
            if ih >= g.h {
                continue;
            }
            let src = &plane[ih * g.w..][..g.w];
            let at = c * pp + i * g.wo;
            let (e, o) = (&mut even[at..][..g.wo], &mut odd[at..][..g.wo]);
            for ((ev, ov), pair) in e.iter_mut().zip(o.iter_mut()).zip(src.chunks_exact(2)) {
                *ev = pair[0];
                *ov = pair[1];
            }
            if g.w % 2 == 1 {
                e[g.w / 2] = src[g.w - 1];
            }
        }
    }
}

/// One image: `y[o, q] = init[o] + sum_(c, ki, kj) w[o, c, ki, kj] *
/// src[c, q + offset(ki, kj)]` (without `init`: the sum alone), `y` of
/// `[co, ho * wo]`, `w` of `[co, c, k, k]`, `src` the image `[c, h, w]`
/// for stride 1, else its phases ([`split_phases`]). The caller has
/// checked [`eligible`].
pub(crate) fn conv_image(
    g: &Geom,
    taps: &Taps,
    x: &[f32],
    w: &[f32],
    init: Option<&[f32]>,
    y: &mut [f32],
) {
    let src_len = if g.s == 1 {
        g.in_img()
    } else {
        taps.phase_len()
    };
    assert!(x.len() >= src_len && w.len() >= g.co * g.kk() && y.len() >= g.out_img());
    assert!(init.is_none_or(|b| b.len() >= g.co));
    #[cfg(target_arch = "x86_64")]
    {
        assert!(eligible(g), "direct conv: geometry {g:?} not eligible");
        // SAFETY: `eligible` checked AVX-512F; the asserts above bound
        // every access (see `avx512::conv_image`).
        unsafe { avx512::conv_image(g, taps, x, w, init, y) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("direct conv: no x86_64 kernel to run")
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Geom, Taps, CO_BLOCK, C_BLOCK, LANES, MAX_DEPTH, V};
    use std::arch::x86_64::*;

    /// The AVX-512 body of [`super::conv_image`] for one image.
    ///
    /// # Safety
    /// The CPU supports AVX-512F, `g` is [`super::eligible`] and `taps` was
    /// built for it, and the buffers hold what `g` says: `x` the source
    /// (the image, or its phases for stride 2), `w` `co * c * k * k`
    /// weights, `init` (when given) `co` values and `y` `co * ho * wo`
    /// outputs ([`super::conv_image`] asserts all of it).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn conv_image(
        g: &Geom,
        taps: &Taps,
        x: &[f32],
        w: &[f32],
        init: Option<&[f32]>,
        y: &mut [f32],
    ) {
        // Vectors that hold at least one output pixel; the last block of
        // a row of blocks may be narrower than `V`.
        let used = g.pp().div_ceil(LANES);
        for o0 in (0..g.co).step_by(CO_BLOCK) {
            for v0 in (0..used).step_by(V) {
                // SAFETY: forwarded from the caller.
                unsafe {
                    match used - v0 {
                        1 => block::<1>(g, taps, x, w, init, y, o0, v0),
                        2 => block::<2>(g, taps, x, w, init, y, o0, v0),
                        _ => block::<V>(g, taps, x, w, init, y, o0, v0),
                    }
                }
            }
        }
    }

    /// One tap of a block: `acc[b][j] += w[b * w_stride] * src[j]`, where
    /// `src[j]` is vector `v0 + j` of the plane shifted by `off`, its lanes
    /// masked by `masks[(v0 + j) * k2 + tap]` (zero outside).
    ///
    /// # Safety
    /// Every lane a mask sets must lie inside the plane's buffer, and
    /// `w[b * w_stride]` inside the weights for every `b < B`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tap<const B: usize, const NV: usize>(
        acc: &mut [[__m512; NV]; B],
        plane: *const f32,
        off: isize,
        masks: &[u16],
        v0: usize,
        k2: usize,
        tap: usize,
        w: *const f32,
        w_stride: usize,
    ) {
        let mut src = [_mm512_setzero_ps(); NV];
        for (j, sj) in src.iter_mut().enumerate() {
            let m = masks[(v0 + j) * k2 + tap];
            let at = plane.wrapping_offset(((v0 + j) * LANES) as isize + off);
            // SAFETY: the caller's promise on the masks.
            *sj = unsafe { _mm512_maskz_loadu_ps(m, at) };
        }
        for (b, row) in acc.iter_mut().enumerate() {
            // SAFETY: the caller's promise on the weights.
            let wv = _mm512_set1_ps(unsafe { *w.add(b * w_stride) });
            for (a, &sj) in row.iter_mut().zip(&src) {
                *a = _mm512_fmadd_ps(wv, sj, *a);
            }
        }
    }

    /// The AVX-512 body of [`super::dx_image`] for one image.
    ///
    /// # Safety
    /// The CPU supports AVX-512F, `g` passed [`super::eligible_dx`] and
    /// `taps` was built for it, `gz` holds `co * ho * wo` output gradients,
    /// `w` `co * c * k * k` weights and `dx` `c * h * w` input gradients
    /// ([`super::dx_image`] asserts all of it).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dx_image(g: &Geom, taps: &Taps, gz: &[f32], w: &[f32], dx: &mut [f32]) {
        let used = g.pp().div_ceil(LANES);
        for c0 in (0..g.c).step_by(C_BLOCK) {
            for v0 in (0..used).step_by(V) {
                // SAFETY: forwarded from the caller.
                unsafe {
                    match used - v0 {
                        1 => dx_block::<1>(g, taps, gz, w, dx, c0, v0),
                        2 => dx_block::<2>(g, taps, gz, w, dx, c0, v0),
                        _ => dx_block::<V>(g, taps, gz, w, dx, c0, v0),
                    }
                }
            }
        }
    }

    /// Input channels `c0..c0 + C_BLOCK`, vectors `v0..v0 + NV` of the
    /// input plane (the output plane's size: stride 1, "same").
    ///
    /// # Safety
    /// As [`dx_image`], with `c0 < c` and `v0 + NV` at most the number of
    /// vectors that cover the plane.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn dx_block<const NV: usize>(
        g: &Geom,
        taps: &Taps,
        gz: &[f32],
        w: &[f32],
        dx: &mut [f32],
        c0: usize,
        v0: usize,
    ) {
        let (pp, kk, k2) = (g.pp(), g.kk(), g.k * g.k);
        let zero = _mm512_setzero_ps();
        let mut sum = [[zero; NV]; C_BLOCK];
        for t in 0..k2 {
            // Input pixel `i` gets tap `t` from output pixel `i - off(t)`,
            // which is inside exactly where the forward's flipped tap `ft`
            // (offset `-off(t)`) reads inside the image from pixel `i`.
            let ft = k2 - 1 - t;
            let mut tmp = [[zero; NV]; C_BLOCK];
            for o in 0..g.co {
                let plane = gz.as_ptr().wrapping_add(o * pp);
                let wt = w.as_ptr().wrapping_add(o * kk + c0 * k2 + t);
                // SAFETY: a lane is set only where the flipped tap reads
                // inside the plane (same geometry both ways); `o < co`,
                // `c0 + b < c` (c is a multiple of the block) and `t < k2`.
                unsafe {
                    tap(
                        &mut tmp,
                        plane,
                        taps.offsets[ft],
                        &taps.masks,
                        v0,
                        k2,
                        ft,
                        wt,
                        k2,
                    )
                };
            }
            for (srow, trow) in sum.iter_mut().zip(&tmp) {
                for (sv, &tv) in srow.iter_mut().zip(trow) {
                    *sv = _mm512_add_ps(*sv, tv);
                }
            }
        }
        for (b, row) in sum.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let q0 = (v0 + j) * LANES;
                let n = (pp - q0).min(LANES);
                let m: __mmask16 = if n == LANES { 0xffff } else { (1 << n) - 1 };
                // SAFETY: `q0 < pp` and the mask keeps the store inside
                // plane `c0 + b` of `dx` (`[c, pp]`, checked by the caller).
                unsafe { _mm512_mask_storeu_ps(dx.as_mut_ptr().add((c0 + b) * pp + q0), m, v) };
            }
        }
    }

    /// Output channels `o0..o0 + CO_BLOCK`, vectors `v0..v0 + NV`.
    ///
    /// # Safety
    /// As [`conv_image`], with `o0 < co` and `v0 + NV` at most the number
    /// of vectors that cover the output plane.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const NV: usize>(
        g: &Geom,
        taps: &Taps,
        x: &[f32],
        w: &[f32],
        init: Option<&[f32]>,
        y: &mut [f32],
        o0: usize,
        v0: usize,
    ) {
        let (cs, pp, kk, k2) = (taps.channel, g.pp(), g.kk(), g.k * g.k);
        let xp = x.as_ptr();
        let zero = _mm512_setzero_ps();
        let mut acc = [[zero; NV]; CO_BLOCK];
        // The sums so far: `init`, then `init + acc` after each block of
        // `MAX_DEPTH` taps (as `gemm` adds each depth block to its
        // output); `None` while nothing is there yet.
        let mut out: Option<[[__m512; NV]; CO_BLOCK]> =
            init.map(|i| std::array::from_fn(|b| [_mm512_set1_ps(i[o0 + b]); NV]));
        let fold = |out: &mut Option<[[__m512; NV]; CO_BLOCK]>,
                    acc: &mut [[__m512; NV]; CO_BLOCK]| {
            match out {
                Some(o) => {
                    for (orow, arow) in o.iter_mut().zip(acc.iter()) {
                        for (ov, &av) in orow.iter_mut().zip(arow) {
                            *ov = _mm512_add_ps(*ov, av);
                        }
                    }
                }
                None => *out = Some(*acc),
            }
            *acc = [[zero; NV]; CO_BLOCK];
        };
        let mut depth = 0;
        for c in 0..g.c {
            let plane = xp.wrapping_add(c * cs);
            for t in 0..k2 {
                if depth == MAX_DEPTH {
                    fold(&mut out, &mut acc);
                    depth = 0;
                }
                depth += 1;
                let wt = w.as_ptr().wrapping_add(o0 * kk + c * k2 + t);
                // SAFETY: lane `l` is set only when output pixel
                // `q = (v0 + j) * 16 + l` exists and its input pixel is
                // inside the image, whose place `q + off` in the source is
                // inside `x` (`phases_fit`); `o0 + b < co` (co is a multiple
                // of the block) and `c * k2 + t < kk`.
                unsafe {
                    tap(
                        &mut acc,
                        plane,
                        taps.offsets[t],
                        &taps.masks,
                        v0,
                        k2,
                        t,
                        wt,
                        kk,
                    )
                };
            }
        }
        fold(&mut out, &mut acc);
        let Some(out) = out else { return };
        for (b, row) in out.iter().enumerate() {
            let o = o0 + b;
            for (j, &v) in row.iter().enumerate() {
                let q0 = (v0 + j) * LANES;
                let n = (pp - q0).min(LANES);
                let m: __mmask16 = if n == LANES { 0xffff } else { (1 << n) - 1 };
                // SAFETY: `q0 < pp` (vector `v0 + j` holds a pixel) and the
                // mask keeps the store inside row `o` of `y`.
                unsafe { _mm512_mask_storeu_ps(y.as_mut_ptr().add(o * pp + q0), m, v) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::{col2im, im2col};
    use super::super::cpu::{sgemm, Mat};
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn geom(c: usize, h: usize, w: usize, co: usize, k: usize, s: usize, p: usize) -> Geom {
        Geom::new(&[1, c, h, w], &[co, c, k, k], s, p).unwrap()
    }

    /// im2col + GEMM, as `conv_fwd` computes an image without the direct
    /// path.
    fn by_gemm(g: &Geom, x: &[f32], w: &[f32], init: Option<&[f32]>) -> Vec<f32> {
        let (kk, pp) = (g.kk(), g.pp());
        let mut col = vec![0f32; kk * pp];
        im2col(g, x, &mut col);
        let mut y = vec![0f32; g.co * pp];
        if let Some(b) = init {
            for (row, &bv) in y.chunks_mut(pp).zip(b) {
                row.fill(bv);
            }
        }
        let par = gemm::Parallelism::None;
        sgemm(
            g.co,
            pp,
            kk,
            &mut y,
            pp,
            init.is_some(),
            Mat::rows(w, kk),
            Mat::rows(&col, pp),
            par,
        );
        y
    }

    #[test]
    fn direct_conv_is_bit_identical_to_im2col_and_gemm() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut checked = 0;
        // (c, h, w, co, k, s, p): "same" stride 1 at kernels 1, 3, 5 and
        // odd sizes, stride 2 at 3x3 and 1x1 (odd and even sizes, planes
        // smaller than a vector, depths up to the limit), stride 3.
        let cases = [
            (1, 28, 28, 16, 3, 1, 1),
            (16, 14, 14, 32, 3, 1, 1),
            (3, 5, 7, 8, 3, 1, 1),
            (2, 9, 4, 8, 5, 1, 2),
            (4, 3, 3, 16, 1, 1, 0),
            (56, 7, 7, 8, 3, 1, 1),
            (16, 28, 28, 32, 3, 2, 1),
            (32, 14, 14, 64, 3, 2, 1),
            (5, 7, 9, 8, 3, 2, 1),
            (3, 3, 4, 8, 3, 2, 1),
            (16, 28, 28, 32, 1, 2, 0),
            (6, 11, 5, 8, 1, 2, 0),
            (4, 10, 10, 8, 3, 3, 1),
            // Deeper than one block: 576 and 1152 taps at 64 channels and
            // at most 64 pixels, and a 1x1 conv 520 deep.
            (64, 7, 7, 64, 3, 1, 1),
            (64, 8, 8, 64, 3, 1, 1),
            (128, 7, 7, 64, 3, 1, 1),
            (64, 14, 14, 64, 3, 2, 1),
            (520, 4, 4, 8, 1, 1, 0),
        ];
        // And 200 random small geometries, those the direct path takes.
        let random: Vec<_> = (0..200)
            .map(|_| {
                let k = [1, 3, 5][rng.random_range(0..3)];
                let s = rng.random_range(1..=3);
                let (h, w) = (rng.random_range(2..13), rng.random_range(2..13));
                let c = rng.random_range(1..9);
                (c, h, w, 8 * rng.random_range(1..3), k, s, k / 2)
            })
            .collect();
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        for (n, (c, h, w, co, k, s, p)) in cases.into_iter().chain(random).enumerate() {
            let g = geom(c, h, w, co, k, s, p);
            assert!(n >= cases.len() || eligible(&g) || !avx512, "{g:?}");
            if !eligible(&g) {
                continue;
            }
            let x: Vec<f32> = (0..g.in_img())
                .map(|_| rng.random::<f32>() * 2.0 - 1.0)
                .collect();
            let wt: Vec<f32> = (0..co * g.kk())
                .map(|_| rng.random::<f32>() - 0.5)
                .collect();
            let bias: Vec<f32> = (0..co).map(|_| rng.random::<f32>() - 0.5).collect();
            let taps = Taps::new(&g);
            // Stale contents in the phase buffer must not matter.
            let mut ph = vec![f32::NAN; taps.phase_len()];
            let src: &[f32] = if s == 1 {
                &x
            } else {
                split_phases(&g, &taps, &x, &mut ph);
                &ph
            };
            for init in [None, Some(&bias[..])] {
                let mut y = vec![f32::NAN; g.out_img()];
                conv_image(&g, &taps, src, &wt, init, &mut y);
                let want = by_gemm(&g, &x, &wt, init);
                let same = y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{g:?}, bias {}: direct differs from im2col + GEMM",
                    init.is_some()
                );
                checked += 1;
            }
        }
        if avx512 {
            assert!(checked >= 2 * cases.len() + 100, "{checked} checked");
        }
    }

    #[test]
    fn direct_input_gradient_is_bit_identical_to_gemm_and_col2im() {
        let mut rng = StdRng::seed_from_u64(12);
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let fixed = [
            (16, 28, 28, 16, 3),
            (32, 14, 14, 32, 3),
            (64, 7, 7, 64, 3),
            (4, 5, 9, 3, 5),
        ];
        let random: Vec<_> = (0..100)
            .map(|_| {
                let k = [3, 5][rng.random_range(0..2)];
                let (h, w) = (rng.random_range(2..12), rng.random_range(2..12));
                (4 * rng.random_range(1..4), h, w, rng.random_range(3..20), k)
            })
            .collect();
        let mut checked = 0;
        for (c, h, w, co, k) in fixed.into_iter().chain(random) {
            let g = geom(c, h, w, co, k, 1, k / 2);
            if !eligible_dx(&g) {
                assert!(!avx512, "{g:?}");
                continue;
            }
            let (kk, pp) = (g.kk(), g.pp());
            let gz: Vec<f32> = (0..co * pp).map(|_| rng.random::<f32>() - 0.5).collect();
            let wt: Vec<f32> = (0..co * kk).map(|_| rng.random::<f32>() - 0.5).collect();
            let mut dcol = vec![0f32; kk * pp];
            let par = gemm::Parallelism::None;
            sgemm(
                kk,
                pp,
                co,
                &mut dcol,
                pp,
                false,
                Mat::trans(&wt, kk),
                Mat::rows(&gz, pp),
                par,
            );
            let mut want = vec![0f32; g.in_img()];
            col2im(&g, &mut dcol, &mut want);
            let mut got = vec![f32::NAN; g.in_img()];
            dx_image(&g, &Taps::new(&g), &gz, &wt, &mut got);
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{g:?}: direct input gradient differs from GEMM + col2im"
            );
            checked += 1;
        }
        if avx512 {
            assert_eq!(checked, 104);
        }
    }

    #[test]
    fn direct_conv_refuses_what_it_cannot_match() {
        // Depth beyond one GEMM block at more than 64 pixels or output
        // channels, depth below 3, a one-pixel output, output channels off
        // the register block, stride 1 without "same" padding.
        assert!(!eligible(&geom(64, 14, 14, 64, 3, 1, 1)));
        assert!(!eligible(&geom(64, 7, 7, 128, 3, 1, 1)));
        assert!(!eligible(&geom(2, 7, 7, 8, 1, 1, 0)));
        assert!(!eligible(&geom(3, 1, 1, 8, 3, 2, 1)));
        assert!(!eligible(&geom(16, 8, 8, 12, 3, 1, 1)));
        assert!(!eligible(&geom(16, 8, 8, 16, 3, 1, 0)));
    }
}
