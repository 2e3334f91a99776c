//! Data sets: IDX (MNIST, Fashion-MNIST, KMNIST) and CIFAR-10/100 binary
//! batches from disk, a built-in synthetic set with graded difficulty,
//! discovery of data folders, a seeded train/validation split and per-channel
//! normalisation computed on the training split only.

mod cifar;
mod discover;
mod idx;
mod split;
mod synthetic;

pub use cifar::{load_cifar10, load_cifar100};
pub use discover::{find_data_dir, DatasetKind, DEBIAN_FASHION_MNIST};
pub use idx::{load_idx_dataset, read_idx_images, read_idx_labels};
pub use split::{load_raw, renormalize, same_images, Normalization, SplitConfig, Splits};
pub use synthetic::{
    generate as generate_synthetic, Difficulty, SyntheticConfig, SYNTHETIC_NOTICE,
};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a data set came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// Files read from this folder.
    Files { dir: PathBuf },
    /// Generated in memory by the built-in synthetic generator.
    Synthetic { seed: u64 },
}

impl DataSource {
    /// True when the data set is the built-in synthetic one.
    pub fn is_synthetic(&self) -> bool {
        matches!(self, DataSource::Synthetic { .. })
    }
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Files { dir } => write!(f, "{}", dir.display()),
            DataSource::Synthetic { seed } => {
                write!(
                    f,
                    "built-in synthetic generator (seed {seed}); NOT real data"
                )
            }
        }
    }
}

/// One split of a data set held in memory.
///
/// # Shapes
/// `images: [n, c, h, w]` flattened row-major as f32 (raw pixel values
/// scaled to [0, 1] on load; normalisation is applied by [`Splits`]),
/// `labels: [n]` with values in `0..class_names.len()`.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Data set name (`fashion-mnist`, `cifar10`, `synthetic`, ...).
    pub name: String,
    /// Pixel data, `[n, c, h, w]` row-major.
    pub images: Vec<f32>,
    /// Class index per image.
    pub labels: Vec<u32>,
    /// Image shape `(c, h, w)`.
    pub shape: [usize; 3],
    /// Human-readable class names, one per class.
    pub class_names: Vec<String>,
    /// Where the data came from.
    pub source: DataSource,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Values per image, `c * h * w`.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The pixels of image `i`, `[c, h, w]` row-major.
    pub fn image(&self, i: usize) -> &[f32] {
        let d = self.image_len();
        &self.images[i * d..(i + 1) * d]
    }

    /// Number of images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// A new data set holding the images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let d = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * d);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            name: self.name.clone(),
            images,
            labels,
            shape: self.shape,
            class_names: self.class_names.clone(),
            source: self.source.clone(),
        }
    }
}
