//! A built-in synthetic data set with graded difficulty, for tests and
//! zero-setup runs. It is NOT real data, and every output made from it says so.
//!
//! Images are `1 x 12 x 12`, four classes. Each sample is one of three kinds,
//! in equal shares, chosen so that model capacity matters:
//!
//! - **easy**: a class template (a fixed random +-1 image per class) plus
//!   noise. Linearly separable: softmax regression gets these right.
//! - **medium**: a point on a circle in a 2-D subspace spanned by two fixed
//!   images, `r (cos th P + sin th Q)`, whose class is the angular sector
//!   (eight sectors, class = sector mod 4). Opposite and alternating sectors
//!   share a class, so no linear model separates them; a small MLP does.
//! - **hard**: a class-specific 3x3 motif stamped at a random position on a
//!   noise background. Translation makes it hard for dense models; a conv net
//!   with pooling finds it.
//!
//! Generation is a few milliseconds for the default sizes.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use super::{DataSource, Dataset};
use crate::error::{Error, Result};

/// The notice printed with, and written into, every output made from the
/// synthetic set.
pub const SYNTHETIC_NOTICE: &str =
    "NOTE: synthetic data (built-in generator with graded difficulty), not a real data set";

const SIDE: usize = 12;
const CLASSES: usize = 4;
const CLASS_NAMES: [&str; CLASSES] = ["north", "east", "south", "west"];

/// Sizes and seed of the synthetic set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SyntheticConfig {
    /// Training images (the validation split is carved from these).
    pub n_train: usize,
    /// Test images.
    pub n_test: usize,
    /// Seed of the generator. Fixed by default so that every run seed sees
    /// the same data, as with a real data set.
    pub seed: u64,
    /// Standard deviation of the pixel noise.
    pub noise: f32,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            n_train: 6000,
            n_test: 2000,
            seed: 0,
            noise: 0.35,
        }
    }
}

/// The kind of a synthetic sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Difficulty {
    /// Linearly separable.
    Easy,
    /// Needs a non-linear dense model.
    Medium,
    /// Needs translation invariance.
    Hard,
}

struct Generator {
    templates: Vec<[f32; SIDE * SIDE]>,
    p: [f32; SIDE * SIDE],
    q: [f32; SIDE * SIDE],
    motifs: Vec<[f32; 9]>,
}

fn signs<const N: usize>(rng: &mut StdRng, scale: f32) -> [f32; N] {
    let mut a = [0.0; N];
    for v in a.iter_mut() {
        *v = if rng.random::<bool>() { scale } else { -scale };
    }
    a
}

impl Generator {
    fn new(rng: &mut StdRng) -> Self {
        let templates = (0..CLASSES).map(|_| signs(rng, 0.5)).collect();
        let p = signs(rng, 0.6);
        let q = signs(rng, 0.6);
        // Motifs with distinct shapes: each a random +-1 pattern, forced to
        // differ from the others in at least three cells.
        let mut motifs: Vec<[f32; 9]> = Vec::new();
        while motifs.len() < CLASSES {
            let m: [f32; 9] = signs(rng, 1.0);
            let distinct = motifs
                .iter()
                .all(|o| o.iter().zip(&m).filter(|(a, b)| a != b).count() >= 3);
            if distinct {
                motifs.push(m);
            }
        }
        Self {
            templates,
            p,
            q,
            motifs,
        }
    }

    fn sample(
        &self,
        rng: &mut StdRng,
        noise: &Normal<f32>,
        out: &mut Vec<f32>,
    ) -> (u32, Difficulty) {
        let start = out.len();
        out.extend((0..SIDE * SIDE).map(|_| noise.sample(rng)));
        let img = &mut out[start..];
        match rng.random_range(0..3u8) {
            0 => {
                let class = rng.random_range(0..CLASSES);
                for (v, t) in img.iter_mut().zip(&self.templates[class]) {
                    *v += t;
                }
                (class as u32, Difficulty::Easy)
            }
            1 => {
                let theta: f32 = rng.random_range(0.0..std::f32::consts::TAU);
                let sector = (theta / (std::f32::consts::TAU / 8.0)) as usize % 8;
                let (s, c) = theta.sin_cos();
                for ((v, p), q) in img.iter_mut().zip(&self.p).zip(&self.q) {
                    *v += c * p + s * q;
                }
                ((sector % CLASSES) as u32, Difficulty::Medium)
            }
            _ => {
                let class = rng.random_range(0..CLASSES);
                let (r0, c0) = (rng.random_range(0..SIDE - 2), rng.random_range(0..SIDE - 2));
                for (k, m) in self.motifs[class].iter().enumerate() {
                    img[(r0 + k / 3) * SIDE + c0 + k % 3] += 1.5 * m;
                }
                (class as u32, Difficulty::Hard)
            }
        }
    }
}

/// A generated split with the difficulty of each sample.
pub type LabelledSplit = (Dataset, Vec<Difficulty>);

/// Generates `(train, test)` and the difficulty of each sample.
pub fn generate(cfg: &SyntheticConfig) -> Result<(LabelledSplit, LabelledSplit)> {
    if cfg.n_train == 0 || cfg.n_test == 0 {
        return Err(Error::Config(format!(
            "synthetic data needs n_train > 0 and n_test > 0, got {} and {}",
            cfg.n_train, cfg.n_test
        )));
    }
    // Images (f32), labels (u32) and difficulties of both splits, refused
    // before anything is allocated when they cannot fit in memory.
    let mut sizes = cascade_env::size::Buffers::new(format!(
        "synthetic data of {} training and {} test images",
        cfg.n_train, cfg.n_test
    ));
    for (split, n) in [("training", cfg.n_train), ("test", cfg.n_test)] {
        sizes
            .add(&format!("{split} images"), &[n, SIDE * SIDE], 4)
            .add(&format!("{split} labels"), &[n], 5);
    }
    sizes.check().map_err(|e| Error::Config(e.0))?;
    let noise = Normal::new(0.0, cfg.noise).map_err(|e| {
        Error::Config(format!(
            "synthetic noise {} is not a valid std: {e}",
            cfg.noise
        ))
    })?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let generator = Generator::new(&mut rng);
    let mut make = |n: usize| {
        let mut images = Vec::with_capacity(n * SIDE * SIDE);
        let mut labels = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        for _ in 0..n {
            let (l, k) = generator.sample(&mut rng, &noise, &mut images);
            labels.push(l);
            kinds.push(k);
        }
        let ds = Dataset {
            name: "synthetic".to_string(),
            images,
            labels,
            shape: [1, SIDE, SIDE],
            class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
            source: DataSource::Synthetic { seed: cfg.seed },
        };
        (ds, kinds)
    };
    let train = make(cfg.n_train);
    let test = make(cfg.n_test);
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_deterministic_and_balanced() {
        let cfg = SyntheticConfig::default();
        let ((a, ka), _) = generate(&cfg).unwrap();
        let ((b, _), _) = generate(&cfg).unwrap();
        assert_eq!(a.images, b.images);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.len(), 6000);
        assert!(a.source.is_synthetic());
        for c in a.class_counts() {
            assert!((1300..1700).contains(&c), "class count {c}");
        }
        let easy = ka.iter().filter(|k| **k == Difficulty::Easy).count();
        assert!((1800..2200).contains(&easy), "easy count {easy}");
        // Sizes beyond any memory are refused before anything is allocated.
        for (n_train, n_test) in [(10_000_000_000, 10), (10, usize::MAX / 8)] {
            let big = SyntheticConfig {
                n_train,
                n_test,
                ..cfg
            };
            let e = generate(&big).unwrap_err().to_string();
            assert!(
                e.contains("more than the limit") || e.contains("overflows"),
                "{e}"
            );
            assert!(e.contains(&n_train.to_string()), "{e}");
        }
        let ((c, _), _) = generate(&SyntheticConfig { seed: 1, ..cfg }).unwrap();
        assert_ne!(a.images, c.images);
    }

    /// The easy part is solvable by a nearest-template rule; the medium part
    /// is not solvable by any single linear direction per class (checked via
    /// the class-mean classifier, which is linear).
    #[test]
    fn difficulty_is_graded_for_a_linear_rule() {
        let ((train, kinds), _) = generate(&SyntheticConfig::default()).unwrap();
        let d = train.image_len();
        let mut means = vec![vec![0.0f32; d]; CLASSES];
        let counts = train.class_counts();
        for i in 0..train.len() {
            for (m, v) in means[train.labels[i] as usize]
                .iter_mut()
                .zip(train.image(i))
            {
                *m += v;
            }
        }
        for (m, c) in means.iter_mut().zip(&counts) {
            m.iter_mut().for_each(|v| *v /= *c as f32);
        }
        let mut right = [0usize; 3];
        let mut total = [0usize; 3];
        for (i, &kind) in kinds.iter().enumerate().take(train.len()) {
            let x = train.image(i);
            let pred = (0..CLASSES)
                .max_by(|&a, &b| {
                    let s = |c: usize| -> f32 {
                        means[c].iter().zip(x).map(|(m, v)| m * v).sum::<f32>()
                            - 0.5 * means[c].iter().map(|m| m * m).sum::<f32>()
                    };
                    s(a).total_cmp(&s(b))
                })
                .unwrap();
            let k = kind as usize;
            total[k] += 1;
            right[k] += (pred as u32 == train.labels[i]) as usize;
        }
        let acc: Vec<f64> = (0..3).map(|k| right[k] as f64 / total[k] as f64).collect();
        assert!(acc[0] > 0.95, "easy accuracy {acc:?}");
        assert!(acc[1] < 0.6, "medium accuracy {acc:?}");
        assert!(acc[2] < 0.6, "hard accuracy {acc:?}");
    }
}
