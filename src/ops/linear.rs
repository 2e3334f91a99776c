//! Fully connected layer `y = x w^T + b` on the CPU with a backward of two
//! GEMMs straight into the layouts of `x` and `w` (candle's matmul backward
//! goes through transposed copies and a strided add).

use super::cpu::{num_threads, sgemm, slice_f32, with_f32, Mat};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

/// `(rows, in, out)` of `x: [.., in]`, `w: [out, in]`.
fn dims(x: &[usize], w: &[usize]) -> Result<(usize, usize, usize)> {
    let (Some((&k, lead)), &[o, kw]) = (x.split_last(), w) else {
        bail!("linear: expected x [.., in] and w [out, in], got {x:?} and {w:?}")
    };
    if lead.is_empty() || k != kw {
        bail!("linear: x {x:?} does not match w {w:?} (x [.., in], w [out, in])")
    }
    Ok((lead.iter().product(), k, o))
}

/// Parallel GEMMs only pay off above a few hundred thousand multiply-adds.
fn par(m: usize, n: usize, k: usize) -> Parallelism {
    let t = num_threads();
    if t > 1 && m * n * k >= 1 << 18 {
        Parallelism::Rayon(t)
    } else {
        Parallelism::None
    }
}

fn fwd(
    x: (&CpuStorage, &Layout),
    w: (&CpuStorage, &Layout),
    b: Option<&[f32]>,
) -> Result<(CpuStorage, Shape)> {
    let (n, k, o) = dims(x.1.dims(), w.1.dims())?;
    if b.is_some_and(|b| b.len() != o) {
        bail!(
            "linear: bias has {} elements, expected {o}",
            b.map_or(0, <[f32]>::len)
        )
    }
    let xs = slice_f32(x.0, x.1, "linear input")?;
    let ws = slice_f32(w.0, w.1, "linear weight")?;
    let mut y = vec![0f32; n * o];
    if let Some(b) = b {
        for row in y.chunks_mut(o.max(1)) {
            row.copy_from_slice(b);
        }
    }
    sgemm(
        n,
        o,
        k,
        &mut y,
        o,
        b.is_some(),
        Mat::rows(xs, k),
        Mat::trans(ws, k),
        par(n, o, k),
    );
    let mut shape = x.1.dims().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = o;
    }
    Ok((CpuStorage::F32(y), Shape::from(shape)))
}

type Grads = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

fn bwd(x: &Tensor, w: &Tensor, b: Option<&Tensor>, gy: &Tensor) -> Result<Grads> {
    let (n, k, o) = dims(x.dims(), w.dims())?;
    let gy = gy.contiguous()?;
    let dev = x.device();
    with_f32(&gy, "linear output gradient", |g| {
        let dx = if x.track_op() {
            let mut dx = vec![0f32; n * k];
            with_f32(w, "linear weight", |ws| {
                sgemm(
                    n,
                    k,
                    o,
                    &mut dx,
                    k,
                    false,
                    Mat::rows(g, o),
                    Mat::rows(ws, k),
                    par(n, k, o),
                );
                Ok(())
            })?;
            Some(Tensor::from_vec(dx, x.shape(), dev)?)
        } else {
            None
        };
        let dw = if w.track_op() {
            let mut dw = vec![0f32; o * k];
            with_f32(x, "linear input", |xs| {
                sgemm(
                    o,
                    k,
                    n,
                    &mut dw,
                    k,
                    false,
                    Mat::trans(g, o),
                    Mat::rows(xs, k),
                    par(o, k, n),
                );
                Ok(())
            })?;
            Some(Tensor::from_vec(dw, w.shape(), dev)?)
        } else {
            None
        };
        let db = match b {
            Some(b) if b.track_op() => {
                // Column sums of gy [n, o], in parallel over columns.
                let db: Vec<f32> = (0..o)
                    .into_par_iter()
                    .with_min_len(16)
                    .map(|j| (0..n).map(|i| g[i * o + j] as f64).sum::<f64>() as f32)
                    .collect();
                Some(Tensor::from_vec(db, o, dev)?)
            }
            _ => None,
        };
        Ok((dx, dw, db))
    })
}

/// `y = x w^T (+ b)` as a candle custom op over `(x, w)` or `(x, w, b)`.
pub(crate) struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "cascade-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fwd((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = bwd(x, w, None, gy)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "cascade-linear-bias"
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
        let b = slice_f32(s3, l3, "linear bias")?;
        fwd((s1, l1), (s2, l2), Some(b))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<Grads> {
        bwd(x, w, Some(b), gy)
    }
}
