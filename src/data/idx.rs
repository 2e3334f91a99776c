//! The IDX format of MNIST, Fashion-MNIST and KMNIST, plain or gzipped.
//!
//! Layout (big-endian): magic `0x00 0x00 dtype ndim`, then `ndim` u32 sizes,
//! then the data. Images are `dtype = 0x08` (u8), `ndim = 3` (n, h, w);
//! labels are u8 with `ndim = 1`.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DataSource, Dataset};
use crate::error::{Error, Result};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Reads a whole file, gunzipping it when it is gzip-compressed (by
/// content, not by name).
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::bad_data(path, format!("unreadable gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks the magic number and the header, returning the sizes and the
/// data payload.
fn parse_header<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    what: &str,
) -> Result<(Vec<usize>, &'a [u8])> {
    if bytes.len() < 4 {
        return Err(Error::bad_data(
            path,
            format!(
                "truncated IDX {what} file: {} bytes, no header",
                bytes.len()
            ),
        ));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(Error::bad_data(
            path,
            format!(
                "wrong magic number 0x{found:08x} for an IDX {what} file (expected 0x{magic:08x})"
            ),
        ));
    }
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(Error::bad_data(
            path,
            format!(
                "truncated IDX {what} header: {} bytes, need {header}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| be_u32(bytes, 4 + 4 * i) as usize)
        .collect();
    if let Some(i) = dims.iter().position(|&d| d == 0) {
        return Err(Error::bad_data(
            path,
            format!("IDX {what} header gives size 0 for dimension {i} ({dims:?}): nothing to read"),
        ));
    }
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::bad_data(
                path,
                format!("IDX {what} header gives sizes {dims:?}, too large to hold in memory"),
            )
        })?;
    let payload = &bytes[header..];
    if payload.len() != expected {
        let kind = if payload.len() < expected {
            "truncated"
        } else {
            "oversized"
        };
        return Err(Error::bad_data(
            path,
            format!(
                "{kind} IDX {what} file: header says {dims:?} ({expected} bytes of data), found {} bytes",
                payload.len()
            ),
        ));
    }
    Ok((dims, payload))
}

/// Reads an IDX image file into `(n, h, w, pixels in [0, 1])`.
pub fn read_idx_images(path: &Path) -> Result<(usize, usize, usize, Vec<f32>)> {
    let bytes = read_maybe_gz(path)?;
    let (dims, payload) = parse_header(path, &bytes, IMAGES_MAGIC, "image")?;
    let pixels = payload.iter().map(|&b| b as f32 / 255.0).collect();
    Ok((dims[0], dims[1], dims[2], pixels))
}

/// Reads an IDX label file, checking every label is below `num_classes`.
pub fn read_idx_labels(path: &Path, num_classes: usize) -> Result<Vec<u32>> {
    let bytes = read_maybe_gz(path)?;
    let (_, payload) = parse_header(path, &bytes, LABELS_MAGIC, "label")?;
    if let Some((i, &l)) = payload
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= num_classes)
    {
        return Err(Error::bad_data(
            path,
            format!("label {l} at index {i} is out of range for {num_classes} classes"),
        ));
    }
    Ok(payload.iter().map(|&l| l as u32).collect())
}

/// Finds `stem` or `stem.gz` in `dir`.
pub(crate) fn find_file(dir: &Path, stems: &[&str]) -> Result<PathBuf> {
    for stem in stems {
        for name in [stem.to_string(), format!("{stem}.gz")] {
            let p = dir.join(&name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(Error::DataNotFound(format!(
        "{}: none of {} (plain or .gz) is there",
        dir.display(),
        stems.join(", ")
    )))
}

/// Loads one split (`"train"` or `"t10k"`) of an IDX data set from `dir`.
pub fn load_idx_dataset(
    dir: &Path,
    name: &str,
    split: &str,
    class_names: &[&str],
) -> Result<Dataset> {
    let images_path = find_file(
        dir,
        &[
            &format!("{split}-images-idx3-ubyte"),
            &format!("{split}-images.idx3-ubyte"),
        ],
    )?;
    let labels_path = find_file(
        dir,
        &[
            &format!("{split}-labels-idx1-ubyte"),
            &format!("{split}-labels.idx1-ubyte"),
        ],
    )?;
    let (n, h, w, images) = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path, class_names.len())?;
    if labels.len() != n {
        return Err(Error::bad_data(
            &labels_path,
            format!(
                "{} labels but {} has {n} images",
                labels.len(),
                images_path.display()
            ),
        ));
    }
    Ok(Dataset {
        name: name.to_string(),
        images,
        labels,
        shape: [1, h, w],
        class_names: class_names.iter().map(|s| s.to_string()).collect(),
        source: DataSource::Files {
            dir: dir.to_path_buf(),
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Bytes of an IDX image file with `n` images of `h x w`.
    pub(crate) fn idx_images(n: usize, h: usize, w: usize) -> Vec<u8> {
        let mut b = IMAGES_MAGIC.to_be_bytes().to_vec();
        for d in [n, h, w] {
            b.extend((d as u32).to_be_bytes());
        }
        b.extend((0..n * h * w).map(|i| (i % 256) as u8));
        b
    }

    /// Bytes of an IDX label file.
    pub(crate) fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut b = LABELS_MAGIC.to_be_bytes().to_vec();
        b.extend((labels.len() as u32).to_be_bytes());
        b.extend(labels);
        b
    }

    pub(crate) fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    const NAMES: [&str; 3] = ["a", "b", "c"];

    #[test]
    fn reads_plain_and_gz_identically() {
        let dir = tempfile::tempdir().unwrap();
        let plain = write(dir.path(), "i", &idx_images(2, 3, 4));
        let zipped = write(dir.path(), "i.gz", &gz(&idx_images(2, 3, 4)));
        let (n, h, w, a) = read_idx_images(&plain).unwrap();
        let (_, _, _, b) = read_idx_images(&zipped).unwrap();
        assert_eq!((n, h, w), (2, 3, 4));
        assert_eq!(a, b);
        assert_eq!(a[5], 5.0 / 255.0);
    }

    #[test]
    fn loads_a_split_from_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "train-images-idx3-ubyte.gz",
            &gz(&idx_images(3, 2, 2)),
        );
        write(
            dir.path(),
            "train-labels-idx1-ubyte",
            &idx_labels(&[2, 0, 1]),
        );
        let ds = load_idx_dataset(dir.path(), "toy", "train", &NAMES).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.shape, [1, 2, 2]);
        assert_eq!(ds.labels, vec![2, 0, 1]);
        assert_eq!(ds.class_counts(), vec![1, 1, 1]);
    }

    fn err_text(r: Result<impl std::fmt::Debug>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn wrong_magic_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "x", &idx_labels(&[0, 1]));
        let e = err_text(read_idx_images(&p));
        assert!(e.contains("wrong magic number 0x00000801"), "{e}");
        assert!(e.contains(&p.display().to_string()), "{e}");
    }

    #[test]
    fn truncated_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = idx_images(4, 3, 3);
        bytes.truncate(bytes.len() - 5);
        let p = write(dir.path(), "x", &bytes);
        let e = err_text(read_idx_images(&p));
        assert!(e.contains("truncated IDX image file"), "{e}");
        let p = write(dir.path(), "y", &bytes[..6]);
        assert!(err_text(read_idx_images(&p)).contains("truncated IDX image header"));
    }

    #[test]
    fn zero_and_overflowing_sizes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let header = |dims: [u32; 3]| {
            let mut b = 0x0000_0803u32.to_be_bytes().to_vec();
            for d in dims {
                b.extend(d.to_be_bytes());
            }
            b
        };
        for (dims, says) in [
            ([0, 28, 28], "size 0 for dimension 0"),
            ([5, 28, 0], "size 0 for dimension 2"),
            ([u32::MAX, u32::MAX, u32::MAX], "too large"),
        ] {
            let p = write(dir.path(), "crafted", &header(dims));
            let e = err_text(read_idx_images(&p));
            assert!(e.contains(says) && e.contains("crafted"), "{e}");
        }
        let mut labels = 0x0000_0801u32.to_be_bytes().to_vec();
        labels.extend(0u32.to_be_bytes());
        let p = write(dir.path(), "empty-labels", &labels);
        assert!(err_text(read_idx_labels(&p, 10)).contains("size 0"));
    }

    #[test]
    fn count_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "train-images-idx3-ubyte", &idx_images(3, 2, 2));
        write(dir.path(), "train-labels-idx1-ubyte", &idx_labels(&[0, 1]));
        let e = err_text(load_idx_dataset(dir.path(), "toy", "train", &NAMES));
        assert!(e.contains("2 labels but"), "{e}");
        assert!(e.contains("has 3 images"), "{e}");
    }

    #[test]
    fn label_out_of_range_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "l", &idx_labels(&[0, 7, 1]));
        let e = err_text(read_idx_labels(&p, 3));
        assert!(
            e.contains("label 7 at index 1 is out of range for 3 classes"),
            "{e}"
        );
    }

    #[test]
    fn unreadable_gzip_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = gz(&idx_images(2, 2, 2));
        let n = bytes.len();
        bytes.truncate(n / 2);
        let p = write(dir.path(), "x.gz", &bytes);
        let e = err_text(read_idx_images(&p));
        assert!(e.contains("unreadable gzip data"), "{e}");
    }
}
