//! Locks on a run folder. They are advisory file locks held by the
//! operating system (`flock` on Unix), so the system releases them when
//! the holding process ends, however it ends (a kill, a crash, a cancelled
//! cluster job): a stopped run never blocks the next one.
//!
//! - `run.lock`: a study without `--shard` and `cascade merge` hold it
//!   exclusively; the shards of a sharded run hold it shared, so they run
//!   side by side while an unsharded run or a merge on the same folder is
//!   refused (never two writers of one results file).
//! - `results.shard-i-of-n.lock`: held by shard i while it runs (the same
//!   shard started twice is refused).
//! - `cascade.lock`: whoever pretrains the cascade holds it; others wait
//!   for it (the shards of one run started together).
//!
//! The lock files stay in the folder; only the lock on them matters. On a
//! shared file system the locks need `flock` support (NFS has it; Lustre
//! only when mounted with `-o flock`).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The run-level lock file of a run folder.
pub const RUN_LOCK: &str = "run.lock";

/// The pretraining lock file of a run folder.
pub const CASCADE_LOCK: &str = "cascade.lock";

/// How a run folder is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The only writer (an unsharded study, a merge).
    Exclusive,
    /// One of several shards of one sharded run.
    Shared,
}

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct FolderLock {
    file: File,
    path: PathBuf,
}

impl FolderLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Writes this process's id into an exclusively held lock file, so a
/// refused process can say who holds it.
fn stamp(file: &mut File) {
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(file, "{}", std::process::id());
    let _ = file.flush();
}

fn holder(path: &Path) -> String {
    let mut text = String::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    match text.trim().parse::<u32>() {
        Ok(pid) => format!("process {pid}"),
        Err(_) => "another process".to_string(),
    }
}

/// Takes the run lock of `run` without waiting. Refused, with an error
/// naming the folder, when another process holds it in a conflicting way.
pub fn lock_run(run: &Path, access: Access) -> Result<FolderLock> {
    let what = match access {
        Access::Exclusive => "a study, its shards or a merge",
        Access::Shared => "an unsharded study or a merge",
    };
    try_lock(run, &run.join(RUN_LOCK), access, what)
}

/// Takes the lock of one shard's results file (`results.shard-i-of-n.csv`
/// gets `results.shard-i-of-n.lock`) without waiting: the same shard
/// started twice (resubmitted while it still runs) is refused.
pub fn lock_shard(run: &Path, shard_file: &str) -> Result<FolderLock> {
    let stem = shard_file.strip_suffix(".csv").unwrap_or(shard_file);
    let path = run.join(format!("{stem}.lock"));
    try_lock(run, &path, Access::Exclusive, "this shard")
}

fn try_lock(run: &Path, path: &Path, access: Access, what: &str) -> Result<FolderLock> {
    let path = path.to_path_buf();
    let mut file = open(&path)?;
    let got = match access {
        Access::Exclusive => file.try_lock(),
        Access::Shared => file.try_lock_shared(),
    };
    match got {
        Ok(()) => {
            if access == Access::Exclusive {
                stamp(&mut file);
            }
            Ok(FolderLock { file, path })
        }
        Err(TryLockError::WouldBlock) => Err(Error::Busy {
            path: run.to_path_buf(),
            msg: format!(
                "{} is writing to this run folder ({what}); wait for it to finish, or use another --out",
                holder(&path),
            ),
        }),
        Err(TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// Takes the exclusive lock file `path`, waiting for its holder if there is
/// one (`on_wait` is called once, before waiting).
pub fn lock_waiting(path: &Path, on_wait: impl FnOnce()) -> Result<FolderLock> {
    let mut file = open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            on_wait();
            file.lock().map_err(|e| Error::io(path, e))?;
        }
        Err(TryLockError::Error(e)) => return Err(Error::io(path, e)),
    }
    stamp(&mut file);
    Ok(FolderLock {
        file,
        path: path.to_path_buf(),
    })
}

/// Whether `name` is a temporary file or staging folder of an atomic write
/// (`.NAME.PID.tmp`, `.NAME.PID-N.tmp.EXT` for figures, `.NAME.PID@HOST.tmp`
/// for a folder being built; see [`cascade_rl::folder::temp_owner`]).
pub fn is_temp_name(name: &str) -> bool {
    cascade_rl::folder::temp_owner(name).is_some()
}

/// Removes the temporary files and staging folders that killed processes
/// left under `dir` (recursively; a staging folder goes whole). Call it
/// only while holding the run lock exclusively: nobody else, on this host
/// or another sharing the folder, is writing. Returns how many were
/// removed.
pub fn remove_leftover_temps(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&d, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let kind = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            let temp = is_temp_name(&entry.file_name().to_string_lossy());
            let path = entry.path();
            let gone = match (kind.is_dir(), temp) {
                (true, true) => std::fs::remove_dir_all(&path),
                (true, false) => {
                    stack.push(path);
                    continue;
                }
                (false, true) if kind.is_file() => std::fs::remove_file(&path),
                _ => continue,
            };
            match gone {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }
    Ok(removed)
}

/// Removes the leftovers of killed processes from the run folder `run`
/// when no one is writing to it: takes the run lock exclusively without
/// waiting and, if it got it, clears what [`remove_leftover_temps`] clears.
/// While a study, a shard or a merge holds the folder nothing is removed
/// (their own temporaries are in use) and `None` is returned.
pub fn clear_leftovers_if_idle(run: &Path) -> Result<Option<usize>> {
    match lock_run(run, Access::Exclusive) {
        Ok(_held) => Ok(Some(remove_leftover_temps(run)?)),
        Err(Error::Busy { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exclusive_lock_refuses_a_second_holder_and_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_run(dir.path(), Access::Exclusive).unwrap();
        for access in [Access::Exclusive, Access::Shared] {
            let err = lock_run(dir.path(), access).unwrap_err().to_string();
            assert!(err.contains("is writing to this run folder"), "{err}");
            assert!(
                err.contains(&format!("process {}", std::process::id())),
                "{err}"
            );
        }
        drop(first);
        let _again = lock_run(dir.path(), Access::Exclusive).unwrap();
    }

    #[test]
    fn shards_share_the_lock_and_keep_out_an_exclusive_writer() {
        let dir = tempfile::tempdir().unwrap();
        let a = lock_run(dir.path(), Access::Shared).unwrap();
        let b = lock_run(dir.path(), Access::Shared).unwrap();
        assert!(lock_run(dir.path(), Access::Exclusive).is_err());
        drop((a, b));
        assert!(lock_run(dir.path(), Access::Exclusive).is_ok());
    }

    #[test]
    fn one_shard_runs_once() {
        let dir = tempfile::tempdir().unwrap();
        let _run = lock_run(dir.path(), Access::Shared).unwrap();
        let a = lock_shard(dir.path(), "results.shard-1-of-3.csv").unwrap();
        assert!(dir.path().join("results.shard-1-of-3.lock").exists());
        let err = lock_shard(dir.path(), "results.shard-1-of-3.csv").unwrap_err();
        assert!(err.to_string().contains("(this shard)"), "{err}");
        let _b = lock_shard(dir.path(), "results.shard-2-of-3.csv").unwrap();
        drop(a);
        assert!(lock_shard(dir.path(), "results.shard-1-of-3.csv").is_ok());
    }

    #[test]
    fn leftovers_are_cleared_only_when_no_one_writes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("figures")).unwrap();
        let left = ["figures/.pareto.png.9-1.tmp.png", ".results.csv.9.tmp"];
        for name in left {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let writer = lock_run(dir.path(), Access::Shared).unwrap();
        assert_eq!(clear_leftovers_if_idle(dir.path()).unwrap(), None);
        assert!(dir.path().join(left[0]).exists());
        drop(writer);
        assert_eq!(clear_leftovers_if_idle(dir.path()).unwrap(), Some(2));
        for name in left {
            assert!(!dir.path().join(name).exists(), "{name}");
        }
    }

    #[test]
    fn waiting_lock_is_taken_at_once_when_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CASCADE_LOCK);
        let mut waited = false;
        let lock = lock_waiting(&path, || waited = true).unwrap();
        assert!(!waited);
        assert_eq!(lock.path(), path);
    }

    #[test]
    fn leftover_temps_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("agents/x");
        std::fs::create_dir_all(&sub).unwrap();
        for name in [
            ".results.csv.123.tmp",
            "agents/x/.policy.safetensors.9.tmp",
            "figures-.pareto.png.5-1.tmp.png",
            ".pareto.png.5-1.tmp.png",
            "results.csv",
            "run.lock",
            ".hidden",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let staging = ".cascade.77@node1.tmp";
        std::fs::create_dir_all(dir.path().join(staging).join("sub")).unwrap();
        std::fs::write(
            dir.path().join(staging).join("sub/stage1.safetensors"),
            b"x",
        )
        .unwrap();
        assert_eq!(remove_leftover_temps(dir.path()).unwrap(), 4);
        assert!(!dir.path().join(staging).exists());
        for kept in [
            "results.csv",
            "run.lock",
            ".hidden",
            "figures-.pareto.png.5-1.tmp.png",
        ] {
            assert!(dir.path().join(kept).exists(), "{kept}");
        }
    }
}
