//! Where data sets live, and which one a name means.
//!
//! Search order: an explicit `--data-dir` wins (and is the only place looked
//! at), then `$CASCADE_DATA/<name>`, then `./data/<name>`, then, for
//! Fashion-MNIST, Debian's `/usr/share/datasets/fashion-mnist` (package
//! `dataset-fashion-mnist`). CIFAR folders may hold the files directly or in
//! the archive's own subfolder (`cifar-10-batches-bin`, `cifar-100-binary`).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Debian's location of Fashion-MNIST.
pub const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The data sets this crate can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    /// Fashion-MNIST (IDX), 10 classes of 28x28 grey clothing images.
    FashionMnist,
    /// MNIST digits (IDX).
    Mnist,
    /// Kuzushiji-MNIST (IDX).
    Kmnist,
    /// CIFAR-10 (binary batches).
    Cifar10,
    /// CIFAR-100, fine labels (binary batches).
    Cifar100,
    /// The built-in synthetic set.
    Synthetic,
}

impl DatasetKind {
    /// Every kind, for help texts.
    pub const ALL: [DatasetKind; 6] = [
        DatasetKind::FashionMnist,
        DatasetKind::Mnist,
        DatasetKind::Kmnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::Synthetic,
    ];

    /// Parses a data set name (`fashion-mnist`, `fmnist`, `mnist`, `kmnist`,
    /// `cifar10`, `cifar100`, `synthetic`).
    pub fn parse(name: &str) -> Result<Self> {
        let n = name.to_ascii_lowercase().replace('_', "-");
        Ok(match n.as_str() {
            "fashion-mnist" | "fmnist" | "fashionmnist" => DatasetKind::FashionMnist,
            "mnist" => DatasetKind::Mnist,
            "kmnist" | "kuzushiji-mnist" => DatasetKind::Kmnist,
            "cifar10" | "cifar-10" => DatasetKind::Cifar10,
            "cifar100" | "cifar-100" => DatasetKind::Cifar100,
            "synthetic" => DatasetKind::Synthetic,
            _ => {
                let known: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                return Err(Error::Config(format!(
                    "unknown data set '{name}'; known: {}",
                    known.join(", ")
                )));
            }
        })
    }

    /// The canonical name, also the folder name looked for.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Kmnist => "kmnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::Synthetic => "synthetic",
        }
    }

    /// Class names of the IDX data sets.
    pub(crate) fn idx_class_names(self) -> &'static [&'static str] {
        match self {
            DatasetKind::FashionMnist => &[
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
            DatasetKind::Kmnist => &["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
            _ => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        }
    }

    /// True when `dir` holds this data set's training files.
    fn present_in(self, dir: &Path) -> Option<PathBuf> {
        let has =
            |d: &Path, stem: &str| d.join(stem).is_file() || d.join(format!("{stem}.gz")).is_file();
        match self {
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
                let (sub, probe) = if self == DatasetKind::Cifar10 {
                    ("cifar-10-batches-bin", "data_batch_1.bin")
                } else {
                    ("cifar-100-binary", "train.bin")
                };
                [dir.to_path_buf(), dir.join(sub)]
                    .into_iter()
                    .find(|d| d.join(probe).is_file())
            }
            DatasetKind::Synthetic => None,
            _ => (has(dir, "train-images-idx3-ubyte") || has(dir, "train-images.idx3-ubyte"))
                .then(|| dir.to_path_buf()),
        }
    }

    /// How to get the data, for the not-found message.
    fn how_to_get(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => {
                "install Debian's package `dataset-fashion-mnist` (apt-get install dataset-fashion-mnist), \
                 or download the four IDX files from the Fashion-MNIST project page (zalandoresearch)"
            }
            DatasetKind::Mnist => "download the four IDX files from the MNIST database page (LeCun, Cortes, Burges)",
            DatasetKind::Kmnist => "download the four IDX files from the Kuzushiji-MNIST (KMNIST) project page",
            DatasetKind::Cifar10 => {
                "download the \"CIFAR-10 binary version\" from the CIFAR-10 page (Krizhevsky, University of Toronto) and unpack it"
            }
            DatasetKind::Cifar100 => {
                "download the \"CIFAR-100 binary version\" from the CIFAR page (Krizhevsky, University of Toronto) and unpack it"
            }
            DatasetKind::Synthetic => "nothing to download",
        }
    }
}

/// Finds the folder holding data set `kind`, in the documented order.
pub fn find_data_dir(kind: DatasetKind, data_dir: Option<&Path>) -> Result<PathBuf> {
    let mut looked = Vec::new();
    if let Some(d) = data_dir {
        // An explicit folder is the only place looked at; a mistyped flag
        // must not silently fall back to other data. Accept both the data
        // set's own folder and a parent holding `<name>/`.
        for cand in [d.to_path_buf(), d.join(kind.name())] {
            if let Some(found) = kind.present_in(&cand) {
                return Ok(found);
            }
            looked.push(cand);
        }
    } else {
        if let Some(root) = std::env::var_os("CASCADE_DATA") {
            looked.push(PathBuf::from(root).join(kind.name()));
        }
        looked.push(PathBuf::from("data").join(kind.name()));
        if kind == DatasetKind::FashionMnist {
            looked.push(PathBuf::from(DEBIAN_FASHION_MNIST));
        }
        for cand in &looked {
            if let Some(found) = kind.present_in(cand) {
                return Ok(found);
            }
        }
    }
    let places: Vec<String> = looked.iter().map(|p| p.display().to_string()).collect();
    Err(Error::DataNotFound(format!(
        "data set '{}' not found; looked in: {}. To get it: {}; then pass --data-dir or set CASCADE_DATA",
        kind.name(),
        places.join(", "),
        kind.how_to_get()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_refuses_unknown() {
        assert_eq!(
            DatasetKind::parse("FMNIST").unwrap(),
            DatasetKind::FashionMnist
        );
        assert_eq!(
            DatasetKind::parse("cifar-10").unwrap(),
            DatasetKind::Cifar10
        );
        let e = DatasetKind::parse("imagenet").unwrap_err().to_string();
        assert!(
            e.contains("unknown data set 'imagenet'") && e.contains("fashion-mnist"),
            "{e}"
        );
    }

    #[test]
    fn explicit_dir_wins_and_missing_data_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let e = find_data_dir(DatasetKind::Mnist, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        assert!(e.contains("MNIST database page"), "{e}");
        std::fs::create_dir(dir.path().join("mnist")).unwrap();
        std::fs::write(dir.path().join("mnist/train-images-idx3-ubyte.gz"), b"x").unwrap();
        assert_eq!(
            find_data_dir(DatasetKind::Mnist, Some(dir.path())).unwrap(),
            dir.path().join("mnist")
        );
    }

    #[test]
    fn cifar_subfolder_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("data_batch_1.bin"), b"x").unwrap();
        assert_eq!(
            find_data_dir(DatasetKind::Cifar10, Some(dir.path())).unwrap(),
            sub
        );
    }
}
