//! Sizes checked before anything is allocated.
//!
//! A request for more memory than a machine has (a million million samples,
//! a billion classes) must be refused with a message, not end the process in
//! the allocator. [`Buffers`] adds up the bytes of the buffers an operation
//! will allocate with checked arithmetic and compares the total with
//! [`memory_limit`]: the machine's physical memory where it can be read
//! (`/proc/meminfo` on Linux), else [`FALLBACK_LIMIT_BYTES`].

use crate::error::Error;

/// A size refused by [`Buffers::check`]: the message names the size and
/// the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TooLarge(pub String);

impl From<TooLarge> for Error {
    fn from(e: TooLarge) -> Self {
        Error::InvalidArgument(e.0)
    }
}

/// The limit used where the machine's memory cannot be read: 1 TiB.
pub const FALLBACK_LIMIT_BYTES: u64 = 1 << 40;

/// The most bytes one operation may allocate: the machine's physical
/// memory (`MemTotal` of `/proc/meminfo`), else [`FALLBACK_LIMIT_BYTES`].
pub fn memory_limit() -> u64 {
    memory_limit_and_source().0
}

fn memory_limit_and_source() -> (u64, &'static str) {
    match physical_memory() {
        Some(b) => (b, "this machine's memory"),
        None => (
            FALLBACK_LIMIT_BYTES,
            "the limit where the memory size is unknown",
        ),
    }
}

fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A byte count for messages: `512 B`, `1.5 KiB`, ..., `3.2 TiB`,
/// `4.0e6 TiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    match u {
        0 => format!("{bytes} B"),
        _ if v >= 1e5 => format!("{v:.1e} {}", UNITS[u]),
        _ => format!("{v:.1} {}", UNITS[u]),
    }
}

/// The buffers one operation allocates, added up with checked arithmetic.
///
/// ```
/// use cascade_env::size::Buffers;
/// let mut b = Buffers::new("synthetic trace");
/// b.add("labels", &[1000], 8).add("stage 1 probabilities", &[1000, 10], 4);
/// assert_eq!(b.check_against(1 << 20).unwrap(), 48_000);
/// let err = Buffers::new("synthetic trace")
///     .add("labels", &[usize::MAX, 2], 8)
///     .check_against(1 << 20)
///     .unwrap_err();
/// assert!(err.to_string().contains("overflows"));
/// ```
#[derive(Debug, Clone)]
pub struct Buffers {
    what: String,
    total: Option<u64>,
    largest: Option<(String, Vec<usize>)>,
    largest_bytes: u64,
}

impl Buffers {
    /// An empty tally for `what` (named in the error).
    pub fn new(what: impl Into<String>) -> Self {
        Buffers {
            what: what.into(),
            total: Some(0),
            largest: None,
            largest_bytes: 0,
        }
    }

    /// Adds a buffer `name` of shape `dims` with `elem_bytes` bytes per
    /// element.
    pub fn add(&mut self, name: &str, dims: &[usize], elem_bytes: usize) -> &mut Self {
        let bytes = dims
            .iter()
            .try_fold(elem_bytes as u64, |acc, &d| acc.checked_mul(d as u64));
        if bytes.is_none_or(|b| b >= self.largest_bytes) {
            self.largest = Some((name.to_string(), dims.to_vec()));
            self.largest_bytes = bytes.unwrap_or(u64::MAX);
        }
        self.total = match (self.total, bytes) {
            (Some(t), Some(b)) => t.checked_add(b),
            _ => None,
        };
        self
    }

    /// The total, refused when it overflows or exceeds [`memory_limit`].
    pub fn check(&self) -> Result<u64, TooLarge> {
        let (limit, source) = memory_limit_and_source();
        self.check_within(limit, source)
    }

    /// The total, refused when it overflows or exceeds `limit` bytes; the
    /// error names the total, the largest buffer and the limit.
    pub fn check_against(&self, limit: u64) -> Result<u64, TooLarge> {
        self.check_within(limit, "the given limit")
    }

    fn check_within(&self, limit: u64, source: &str) -> Result<u64, TooLarge> {
        let largest = match &self.largest {
            Some((name, dims)) => {
                let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
                format!(" (the largest, {name}, is [{}])", dims.join(" x "))
            }
            None => String::new(),
        };
        match self.total {
            None => Err(TooLarge(format!(
                "{}: the size of its buffers overflows 64-bit arithmetic{largest}, far more \
                 than the limit of {} ({source}); ask for fewer samples or classes",
                self.what,
                human_bytes(limit)
            ))),
            Some(t) if t > limit => Err(TooLarge(format!(
                "{}: needs {} of memory{largest}, more than the limit of {} ({source}); ask \
                 for fewer samples or classes",
                self.what,
                human_bytes(t),
                human_bytes(limit)
            ))),
            Some(t) => Ok(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_overflow_and_limits() {
        let mut b = Buffers::new("x");
        b.add("a", &[10, 10], 4).add("b", &[5], 8);
        assert_eq!(b.check_against(440).unwrap(), 440);
        let e = b.check_against(439).unwrap_err().to_string();
        assert!(e.contains("440 B") && e.contains("439 B"), "{e}");
        assert!(e.contains("the largest, a, is [10 x 10]"), "{e}");
        let e = Buffers::new("y")
            .add("huge", &[1 << 40, 1 << 40], 4)
            .check_against(u64::MAX)
            .unwrap_err()
            .to_string();
        assert!(e.contains("overflows") && e.contains("huge"), "{e}");
        // Two buffers that fit alone but overflow together.
        let e = Buffers::new("z")
            .add("p", &[1 << 62], 2)
            .add("q", &[1 << 62], 2)
            .check_against(u64::MAX)
            .unwrap_err()
            .to_string();
        assert!(e.contains("overflows"), "{e}");
        assert!(memory_limit() > 1 << 20);
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert!(human_bytes(u64::MAX).ends_with("TiB"));
    }
}
