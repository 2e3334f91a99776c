//! The CIFAR-10 and CIFAR-100 binary batch format.
//!
//! CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1.bin` .. `data_batch_5.bin`
//! and `test_batch.bin`, records of 1 label byte + 3072 pixel bytes (1024 red,
//! 1024 green, 1024 blue, each 32x32 row-major); class names in
//! `batches.meta.txt`. CIFAR-100 (`cifar-100-binary/`): `train.bin` and
//! `test.bin`, records of 1 coarse-label byte, 1 fine-label byte and 3072
//! pixel bytes; fine class names in `fine_label_names.txt`. We use the fine
//! labels.

use std::path::{Path, PathBuf};

use super::{DataSource, Dataset};
use crate::error::{Error, Result};

const PIXELS: usize = 3 * 32 * 32;

/// The CIFAR-10 class names, used when `batches.meta.txt` is absent.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Parses the records of one batch file, appending to `images` and `labels`.
fn read_batch(
    path: &Path,
    label_bytes: usize,
    num_classes: usize,
    images: &mut Vec<f32>,
    labels: &mut Vec<u32>,
) -> Result<()> {
    let bytes = super::idx::read_maybe_gz(path)?;
    let record = label_bytes + PIXELS;
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(Error::bad_data(
            path,
            format!(
                "{} bytes is not a whole number of {record}-byte CIFAR records \
                 ({label_bytes} label byte(s) + {PIXELS} pixels)",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / record;
    images.reserve(n * PIXELS);
    labels.reserve(n);
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        // The fine label is the last label byte.
        let label = rec[label_bytes - 1] as usize;
        if label >= num_classes {
            return Err(Error::bad_data(
                path,
                format!("label {label} in record {i} is out of range for {num_classes} classes"),
            ));
        }
        labels.push(label as u32);
        images.extend(rec[label_bytes..].iter().map(|&b| b as f32 / 255.0));
    }
    Ok(())
}

/// Reads class names, one per line, when the file is there and has the
/// right count; else the fallback (or `class-i`).
fn class_names(path: &Path, count: usize, fallback: Option<&[&str]>) -> Vec<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let names: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if names.len() == count {
            return names;
        }
    }
    match fallback {
        Some(f) => f.iter().map(|s| s.to_string()).collect(),
        None => (0..count).map(|i| format!("class-{i}")).collect(),
    }
}

fn load(
    dir: &Path,
    name: &str,
    files: &[PathBuf],
    label_bytes: usize,
    classes: Vec<String>,
) -> Result<Dataset> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        if !f.is_file() {
            return Err(Error::DataNotFound(format!(
                "{}: missing CIFAR batch file",
                f.display()
            )));
        }
        read_batch(f, label_bytes, classes.len(), &mut images, &mut labels)?;
    }
    Ok(Dataset {
        name: name.to_string(),
        images,
        labels,
        shape: [3, 32, 32],
        class_names: classes,
        source: DataSource::Files {
            dir: dir.to_path_buf(),
        },
    })
}

/// Loads CIFAR-10 from a `cifar-10-batches-bin` folder: `(train, test)`.
pub fn load_cifar10(dir: &Path) -> Result<(Dataset, Dataset)> {
    let classes = class_names(&dir.join("batches.meta.txt"), 10, Some(&CIFAR10_CLASSES));
    let train: Vec<PathBuf> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .collect();
    let train = load(dir, "cifar10", &train, 1, classes.clone())?;
    let test = load(dir, "cifar10", &[dir.join("test_batch.bin")], 1, classes)?;
    Ok((train, test))
}

/// Loads CIFAR-100 (fine labels) from a `cifar-100-binary` folder:
/// `(train, test)`.
pub fn load_cifar100(dir: &Path) -> Result<(Dataset, Dataset)> {
    let classes = class_names(&dir.join("fine_label_names.txt"), 100, None);
    let train = load(
        dir,
        "cifar100",
        &[dir.join("train.bin")],
        2,
        classes.clone(),
    )?;
    let test = load(dir, "cifar100", &[dir.join("test.bin")], 2, classes)?;
    Ok((train, test))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One CIFAR-10 record with `label` and a pixel ramp.
    pub(crate) fn record10(label: u8, seed: u8) -> Vec<u8> {
        let mut r = vec![label];
        r.extend((0..PIXELS).map(|i| (i as u8).wrapping_add(seed)));
        r
    }

    /// Writes a complete CIFAR-10 folder with `per_batch` records per file.
    pub(crate) fn write_cifar10(dir: &Path, per_batch: usize) {
        for i in 1..=5 {
            let bytes: Vec<u8> = (0..per_batch)
                .flat_map(|j| record10(((i + j) % 10) as u8, j as u8))
                .collect();
            std::fs::write(dir.join(format!("data_batch_{i}.bin")), bytes).unwrap();
        }
        let bytes: Vec<u8> = (0..per_batch)
            .flat_map(|j| record10(j as u8 % 10, 0))
            .collect();
        std::fs::write(dir.join("test_batch.bin"), bytes).unwrap();
        std::fs::write(
            dir.join("batches.meta.txt"),
            CIFAR10_CLASSES.join("\n") + "\n\n",
        )
        .unwrap();
    }

    #[test]
    fn reads_cifar10_batches() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar10(dir.path(), 4);
        let (train, test) = load_cifar10(dir.path()).unwrap();
        assert_eq!(train.len(), 20);
        assert_eq!(test.len(), 4);
        assert_eq!(train.shape, [3, 32, 32]);
        assert_eq!(train.labels[..4], [1, 2, 3, 4]);
        assert_eq!(train.class_names[9], "truck");
        // Channel-planar layout: pixel 1024 is the first green value.
        assert_eq!(test.image(1)[1024], (1024usize % 256) as f32 / 255.0);
    }

    #[test]
    fn reads_cifar100_fine_labels() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |coarse: u8, fine: u8| {
            let mut r = vec![coarse, fine];
            r.extend(std::iter::repeat_n(7u8, PIXELS));
            r
        };
        let train: Vec<u8> = [rec(3, 99), rec(0, 42)].concat();
        std::fs::write(dir.path().join("train.bin"), train).unwrap();
        std::fs::write(dir.path().join("test.bin"), rec(1, 5)).unwrap();
        let (train, test) = load_cifar100(dir.path()).unwrap();
        assert_eq!(train.labels, vec![99, 42]);
        assert_eq!(test.labels, vec![5]);
        assert_eq!(train.num_classes(), 100);
    }

    #[test]
    fn wrong_record_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar10(dir.path(), 2);
        let mut bytes = record10(1, 0);
        bytes.pop();
        std::fs::write(dir.path().join("data_batch_3.bin"), bytes).unwrap();
        let e = load_cifar10(dir.path()).unwrap_err().to_string();
        assert!(e.contains("data_batch_3.bin"), "{e}");
        assert!(
            e.contains("not a whole number of 3073-byte CIFAR records"),
            "{e}"
        );
    }

    #[test]
    fn cifar_label_out_of_range_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar10(dir.path(), 2);
        std::fs::write(dir.path().join("test_batch.bin"), record10(10, 0)).unwrap();
        let e = load_cifar10(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("label 10 in record 0 is out of range for 10 classes"),
            "{e}"
        );
    }

    #[test]
    fn missing_batch_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar10(dir.path(), 1);
        std::fs::remove_file(dir.path().join("data_batch_5.bin")).unwrap();
        let e = load_cifar10(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("data_batch_5.bin: missing CIFAR batch file"),
            "{e}"
        );
    }
}
