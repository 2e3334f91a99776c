//! The parameter-free residual shortcut of CIFAR ResNets ("option A"):
//! keep every `s`-th row and column and pad the channels with zeros, in one
//! pass each way (through candle's ops it is two `index_select`s and a
//! concatenation forward, two `index_add`s and a slice backward).

use super::cpu::{copy_strided, par_init, slice_f32, with_f32};
use super::norm::{dims_nchw, min_planes};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// `x[:, :, ::s, ::s]` with `left` zero channels before and `right` after,
/// as a candle custom op.
pub(crate) struct SubsamplePad {
    pub stride: usize,
    pub left: usize,
    pub right: usize,
}

impl SubsamplePad {
    /// Output height and width for an `h x w` input.
    fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (h.div_ceil(self.stride), w.div_ceil(self.stride))
    }
}

impl CustomOp1 for SubsamplePad {
    fn name(&self) -> &'static str {
        "cascade-subsample-pad"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, c, h, w] = l.dims() else {
            bail!(
                "subsample_pad: expected an input of shape [b, c, h, w], got {:?}",
                l.dims()
            )
        };
        let s = self.stride;
        if s == 0 {
            bail!("subsample_pad: stride must be positive")
        }
        let x = slice_f32(st, l, "subsample_pad input")?;
        let (ho, wo) = self.out_hw(h, w);
        let co = self.left + c + self.right;
        let (hw, ohw) = (h * w, ho * wo);
        let per = min_planes(ohw);
        let y = par_init(n * co * ohw, per * ohw, |t, ys| {
            for (j, yp) in ys.chunks_mut(ohw.max(1)).enumerate() {
                let plane = t * per + j;
                let (i, oc) = (plane / co, plane % co);
                // Channels outside the copied range stay zero.
                let Some(ci) = oc.checked_sub(self.left).filter(|&ci| ci < c) else {
                    continue;
                };
                let xp = &x[(i * c + ci) * hw..][..hw];
                for (oh, yr) in yp.chunks_mut(wo.max(1)).enumerate() {
                    copy_strided(yr, &xp[oh * s * w..][..w], s);
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((n, co, ho, wo))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, hw) = dims_nchw(x.dims(), "subsample_pad")?;
        let (h, w) = (x.dim(2)?, x.dim(3)?);
        let s = self.stride;
        let (ho, wo) = self.out_hw(h, w);
        let co = self.left + c + self.right;
        let ohw = ho * wo;
        let gy = gy.contiguous()?;
        if gy.dims() != [n, co, ho, wo] {
            bail!(
                "subsample_pad: output gradient of shape {:?}, expected {:?}",
                gy.dims(),
                [n, co, ho, wo]
            )
        }
        let per = min_planes(hw);
        let dx = with_f32(&gy, "subsample_pad output gradient", |g| {
            Ok(par_init(n * c * hw, per * hw, |t, dxs| {
                for (j, dp) in dxs.chunks_mut(hw.max(1)).enumerate() {
                    let plane = t * per + j;
                    let (i, ci) = (plane / c, plane % c);
                    let gp = &g[(i * co + self.left + ci) * ohw..][..ohw];
                    for (oh, gr) in gp.chunks(wo.max(1)).enumerate() {
                        let dr = &mut dp[oh * s * w..][..w];
                        for (d, &v) in dr.iter_mut().step_by(s).zip(gr) {
                            *d = v;
                        }
                    }
                }
            }))
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}
