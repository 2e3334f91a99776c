//! Non-overlapping max pooling on the CPU that records, for every output,
//! which element of its window won, so the backward is one scatter pass.

use super::cpu::{par_init, slice_f32, with_f32};
use super::norm::dims_nchw;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// Largest window side whose positions fit the `u8` argmax record.
pub(crate) const MAX_K: usize = 16;

/// `k x k` max pooling with stride `k`, as a candle custom op. The forward
/// stores the winning position in each window (the first maximum in
/// row-major order) for the backward.
pub(crate) struct MaxPool2d {
    pub k: usize,
    argmax: Mutex<Vec<u8>>,
}

impl MaxPool2d {
    pub fn new(k: usize) -> Self {
        MaxPool2d {
            k,
            argmax: Mutex::new(Vec::new()),
        }
    }
}

/// Max-pools one plane `xp` (row length `w`) into `yp` (row length `wo`),
/// recording the window position of each maximum in `ap`.
pub(crate) fn pool_plane(k: usize, w: usize, wo: usize, xp: &[f32], yp: &mut [f32], ap: &mut [u8]) {
    for (oh, (yr, ar)) in yp.chunks_mut(wo).zip(ap.chunks_mut(wo)).enumerate() {
        if k == 2 {
            let r0 = &xp[2 * oh * w..][..w];
            let r1 = &xp[(2 * oh + 1) * w..][..w];
            for ow in 0..wo {
                let c = [r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]];
                let mut best = 0;
                for (j, &v) in c.iter().enumerate().skip(1) {
                    if v > c[best] {
                        best = j;
                    }
                }
                yr[ow] = c[best];
                ar[ow] = best as u8;
            }
        } else {
            for ow in 0..wo {
                let mut best = 0usize;
                let mut bv = f32::NEG_INFINITY;
                for ki in 0..k {
                    let row = &xp[(oh * k + ki) * w + ow * k..][..k];
                    for (kj, &v) in row.iter().enumerate() {
                        if v > bv || (ki == 0 && kj == 0) {
                            bv = v;
                            best = ki * k + kj;
                        }
                    }
                }
                yr[ow] = bv;
                ar[ow] = best as u8;
            }
        }
    }
}

impl CustomOp1 for MaxPool2d {
    fn name(&self) -> &'static str {
        "cascade-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, c, h, w] = l.dims() else {
            bail!(
                "max_pool2d: expected an input of shape [b, c, h, w], got {:?}",
                l.dims()
            )
        };
        let k = self.k;
        if k == 0 || k > MAX_K || h < k || w < k {
            bail!("max_pool2d: kernel size {k} does not fit the input {h}x{w}")
        }
        let x = slice_f32(s, l, "max_pool2d input")?;
        let (ho, wo) = (h / k, w / k);
        let mut y = vec![0f32; n * c * ho * wo];
        let mut arg = vec![0u8; y.len()];
        if !y.is_empty() {
            y.par_chunks_mut(ho * wo)
                .zip(arg.par_chunks_mut(ho * wo))
                .zip(x.par_chunks(h * w))
                .with_min_len((4096 / (ho * wo)).max(1))
                .for_each(|((yp, ap), xp)| pool_plane(k, w, wo, xp, yp, ap));
        }
        *self
            .argmax
            .lock()
            .map_err(|_| candle_core::Error::Msg("max_pool2d: poisoned lock".into()))? = arg;
        Ok((CpuStorage::F32(y), Shape::from((n, c, ho, wo))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, hw) = dims_nchw(x.dims(), "max_pool2d")?;
        let (h, w) = (x.dim(2)?, x.dim(3)?);
        let k = self.k;
        let (ho, wo) = (h / k, w / k);
        let gy = gy.contiguous()?;
        let arg = self
            .argmax
            .lock()
            .map_err(|_| candle_core::Error::Msg("max_pool2d: poisoned lock".into()))?;
        let dx = with_f32(&gy, "max_pool2d output gradient", |gys| {
            if arg.len() != gys.len() {
                bail!("max_pool2d: backward without a matching forward")
            }
            if gys.is_empty() {
                return Ok(vec![0f32; x.elem_count()]);
            }
            let per = (4096 / (ho * wo)).max(1);
            let dx = par_init(x.elem_count(), per * hw, |t, dxs| {
                for (j, dp) in dxs.chunks_mut(hw).enumerate() {
                    let plane = t * per + j;
                    let gp = &gys[plane * ho * wo..][..ho * wo];
                    let ap = &arg[plane * ho * wo..][..ho * wo];
                    for oh in 0..ho {
                        for ow in 0..wo {
                            let j = oh * wo + ow;
                            let a = ap[j] as usize;
                            dp[(oh * k + a / k) * w + ow * k + a % k] = gp[j];
                        }
                    }
                }
            });
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}
