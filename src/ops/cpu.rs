//! Shared plumbing for the CPU kernels: access to contiguous f32 storage,
//! the thread count, a safe wrapper around the `gemm` crate, and vectorised
//! reductions.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Layout, Result, Storage, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// True when every tensor lives on the CPU and holds f32: the case the fast
/// kernels cover. Anything else goes to candle's own ops.
pub(crate) fn fast_path(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The contiguous f32 slice a CPU storage and layout describe.
pub(crate) fn slice_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v,
        _ => bail!("{what}: expected f32 storage, got {:?}", s.dtype()),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{what}: expected a contiguous layout"),
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor.
pub(crate) fn with_f32<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[f32]) -> Result<R>,
) -> Result<R> {
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(cs) => f(slice_f32(cs, l, what)?),
        _ => bail!("{what}: expected a CPU tensor"),
    }
}

/// Copies a small CPU f32 tensor (any layout) into a `Vec`.
pub(crate) fn to_vec_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Threads the kernels may use: the size of rayon's global pool, which also
/// runs candle's matmul (`RAYON_NUM_THREADS` sets it).
pub(crate) fn num_threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// A new vector of `n` f32 filled chunk by chunk in parallel: chunk `i`
/// (`chunk` elements, the last one shorter) is zeroed by the thread that
/// then runs `f(i, chunk)` on it. Unlike `vec![0.0; n]` followed by a
/// parallel pass, the zeroing is spread over the threads and happens while
/// the chunk is in cache.
pub(crate) fn par_init(n: usize, chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    if n > 0 {
        v.spare_capacity_mut()[..n]
            .par_chunks_mut(chunk.max(1))
            .enumerate()
            .for_each(|(i, c)| {
                for e in c.iter_mut() {
                    e.write(0.0);
                }
                // SAFETY: every element of `c` was initialised just above, and
                // `MaybeUninit<f32>` has the layout of `f32`.
                let c = unsafe { &mut *(c as *mut [MaybeUninit<f32>] as *mut [f32]) };
                f(i, c);
            });
    }
    // SAFETY: the chunks cover `0..n` and were all initialised.
    unsafe { v.set_len(n) };
    v
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of `len` f32 with arbitrary (stale but initialised) contents,
/// taken from this thread's pool: the per-image scratch of the kernels is
/// reused across calls instead of allocated (and page-faulted) each time.
/// Give it back with [`give_scratch`].
pub(crate) fn take_scratch(len: usize) -> Vec<f32> {
    let mut v = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    v.resize(len, 0.0);
    v
}

/// Returns a buffer from [`take_scratch`] to this thread's pool (which keeps
/// a handful).
pub(crate) fn give_scratch(v: Vec<f32>) {
    if v.capacity() > 0 {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < 8 {
                s.push(v);
            }
        });
    }
}

/// A row-major matrix view for [`sgemm`]: element `(i, j)` is at
/// `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix with leading dimension `ld`.
    pub fn rows(data: &'a [f32], ld: usize) -> Self {
        Mat {
            data,
            rs: ld,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with leading dimension `ld`.
    pub fn trans(data: &'a [f32], ld: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: ld,
        }
    }
    fn fits(&self, r: usize, c: usize) -> bool {
        r == 0 || c == 0 || (r - 1) * self.rs + (c - 1) * self.cs < self.data.len()
    }
}

/// `dst[m, n] = (accumulate ? dst : 0) + a[m, k] * b[k, n]`, `dst` row-major
/// with leading dimension `ld`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    ld: usize,
    accumulate: bool,
    a: Mat<'_>,
    b: Mat<'_>,
    par: Parallelism,
) {
    assert!(
        m == 0 || n == 0 || (m - 1) * ld + n <= dst.len(),
        "sgemm: dst too small"
    );
    assert!(a.fits(m, k) && b.fits(k, n), "sgemm: operand too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * ld..i * ld + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the asserts above keep every index the kernel touches inside
    // the three slices; `dst` is exclusively borrowed and does not alias the
    // operands.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ld as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Defines a function whose body is compiled for AVX-512F, for AVX2 + FMA
/// and for the baseline target, and runs the widest version the CPU
/// supports (checked at run time; the check is one cached load). The default
/// build targets baseline x86-64, whose SSE2 leaves the elementwise loops at
/// 4 lanes. Every version performs the same float operations in the same
/// order (Rust neither reassociates nor contracts them into FMAs), so the
/// results are bit-identical whichever runs.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn imp($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn v4($($arg: $ty),*) $(-> $ret)? {
                    imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) $(-> $ret)? {
                    imp($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the feature `v4` is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `v3` is compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}

const LANES: usize = 16;

/// The lane accumulators of a 16-lane reduction: lane `l` sums elements
/// `l, l + 16, l + 32, ...` of the whole 16-element blocks, in order.
type Lanes = [f32; LANES];

/// Lanes of `(sum(x - shift), sum((x - shift)^2))` over the whole blocks.
fn sq_shifted_blocks(x: &[f32], shift: f32) -> (Lanes, Lanes) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512::sq_shifted_blocks(x, shift) };
    }
    portable::sq_shifted_blocks(x, shift)
}

/// The reductions' blocks as plain loops, for CPUs without AVX-512F.
mod portable {
    use super::{Lanes, LANES};

    pub(super) fn sq_shifted_blocks(x: &[f32], shift: f32) -> (Lanes, Lanes) {
        let (mut s, mut q) = ([0f32; LANES], [0f32; LANES]);
        for c in x.chunks_exact(LANES) {
            for l in 0..LANES {
                let d = c[l] - shift;
                s[l] += d;
                q[l] += d * d;
            }
        }
        (s, q)
    }

    pub(super) fn g_gx_blocks(gy: &[f32], x: &[f32], mean: f32, a: f32, b: f32) -> (Lanes, Lanes) {
        let (mut s, mut q) = ([0f32; LANES], [0f32; LANES]);
        for (g, xx) in gy.chunks_exact(LANES).zip(x.chunks_exact(LANES)) {
            for l in 0..LANES {
                let gl = if xx[l] * a + b > 0.0 { g[l] } else { 0.0 };
                s[l] += gl;
                q[l] += gl * (xx[l] - mean);
            }
        }
        (s, q)
    }

    pub(super) fn sum_blocks(x: &[f32]) -> Lanes {
        let mut s = [0f32; LANES];
        for c in x.chunks_exact(LANES) {
            for l in 0..LANES {
                s[l] += c[l];
            }
        }
        s
    }
}

/// Lanes of `(sum(g), sum(g * (x - mean)))`, `g = gy` where
/// `x * a + b > 0` and 0 elsewhere, over the whole blocks.
fn g_gx_blocks(gy: &[f32], x: &[f32], mean: f32, a: f32, b: f32) -> (Lanes, Lanes) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512::g_gx_blocks(gy, x, mean, a, b) };
    }
    portable::g_gx_blocks(gy, x, mean, a, b)
}

/// Lanes of `sum(x)` over the whole blocks.
fn sum_blocks(x: &[f32]) -> Lanes {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512::sum_blocks(x) };
    }
    portable::sum_blocks(x)
}

/// The 16-lane reductions written with AVX-512 intrinsics: one register
/// per accumulator array, the same operations per lane and in the same
/// order as the portable loops (separate multiply and add, no FMA), so the
/// sums are bit-identical. The compiler does not vectorise the portable
/// loops across lanes by itself: it pairs the two accumulators of one lane
/// instead, or turns the ReLU mask into branches.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Lanes, LANES};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    fn load(c: &[f32]) -> __m512 {
        debug_assert!(c.len() >= LANES);
        // SAFETY: `c` holds at least 16 f32 (whole blocks only); the load
        // is unaligned.
        unsafe { _mm512_loadu_ps(c.as_ptr()) }
    }

    #[target_feature(enable = "avx512f")]
    fn lanes(v: __m512) -> Lanes {
        let mut out = [0f32; LANES];
        // SAFETY: `out` holds 16 f32; the store is unaligned.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
        out
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn sq_shifted_blocks(x: &[f32], shift: f32) -> (Lanes, Lanes) {
        let sh = _mm512_set1_ps(shift);
        let (mut s, mut q) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for c in x.chunks_exact(LANES) {
            let d = _mm512_sub_ps(load(c), sh);
            s = _mm512_add_ps(s, d);
            q = _mm512_add_ps(q, _mm512_mul_ps(d, d));
        }
        (lanes(s), lanes(q))
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn g_gx_blocks(gy: &[f32], x: &[f32], mean: f32, a: f32, b: f32) -> (Lanes, Lanes) {
        let (va, vb, vm) = (_mm512_set1_ps(a), _mm512_set1_ps(b), _mm512_set1_ps(mean));
        let zero = _mm512_setzero_ps();
        let (mut s, mut q) = (zero, zero);
        for (g, xx) in gy.chunks_exact(LANES).zip(x.chunks_exact(LANES)) {
            let xv = load(xx);
            // `x * a + b > 0` (ordered: false for NaN, as in Rust).
            let open =
                _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_add_ps(_mm512_mul_ps(xv, va), vb), zero);
            let gl = _mm512_maskz_mov_ps(open, load(g));
            s = _mm512_add_ps(s, gl);
            q = _mm512_add_ps(q, _mm512_mul_ps(gl, _mm512_sub_ps(xv, vm)));
        }
        (lanes(s), lanes(q))
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn sum_blocks(x: &[f32]) -> Lanes {
        let mut s = _mm512_setzero_ps();
        for c in x.chunks_exact(LANES) {
            s = _mm512_add_ps(s, load(c));
        }
        lanes(s)
    }
}

/// `(sum(x - shift), sum((x - shift)^2))`, vectorised across 16 lanes.
pub(crate) fn sum_sq_shifted(x: &[f32], shift: f32) -> (f64, f64) {
    let (s, q) = sq_shifted_blocks(x, shift);
    let (mut ss, mut qq) = (0f64, 0f64);
    for &v in x.chunks_exact(LANES).remainder() {
        let d = (v - shift) as f64;
        ss += d;
        qq += d * d;
    }
    for l in 0..LANES {
        ss += s[l] as f64;
        qq += q[l] as f64;
    }
    (ss, qq)
}

/// `(sum(g), sum(g * (x - mean)))` where `g = gy`, or with `relu = (a, b)`,
/// `g = gy` where `x * a + b > 0` and 0 elsewhere: the gradient through a
/// ReLU applied to `x * a + b`, decided exactly as the forward did.
pub(crate) fn sum_g_gx(gy: &[f32], x: &[f32], mean: f32, relu: Option<(f32, f32)>) -> (f64, f64) {
    // Without a ReLU the mask is always open: a = 0, b = 1.
    let (a, b) = relu.unwrap_or((0.0, 1.0));
    let n = gy.len().min(x.len());
    let (gy, x) = (&gy[..n], &x[..n]);
    let (s, q) = g_gx_blocks(gy, x, mean, a, b);
    let (mut ss, mut qq) = (0f64, 0f64);
    let (grest, xrest) = (
        gy.chunks_exact(LANES).remainder(),
        x.chunks_exact(LANES).remainder(),
    );
    for (&g, &xv) in grest.iter().zip(xrest) {
        let g = if xv * a + b > 0.0 { g as f64 } else { 0.0 };
        ss += g;
        qq += g * (xv - mean) as f64;
    }
    for l in 0..LANES {
        ss += s[l] as f64;
        qq += q[l] as f64;
    }
    (ss, qq)
}

/// Sum of a slice, vectorised across 16 lanes.
pub(crate) fn sum(x: &[f32]) -> f64 {
    let s = sum_blocks(x);
    let mut ss: f64 = x
        .chunks_exact(LANES)
        .remainder()
        .iter()
        .map(|&v| v as f64)
        .sum();
    for v in s {
        ss += v as f64;
    }
    ss
}

multiversion! {
/// `y = x * a + b`, then `max(y, 0)` when `relu`.
pub(crate) fn scale_shift(x: &[f32], a: f32, b: f32, relu: bool, y: &mut [f32]) {
    if relu {
        for (yv, &xv) in y.iter_mut().zip(x) {
            *yv = (xv * a + b).max(0.0);
        }
    } else {
        for (yv, &xv) in y.iter_mut().zip(x) {
            *yv = xv * a + b;
        }
    }
}
}

multiversion! {
/// `out = a g + b x + k` with `abk = (a, b, k)` and `g = gy`, or with
/// `relu = (sc, sh)`, `g = gy` where `x * sc + sh > 0` and 0 elsewhere (the
/// closed-form batch-norm input gradient of one plane).
pub(crate) fn bn_input_grad(
    gy: &[f32],
    x: &[f32],
    abk: (f32, f32, f32),
    relu: Option<(f32, f32)>,
    out: &mut [f32],
) {
    let (a, b, k) = abk;
    match relu {
        None => {
            for ((d, &g), &xv) in out.iter_mut().zip(gy).zip(x) {
                *d = a * g + b * xv + k;
            }
        }
        Some((sc, sh)) => {
            for ((d, &g), &xv) in out.iter_mut().zip(gy).zip(x) {
                let g = if xv * sc + sh > 0.0 { g } else { 0.0 };
                *d = a * g + b * xv + k;
            }
        }
    }
}
}

multiversion! {
/// `v = max(v, 0)` in place.
pub(crate) fn relu_inplace(v: &mut [f32]) {
    for e in v.iter_mut() {
        *e = e.max(0.0);
    }
}
}

multiversion! {
/// `y = max(a + b, 0)` (with `b` empty, `y = max(a, 0)`).
pub(crate) fn add_relu_into(a: &[f32], b: &[f32], y: &mut [f32]) {
    if b.is_empty() {
        for (y, &a) in y.iter_mut().zip(a) {
            *y = a.max(0.0);
        }
    } else {
        for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
            *y = (a + b).max(0.0);
        }
    }
}
}

multiversion! {
/// `d = g` where `y > 0`, else 0: the gradient through a ReLU whose output
/// is `y`.
pub(crate) fn relu_mask(g: &[f32], y: &[f32], d: &mut [f32]) {
    for ((d, &g), &y) in d.iter_mut().zip(g).zip(y) {
        *d = if y > 0.0 { g } else { 0.0 };
    }
}
}

multiversion! {
/// `dst += src`, elementwise.
pub(crate) fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d += v;
    }
}
}

/// `dst[j] = src[j * s]` for every `j` of `dst` (`s >= 1`; `src` must reach
/// `(dst.len() - 1) * s`). Strided rows are a few to a few dozen elements and
/// do not vectorise (gathers), so this and [`add_strided`] are inlined into
/// the caller rather than dispatched per instruction set on every row.
#[inline]
pub(crate) fn copy_strided(dst: &mut [f32], src: &[f32], s: usize) {
    let Some(last) = dst.len().checked_sub(1) else {
        return;
    };
    let src = &src[..last * s + 1];
    if s == 2 {
        // Pairs without bounds checks (the compiler vectorises this with
        // shuffles), then the last element, which has no pair.
        let (head, tail) = dst.split_at_mut(last);
        for (d, pair) in head.iter_mut().zip(src.chunks_exact(2)) {
            *d = pair[0];
        }
        tail[0] = src[2 * last];
    } else {
        for (d, &v) in dst.iter_mut().zip(src.iter().step_by(s)) {
            *d = v;
        }
    }
}

/// `dst[j * s] += src[j]` for every `j` of `src` (`s >= 1`; `dst` must
/// reach `(src.len() - 1) * s`).
#[inline]
pub(crate) fn add_strided(dst: &mut [f32], src: &[f32], s: usize) {
    let Some(last) = src.len().checked_sub(1) else {
        return;
    };
    let dst = &mut dst[..last * s + 1];
    if s == 2 {
        let (head, tail) = src.split_at(last);
        for (pair, &v) in dst.chunks_exact_mut(2).zip(head) {
            pair[0] += v;
        }
        dst[2 * last] += tail[0];
    } else {
        for (d, &v) in dst.iter_mut().step_by(s).zip(src) {
            *d += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn reductions_are_bit_identical_on_every_path() {
        // The AVX-512 blocks (where the CPU has them) against the plain
        // loops, bit for bit, with masked lanes, NaN and infinities.
        let mut rng = StdRng::seed_from_u64(3);
        let mut x: Vec<f32> = (0..1000).map(|_| rng.random::<f32>() * 4.0 - 2.0).collect();
        let g: Vec<f32> = (0..1000).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        x[17] = f32::NAN;
        x[40] = f32::INFINITY;
        x[41] = f32::NEG_INFINITY;
        let bits = |l: Lanes| l.map(f32::to_bits);
        let (s, q) = sq_shifted_blocks(&x[..992], 0.25);
        let (ps, pq) = portable::sq_shifted_blocks(&x[..992], 0.25);
        assert_eq!((bits(s), bits(q)), (bits(ps), bits(pq)));
        for (a, b) in [(0.0, 1.0), (1.5, -0.2), (-0.7, 0.1)] {
            let (s, q) = g_gx_blocks(&g, &x, 0.3, a, b);
            let (ps, pq) = portable::g_gx_blocks(&g, &x, 0.3, a, b);
            assert_eq!((bits(s), bits(q)), (bits(ps), bits(pq)), "a {a} b {b}");
        }
        let (s, ps) = (sum_blocks(&g), portable::sum_blocks(&g));
        assert_eq!(bits(s), bits(ps));
        // And the whole reductions against f64 sums (g has no NaN).
        let want: f64 = g.iter().map(|&v| v as f64).sum();
        assert!((sum(&g) - want).abs() < 1e-3, "{} vs {want}", sum(&g));
        let (s1, _) = sum_g_gx(&g, &g, 0.0, None);
        assert!((s1 - want).abs() < 1e-3);
    }

    #[test]
    fn strided_copies_and_adds_match_the_plain_loops() {
        // Every length from 0 to 40 at strides 1-3, the source (copy) or
        // destination (add) cut right after its last strided element.
        let mut rng = StdRng::seed_from_u64(4);
        for s in 1..=3 {
            for n in 0..=40usize {
                let len = n.saturating_sub(1) * s + usize::from(n > 0);
                let src: Vec<f32> = (0..len).map(|_| rng.random::<f32>() - 0.5).collect();
                let mut got = vec![7.0f32; n];
                copy_strided(&mut got, &src, s);
                let want: Vec<f32> = (0..n).map(|j| src[j * s]).collect();
                assert_eq!(got, want, "copy, stride {s}, {n} elements");

                let add: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
                let mut got = src.clone();
                add_strided(&mut got, &add, s);
                let mut want = src.clone();
                for (j, &v) in add.iter().enumerate() {
                    want[j * s] += v;
                }
                assert_eq!(got, want, "add, stride {s}, {n} elements");
            }
        }
    }
}
