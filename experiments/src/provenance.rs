//! Content hashes: what a derived file was made from, recorded in it and
//! checked when it is used.
//!
//! - A run folder's traces (`traces/*.trace`) are stamped in
//!   `traces/fingerprint.txt` with the hash of the cascade they were
//!   recorded from and the hash of each trace file; a trace whose bytes no
//!   longer match is recorded again by a study and refused by `cascade
//!   plot`.
//! - `cascade train` records the hash of the cascade an agent was trained
//!   on (`train_args.json`); `cascade eval` refuses another cascade and
//!   records in `eval_SPLIT.json` which agent and cascade it evaluated
//!   ([`cascade_agents::Evaluated`]); `cascade paired` refuses an
//!   evaluation of an agent folder whose agent has changed since.
//!
//! The hash is 64-bit FNV-1a over the files' bytes, in a fixed order, as
//! 16 hex digits: it detects any change of a single byte, not tampering
//! by an adversary.

use std::collections::BTreeMap;
use std::path::Path;

use cascade_agents::agent::AGENT_FILE;
use cascade_rl::checkpoint::{read_manifest, MANIFEST_FILE};

use crate::error::{Error, Result};

pub use cascade_rl::hash::Hasher;

/// The hash of one file's bytes.
pub fn file_hash(path: &Path) -> Result<String> {
    Ok(cascade_rl::hash::file_hash(path)?)
}

/// The hash of the cascade in `dir`: its manifest, then every stage file
/// it lists, in stage order.
pub fn cascade_hash(dir: &Path) -> Result<String> {
    let m = read_manifest(dir)?;
    let mut h = Hasher::default();
    h.feed_file(&dir.join(MANIFEST_FILE))?;
    for s in &m.stages {
        h.feed_file(&dir.join(&s.file))?;
    }
    Ok(h.hex())
}

/// The hash of the agent saved in `dir`: `agent.json`, its weight files
/// (`*.safetensors`, by name) and, for a jointly trained agent, the hash
/// of its own classifiers (`cascade/`).
pub fn agent_hash(dir: &Path) -> Result<String> {
    let mut h = Hasher::default();
    h.feed_file(&dir.join(AGENT_FILE))?;
    let mut weights: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    weights.sort();
    for w in &weights {
        h.feed(w.file_name().map_or(&[][..], |n| n.as_encoded_bytes()));
        h.feed_file(w)?;
    }
    let own = dir.join("cascade");
    if own.join(MANIFEST_FILE).is_file() {
        h.feed(cascade_hash(&own)?.as_bytes());
    }
    Ok(h.hex())
}

/// The stamp of a run folder's traces: the cascade they were recorded
/// from and each trace file's hash (`traces/fingerprint.txt`: the cascade
/// hash on the first line, then `NAME HASH` per file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceStamp {
    /// Hash of the cascade the traces were recorded from.
    pub cascade: String,
    /// Hash of each trace file, by file name.
    pub files: BTreeMap<String, String>,
}

/// The stamp's file name in the traces folder.
pub const TRACE_STAMP_FILE: &str = "fingerprint.txt";

impl TraceStamp {
    /// Reads `traces/fingerprint.txt`; `None` when absent or unreadable.
    pub fn read(traces: &Path) -> Option<TraceStamp> {
        let text = std::fs::read_to_string(traces.join(TRACE_STAMP_FILE)).ok()?;
        let mut lines = text.lines();
        let cascade = lines.next()?.trim().to_string();
        let mut files = BTreeMap::new();
        for l in lines {
            let mut parts = l.split_whitespace();
            if let (Some(name), Some(hash)) = (parts.next(), parts.next()) {
                files.insert(name.to_string(), hash.to_string());
            }
        }
        Some(TraceStamp { cascade, files })
    }

    /// Writes `traces/fingerprint.txt` atomically.
    pub fn write(&self, traces: &Path) -> Result<()> {
        let mut text = format!("{}\n", self.cascade);
        for (name, hash) in &self.files {
            text.push_str(&format!("{name} {hash}\n"));
        }
        crate::error::write_file(&traces.join(TRACE_STAMP_FILE), text.as_bytes())
    }

    /// Checks the trace file `traces/name` against its recorded hash:
    /// refused when the stamp records none or another.
    pub fn verify(&self, traces: &Path, name: &str) -> Result<()> {
        let path = traces.join(name);
        let Some(want) = self.files.get(name) else {
            return Err(Error::run_file(
                &path,
                format!(
                    "{} records no content hash for it (recorded by an older build or by hand); \
                     delete the traces folder and rerun the study to record it again",
                    traces.join(TRACE_STAMP_FILE).display()
                ),
            ));
        };
        let have = file_hash(&path)?;
        if &have != want {
            return Err(Error::run_file(
                &path,
                format!(
                    "its content (hash {have}) is not what was recorded (hash {want}): the file \
                     changed after it was written; delete it and rerun the study to record it again"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_flipped_bit_changes_the_hash_and_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("test.trace");
        let mut bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(&p, &bytes).unwrap();
        let mut stamp = TraceStamp {
            cascade: "c".into(),
            ..Default::default()
        };
        stamp
            .files
            .insert("test.trace".into(), file_hash(&p).unwrap());
        stamp.write(dir.path()).unwrap();
        let back = TraceStamp::read(dir.path()).unwrap();
        assert_eq!(back, stamp);
        back.verify(dir.path(), "test.trace").unwrap();
        for i in [0, 1000, 4095] {
            bytes[i] ^= 0x10;
            std::fs::write(&p, &bytes).unwrap();
            let e = back
                .verify(dir.path(), "test.trace")
                .unwrap_err()
                .to_string();
            assert!(e.contains("is not what was recorded"), "{e}");
            bytes[i] ^= 0x10;
        }
        let e = back
            .verify(dir.path(), "val.trace")
            .unwrap_err()
            .to_string();
        assert!(e.contains("records no content hash"), "{e}");
    }
}
