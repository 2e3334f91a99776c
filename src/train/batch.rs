//! Training batches and their augmentation: random horizontal flips and
//! random crops from a zero-padded image (zero is the training mean, since
//! images are normalised).

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::Result;

/// Data augmentation of training batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Augment {
    /// Random horizontal flips (probability 1/2).
    pub hflip: bool,
    /// Random crops of the original size from the image zero-padded by this
    /// many pixels (0: off).
    pub crop_padding: usize,
}

/// Copies one image into `out` with a random crop offset and flip.
fn augment_into(
    src: &[f32],
    shape: [usize; 3],
    aug: Augment,
    rng: &mut StdRng,
    out: &mut Vec<f32>,
) {
    let [c, h, w] = shape;
    let p = aug.crop_padding as i64;
    let (dy, dx) = if p > 0 {
        (
            rng.random_range(-p..=p) as isize,
            rng.random_range(-p..=p) as isize,
        )
    } else {
        (0, 0)
    };
    let flip = aug.hflip && rng.random_bool(0.5);
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        for y in 0..h as isize {
            let sy = y + dy;
            for x in 0..w as isize {
                let xo = if flip { w as isize - 1 - x } else { x };
                let sx = xo + dx;
                let v = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                    plane[sy as usize * w + sx as usize]
                } else {
                    0.0
                };
                out.push(v);
            }
        }
    }
}

/// A batch of the images at `idx` (augmented when `aug` asks for it).
///
/// # Shapes
/// `-> (images: [n, c, h, w] f32, labels: [n] u32)`
pub fn make_batch(
    ds: &Dataset,
    idx: &[usize],
    aug: Augment,
    rng: &mut StdRng,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let [c, h, w] = ds.shape;
    let mut images = Vec::with_capacity(idx.len() * c * h * w);
    let mut labels = Vec::with_capacity(idx.len());
    let plain = !aug.hflip && aug.crop_padding == 0;
    for &i in idx {
        if plain {
            images.extend_from_slice(ds.image(i));
        } else {
            augment_into(ds.image(i), ds.shape, aug, rng, &mut images);
        }
        labels.push(ds.labels[i]);
    }
    let x = Tensor::from_vec(images, (idx.len(), c, h, w), device)?;
    let y = Tensor::from_vec(labels, idx.len(), device)?;
    Ok((x, y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn augmentation_flips_and_shifts() {
        let src: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let mut rng = StdRng::seed_from_u64(0);
        let mut seen_flip = false;
        for _ in 0..20 {
            let mut out = vec![];
            augment_into(
                &src,
                [1, 3, 3],
                Augment {
                    hflip: true,
                    crop_padding: 0,
                },
                &mut rng,
                &mut out,
            );
            assert!(
                out == src || out == vec![2., 1., 0., 5., 4., 3., 8., 7., 6.],
                "{out:?}"
            );
            seen_flip |= out != src;
        }
        assert!(seen_flip);
        let mut out = vec![];
        let mut rng = StdRng::seed_from_u64(1);
        augment_into(
            &src,
            [1, 3, 3],
            Augment {
                hflip: false,
                crop_padding: 1,
            },
            &mut rng,
            &mut out,
        );
        // Every kept pixel is a pixel of the source or zero padding.
        assert!(out.iter().all(|v| src.contains(v)));
    }
}
