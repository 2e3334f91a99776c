//! Train/validation/test splits and per-channel normalisation.
//!
//! The validation split is carved from the training set with a seeded
//! shuffle; normalisation statistics come from the training split only and
//! are applied to all three. Thresholds, alpha and early stopping are chosen
//! on validation; the test split is for the final report.

use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::{cifar, discover, idx, synthetic, Dataset, DatasetKind, SyntheticConfig};
use crate::error::{Error, Result};

/// How to split and subsample a data set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitConfig {
    /// Share of the training set held out for validation, in (0, 1).
    pub val_fraction: f64,
    /// Seed of the shuffle that carves the validation split.
    pub seed: u64,
    /// Keep at most this many training images (after the split), for quick runs.
    pub max_train: Option<usize>,
    /// Keep at most this many validation images.
    pub max_val: Option<usize>,
    /// Keep at most the first this-many test images, for quick runs.
    pub max_test: Option<usize>,
    /// Sizes of the synthetic set (ignored for real data).
    pub synthetic: SyntheticConfig,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            val_fraction: 0.1,
            seed: 0,
            max_train: None,
            max_val: None,
            max_test: None,
            synthetic: SyntheticConfig::default(),
        }
    }
}

impl SplitConfig {
    /// Refuses fractions outside (0, 1) and zero caps.
    pub fn validate(&self) -> Result<()> {
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return Err(Error::Config(format!(
                "val_fraction must be in (0, 1), got {}",
                self.val_fraction
            )));
        }
        for (name, cap) in [
            ("max_train", self.max_train),
            ("max_val", self.max_val),
            ("max_test", self.max_test),
        ] {
            if cap == Some(0) {
                return Err(Error::Config(format!("{name} must be positive, got 0")));
            }
        }
        Ok(())
    }
}

/// Per-channel normalisation `x' = (x - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel (never below 1e-6).
    pub std: Vec<f32>,
}

impl Normalization {
    /// Statistics of `ds`, per channel, accumulated in f64.
    pub fn fit(ds: &Dataset) -> Self {
        let [c, h, w] = ds.shape;
        let plane = h * w;
        let mut sum = vec![0.0f64; c];
        let mut sq = vec![0.0f64; c];
        for img in ds.images.chunks_exact(c * plane) {
            for ch in 0..c {
                for &v in &img[ch * plane..(ch + 1) * plane] {
                    sum[ch] += v as f64;
                    sq[ch] += (v as f64) * (v as f64);
                }
            }
        }
        let n = (ds.len() * plane).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| ((s / n - m * m).max(0.0).sqrt() as f32).max(1e-6))
            .collect();
        Self {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }

    /// Normalises `ds` in place.
    pub fn apply(&self, ds: &mut Dataset) {
        let [c, h, w] = ds.shape;
        let plane = h * w;
        for img in ds.images.chunks_exact_mut(c * plane) {
            for ch in 0..c {
                let (m, s) = (self.mean[ch], self.std[ch]);
                for v in &mut img[ch * plane..(ch + 1) * plane] {
                    *v = (*v - m) / s;
                }
            }
        }
    }
}

/// Undoes the normalisation `from` of `ds` and applies `to`, in place (to
/// move images of one split into the input space of a model trained on
/// another).
pub fn renormalize(ds: &mut Dataset, from: &Normalization, to: &Normalization) {
    let [c, h, w] = ds.shape;
    let plane = h * w;
    for img in ds.images.chunks_exact_mut(c * plane) {
        for ch in 0..c {
            let (m0, s0, m1, s1) = (from.mean[ch], from.std[ch], to.mean[ch], to.std[ch]);
            for v in &mut img[ch * plane..(ch + 1) * plane] {
                *v = (*v * s0 + m0 - m1) / s1;
            }
        }
    }
}

/// Whether two data sets hold the same images and labels, up to the float
/// error of a renormalisation (relative 1e-3).
pub fn same_images(a: &Dataset, b: &Dataset) -> bool {
    a.labels == b.labels
        && a.images.len() == b.images.len()
        && a.images
            .iter()
            .zip(&b.images)
            .all(|(x, y)| (x - y).abs() <= 1e-3 * (1.0 + y.abs()))
}

/// A data set split three ways, normalised with training statistics.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Training images (normalised).
    pub train: Dataset,
    /// Validation images carved from the training set (normalised).
    pub val: Dataset,
    /// The test set (normalised).
    pub test: Dataset,
    /// The statistics used, fitted on `train`.
    pub normalization: Normalization,
}

/// Loads the raw `(train, test)` sets of the data set `name`.
pub fn load_raw(
    name: &str,
    data_dir: Option<&Path>,
    cfg: &SplitConfig,
) -> Result<(Dataset, Dataset)> {
    let kind = DatasetKind::parse(name)?;
    match kind {
        DatasetKind::Synthetic => {
            let ((train, _), (test, _)) = synthetic::generate(&cfg.synthetic)?;
            Ok((train, test))
        }
        DatasetKind::Cifar10 => cifar::load_cifar10(&discover::find_data_dir(kind, data_dir)?),
        DatasetKind::Cifar100 => cifar::load_cifar100(&discover::find_data_dir(kind, data_dir)?),
        _ => {
            let dir = discover::find_data_dir(kind, data_dir)?;
            let names = kind.idx_class_names();
            let train = idx::load_idx_dataset(&dir, kind.name(), "train", names)?;
            let test = idx::load_idx_dataset(&dir, kind.name(), "t10k", names)?;
            Ok((train, test))
        }
    }
}

impl Splits {
    /// Loads data set `name` (see [`DatasetKind::parse`]) and splits it.
    pub fn load(name: &str, data_dir: Option<&Path>, cfg: &SplitConfig) -> Result<Splits> {
        cfg.validate()?;
        let (train, test) = load_raw(name, data_dir, cfg)?;
        Self::from_train_test(train, test, cfg)
    }

    /// Splits an already loaded training set and normalises all three.
    pub fn from_train_test(full: Dataset, test: Dataset, cfg: &SplitConfig) -> Result<Splits> {
        cfg.validate()?;
        if full.shape != test.shape || full.class_names != test.class_names {
            return Err(Error::Config(format!(
                "train and test sets of '{}' disagree on image shape or classes",
                full.name
            )));
        }
        let n = full.len();
        let n_val = ((n as f64) * cfg.val_fraction).round() as usize;
        if n_val == 0 || n_val >= n {
            return Err(Error::Config(format!(
                "a validation fraction of {} leaves {n_val} of {n} images for validation",
                cfg.val_fraction
            )));
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut StdRng::seed_from_u64(cfg.seed));
        let (val_idx, train_idx) = order.split_at(n_val);
        let cap = |idx: &[usize], max: Option<usize>| {
            idx[..max.unwrap_or(idx.len()).min(idx.len())].to_vec()
        };
        let mut train = full.subset(&cap(train_idx, cfg.max_train));
        let mut val = full.subset(&cap(val_idx, cfg.max_val));
        let test_idx: Vec<usize> =
            (0..cfg.max_test.unwrap_or(test.len()).min(test.len())).collect();
        let mut test = if test_idx.len() == test.len() {
            test
        } else {
            test.subset(&test_idx)
        };
        let normalization = Normalization::fit(&train);
        for ds in [&mut train, &mut val, &mut test] {
            normalization.apply(ds);
        }
        Ok(Splits {
            train,
            val,
            test,
            normalization,
        })
    }

    /// True when the data came from the synthetic generator.
    pub fn is_synthetic(&self) -> bool {
        self.train.source.is_synthetic()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SplitConfig {
        SplitConfig {
            synthetic: SyntheticConfig {
                n_train: 1000,
                n_test: 300,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn split_is_deterministic_disjoint_and_normalised() {
        let cfg = small();
        let a = Splits::load("synthetic", None, &cfg).unwrap();
        let b = Splits::load("synthetic", None, &cfg).unwrap();
        assert_eq!((a.train.len(), a.val.len(), a.test.len()), (900, 100, 300));
        assert!(a.val.images == b.val.images, "same seed, same split");
        let c = Splits::load("synthetic", None, &SplitConfig { seed: 5, ..cfg }).unwrap();
        assert_ne!(
            a.val.labels, c.val.labels,
            "another seed gives another split"
        );
        assert_eq!(
            a.test.labels, c.test.labels,
            "the test set does not move with the seed"
        );
        // Training statistics after normalisation: mean 0, std 1.
        let renorm = Normalization::fit(&a.train);
        assert!(renorm.mean[0].abs() < 1e-4, "{renorm:?}");
        assert!((renorm.std[0] - 1.0).abs() < 1e-4, "{renorm:?}");
        // Validation is not used for the statistics: its mean is not exactly 0.
        assert!(Normalization::fit(&a.val).mean[0] != 0.0);
    }

    #[test]
    fn caps_and_bad_fractions() {
        let cfg = SplitConfig {
            max_train: Some(50),
            max_test: Some(20),
            ..small()
        };
        let s = Splits::load("synthetic", None, &cfg).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (50, 100, 20));
        for f in [0.0, 1.0, f64::NAN] {
            let e = Splits::load(
                "synthetic",
                None,
                &SplitConfig {
                    val_fraction: f,
                    ..small()
                },
            );
            assert!(e.unwrap_err().to_string().contains("val_fraction"));
        }
    }
}
