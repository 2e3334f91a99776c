//! Content hashes of files: 64-bit FNV-1a over the bytes, written as 16
//! hex digits. It changes with any single changed byte, which is what a
//! record of "the file this was made from" needs; it is not a defence
//! against a deliberate forgery.

use std::path::Path;

use crate::error::{Error, Result};

/// FNV-1a, 64 bit.
#[derive(Debug, Clone, Copy)]
pub struct Hasher(u64);

impl Default for Hasher {
    fn default() -> Self {
        Hasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher {
    /// Feeds `bytes`.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Feeds the bytes of the file `path`.
    pub fn feed_file(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        self.feed(&bytes);
        Ok(())
    }

    /// The hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The hash of `bytes`.
pub fn bytes_hash(bytes: &[u8]) -> String {
    let mut h = Hasher::default();
    h.feed(bytes);
    h.hex()
}

/// The hash of the file `path`'s bytes.
pub fn file_hash(path: &Path) -> Result<String> {
    let mut h = Hasher::default();
    h.feed_file(path)?;
    Ok(h.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_and_every_single_byte_change_is_seen() {
        // FNV-1a 64 reference values.
        assert_eq!(bytes_hash(b""), "cbf29ce484222325");
        assert_eq!(bytes_hash(b"a"), "af63dc4c8601ec8c");
        let base: Vec<u8> = (0..257u32).map(|i| (i * 31) as u8).collect();
        let h0 = bytes_hash(&base);
        for i in 0..base.len() {
            for bit in 0..8 {
                let mut b = base.clone();
                b[i] ^= 1 << bit;
                assert_ne!(bytes_hash(&b), h0, "byte {i} bit {bit}");
            }
        }
    }
}
