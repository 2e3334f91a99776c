//! Output folders written as one result.
//!
//! A command that writes a folder of several files (a pretrained cascade,
//! a saved agent) writes it through [`NewFolder`]: the files go into a
//! staging folder beside the target (`.NAME.PID@HOST.tmp`), and only when
//! every file is written is the staging folder renamed to the target,
//! replacing what was there whole. A reader therefore sees the old result
//! or the new one, never a manifest beside files of another run; a process
//! killed half-way leaves only the staging folder, which the next writer of
//! that place on the same host removes ([`remove_dead_staging`]).
//!
//! A target that already holds a result (its manifest file, e.g.
//! `cascade.json`) is refused unless the caller asked to replace it
//! (`--overwrite` on the command line); a target that holds other files is
//! refused unless it belongs to the caller (a study's own agent folders).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The kind of result a folder holds, recognised by its manifest file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderKind {
    /// What the folder holds, for messages ("a pretrained cascade").
    pub what: &'static str,
    /// The file whose presence says the folder holds such a result.
    pub marker: &'static str,
}

/// A pretrained cascade (`cascade.json` and its stage files).
pub const CASCADE_FOLDER: FolderKind = FolderKind {
    what: "a pretrained cascade",
    marker: crate::checkpoint::MANIFEST_FILE,
};

/// The command-line flag that replaces an existing result.
pub const OVERWRITE_FLAG: &str = "--overwrite";

/// What may be replaced at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Only a missing or empty folder is written.
    Nothing,
    /// A folder holding a result of the same kind is replaced too (the
    /// user asked for it); a folder holding other files is still refused.
    SameKind,
    /// Whatever the folder holds is replaced: the caller owns the place
    /// (a study's agent folder inside its run folder).
    Anything,
}

/// A folder being written; see the module docs. Dropping it without
/// [`NewFolder::commit`] removes the staging folder.
#[derive(Debug)]
pub struct NewFolder {
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
}

/// `dir`'s parent, `.` for a bare name.
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The names in `dir` (at most `limit`, sorted), and whether there are more.
fn some_names(dir: &Path, limit: usize) -> Result<(Vec<String>, bool)> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let more = names.len() > limit;
    names.truncate(limit);
    Ok((names, more))
}

/// Refuses a path that is not valid UTF-8 (result files and figures name
/// their folders in text), naming it.
pub fn check_utf8(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| Error::Folder {
        path: path.to_path_buf(),
        msg: "the path is not valid UTF-8; choose a path in UTF-8".into(),
    })
}

/// Checks that `path` can be an output folder: valid UTF-8, and a folder
/// if it exists (a regular file is refused as "not a folder").
pub fn check_output_folder(path: &Path) -> Result<()> {
    check_utf8(path)?;
    match fs::metadata(path) {
        Ok(m) if !m.is_dir() => Err(Error::Folder {
            path: path.to_path_buf(),
            msg: "not a folder (it is a file); choose a folder for the output".into(),
        }),
        _ => Ok(()),
    }
}

impl NewFolder {
    /// Starts writing the folder `target`, holding a result of `kind`.
    ///
    /// Refused, before anything is written: a `target` that is not valid
    /// UTF-8 or exists as a file; a folder holding a result of `kind`
    /// unless `replace` allows it (the message names [`OVERWRITE_FLAG`]);
    /// a folder holding other files unless `replace` is
    /// [`Replace::Anything`]. Staging folders that killed processes left
    /// beside `target` are removed first.
    pub fn begin(target: &Path, kind: FolderKind, replace: Replace) -> Result<NewFolder> {
        check_output_folder(target)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::Config(format!(
                    "{}: an output folder needs a name (not `..` or a root)",
                    target.display()
                ))
            })?;
        if target.is_dir() {
            let (names, more) = some_names(target, 5)?;
            if !names.is_empty() {
                let holds_result = target.join(kind.marker).is_file();
                let allowed = match replace {
                    Replace::Nothing => false,
                    Replace::SameKind => holds_result,
                    Replace::Anything => true,
                };
                if !allowed {
                    let msg = if holds_result {
                        format!(
                            "already holds {} ({}); choose another folder, or pass \
                             {OVERWRITE_FLAG} to replace it",
                            kind.what, kind.marker
                        )
                    } else {
                        format!(
                            "is not empty and holds no {} ({}{}); choose an empty or new folder",
                            kind.marker,
                            names.join(", "),
                            if more { ", ..." } else { "" }
                        )
                    };
                    return Err(Error::Folder {
                        path: target.to_path_buf(),
                        msg,
                    });
                }
            }
        }
        let parent = parent_of(target);
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        remove_dead_staging(&parent, &name)?;
        let staging = parent.join(format!(".{name}.{}@{}.tmp", std::process::id(), host_tag()));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        }
        fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
        Ok(NewFolder {
            target: target.to_path_buf(),
            staging,
            committed: false,
        })
    }

    /// Where the files go until [`NewFolder::commit`].
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The folder the result will be.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Swaps the staging folder in as the target: the old target (if any)
    /// is moved aside, the new one renamed into place, the old one removed.
    /// Another process that swaps in the same target at the same moment
    /// (shards building one agent) makes this one try again: the last
    /// swap wins, whole.
    pub fn commit(mut self) -> Result<PathBuf> {
        let target = self.target.clone();
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let old =
                parent_of(&target).join(format!(".{name}.{}-old{attempt}.tmp", std::process::id()));
            let moved = match fs::rename(&target, &old) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(Error::io(&target, e)),
            };
            match fs::rename(&self.staging, &target) {
                Ok(()) => {
                    if moved {
                        fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
                    }
                    self.committed = true;
                    return Ok(target);
                }
                Err(e) => {
                    // Put the old result back unless another has taken
                    // its place meanwhile.
                    if moved && fs::rename(&old, &target).is_err() {
                        let _ = fs::remove_dir_all(&old);
                    }
                    if attempt >= 5 || !target.exists() {
                        return Err(Error::io(&target, e));
                    }
                }
            }
        }
    }

    /// Renames the staging folder in as the target only where the target
    /// is missing or empty; where another writer has put a result there
    /// meanwhile, that one is kept and the staging folder removed. The
    /// check and the rename are one step (renaming a folder onto a folder
    /// that holds files fails). Returns the target when this one was
    /// committed, `None` when the other was kept. For a result that any
    /// writer computes alike, which one may hold more files (a shard's
    /// start agent beside the unit that also evaluates it).
    pub fn commit_unless_taken(mut self) -> Result<Option<PathBuf>> {
        match fs::rename(&self.staging, &self.target) {
            Ok(()) => {
                self.committed = true;
                Ok(Some(self.target.clone()))
            }
            Err(e) => {
                let taken = fs::read_dir(&self.target).is_ok_and(|mut d| d.next().is_some());
                if taken {
                    Ok(None)
                } else {
                    Err(Error::io(&self.target, e))
                }
            }
        }
    }
}

impl Drop for NewFolder {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// The writer named in a temporary file or folder of an atomic write:
/// `.NAME.PID.tmp`, `.NAME.PID-N.tmp.EXT` (figures), or this module's
/// staging folders `.NAME.PID@HOST.tmp` and `.NAME.PID@HOST-oldN.tmp` (a
/// replaced folder). `None` for other names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempOwner {
    /// The writer's process id.
    pub pid: u32,
    /// The writer's host, where the name records it.
    pub host: Option<String>,
}

/// The writer of the temporary `name` (see [`TempOwner`]).
pub fn temp_owner(name: &str) -> Option<TempOwner> {
    let rest = name.strip_prefix('.')?;
    let end = rest.rfind(".tmp")?;
    let tail = &rest[end + 4..];
    if !(tail.is_empty() || tail.starts_with('.')) {
        return None;
    }
    let stem = &rest[..end];
    let id = &stem[stem.rfind('.')? + 1..];
    let id = id.split('-').next()?;
    let (pid, host) = match id.split_once('@') {
        Some((pid, host)) => (pid, Some(host.to_string())),
        None => (id, None),
    };
    Some(TempOwner {
        pid: pid.parse().ok()?,
        host,
    })
}

/// This machine's name as staging folders record it (letters and digits
/// only), empty where it cannot be read.
pub fn host_tag() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    raw.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(32)
        .collect()
}

/// Whether the writer `owner` may still be running: true for this
/// process, for a writer on another host (a shared file system: its
/// processes cannot be seen from here), and where the system does not
/// say; on Linux, whether `/proc/PID` exists.
pub fn process_alive(owner: &TempOwner) -> bool {
    if owner.pid == std::process::id() {
        return true;
    }
    if owner.host.as_ref().is_some_and(|h| *h != host_tag()) {
        return true;
    }
    let proc_root = Path::new("/proc");
    if cfg!(target_os = "linux") && proc_root.join("self").exists() {
        return proc_root.join(owner.pid.to_string()).exists();
    }
    true
}

/// Removes, directly in `dir`, the staging folders named `name` that
/// processes of this host left when they died (see [`process_alive`]):
/// safe while other processes, here or on other hosts, build the same
/// folder. Returns how many were removed.
pub fn remove_dead_staging(dir: &Path, name: &str) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let prefix = format!(".{name}.");
    let mut removed = 0;
    for entry in entries.flatten() {
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = temp_owner(&entry_name) else {
            continue;
        };
        if !entry_name.starts_with(&prefix) || owner.host.is_none() || process_alive(&owner) {
            continue;
        }
        let path = entry.path();
        match fs::remove_dir_all(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: FolderKind = FolderKind {
        what: "a test result",
        marker: "result.json",
    };

    fn write(dir: &Path, name: &str, text: &str) {
        fs::write(dir.join(name), text).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        some_names(dir, 100).unwrap().0
    }

    #[test]
    fn a_result_is_refused_unless_replaced_and_then_replaced_whole() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        // First result.
        let f = NewFolder::begin(&target, KIND, Replace::Nothing).unwrap();
        write(f.path(), "result.json", "1");
        write(f.path(), "weights.bin", "old");
        assert!(!target.exists(), "visible before commit");
        f.commit().unwrap();
        assert_eq!(names(&target), ["result.json", "weights.bin"]);
        // Refused without the flag, naming the result and the flag.
        let e = NewFolder::begin(&target, KIND, Replace::Nothing)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("already holds a test result (result.json)"),
            "{e}"
        );
        assert!(e.contains("--overwrite"), "{e}");
        // Replaced whole: the old run's extra file is gone.
        let f = NewFolder::begin(&target, KIND, Replace::SameKind).unwrap();
        write(f.path(), "result.json", "2");
        f.commit().unwrap();
        assert_eq!(names(&target), ["result.json"]);
        assert_eq!(fs::read_to_string(target.join("result.json")).unwrap(), "2");
        // Nothing is left beside it.
        assert_eq!(names(root.path()), ["out"]);
    }

    #[test]
    fn commit_unless_taken_keeps_a_result_put_there_meanwhile() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        // Missing: committed.
        let f = NewFolder::begin(&target, KIND, Replace::Anything).unwrap();
        write(f.path(), "result.json", "first");
        assert_eq!(f.commit_unless_taken().unwrap(), Some(target.clone()));
        // Another writer's result arrives while this one is staged: kept.
        let f = NewFolder::begin(&target, KIND, Replace::Anything).unwrap();
        write(f.path(), "result.json", "second");
        assert_eq!(f.commit_unless_taken().unwrap(), None);
        assert_eq!(
            fs::read_to_string(target.join("result.json")).unwrap(),
            "first"
        );
        // An empty target is no result: committed.
        fs::remove_dir_all(&target).unwrap();
        fs::create_dir(&target).unwrap();
        let f = NewFolder::begin(&target, KIND, Replace::Anything).unwrap();
        write(f.path(), "result.json", "third");
        assert!(f.commit_unless_taken().unwrap().is_some());
        assert_eq!(
            fs::read_to_string(target.join("result.json")).unwrap(),
            "third"
        );
        assert_eq!(names(root.path()), ["out"]);
    }

    #[test]
    fn an_unfinished_folder_leaves_the_old_result_alone() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        fs::create_dir(&target).unwrap();
        write(&target, "result.json", "old");
        {
            let f = NewFolder::begin(&target, KIND, Replace::SameKind).unwrap();
            write(f.path(), "result.json", "half");
            // dropped: a failure before commit
        }
        assert_eq!(
            fs::read_to_string(target.join("result.json")).unwrap(),
            "old"
        );
        assert_eq!(names(root.path()), ["out"]);
    }

    #[test]
    fn other_files_files_and_bad_paths_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let other = root.path().join("other");
        fs::create_dir(&other).unwrap();
        write(&other, "notes.txt", "mine");
        for replace in [Replace::Nothing, Replace::SameKind] {
            let e = NewFolder::begin(&other, KIND, replace)
                .unwrap_err()
                .to_string();
            assert!(e.contains("holds no result.json (notes.txt)"), "{e}");
        }
        assert!(NewFolder::begin(&other, KIND, Replace::Anything).is_ok());
        // An empty folder is fine.
        let empty = root.path().join("empty");
        fs::create_dir(&empty).unwrap();
        NewFolder::begin(&empty, KIND, Replace::Nothing)
            .unwrap()
            .commit()
            .unwrap();
        // A file is "not a folder".
        let file = root.path().join("file");
        write(root.path(), "file", "x");
        let e = NewFolder::begin(&file, KIND, Replace::Anything)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a folder"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let bad = root.path().join(std::ffi::OsStr::from_bytes(b"bad\xff"));
            let e = NewFolder::begin(&bad, KIND, Replace::Nothing)
                .unwrap_err()
                .to_string();
            assert!(e.contains("not valid UTF-8"), "{e}");
        }
    }

    #[test]
    fn staging_of_dead_processes_is_removed_and_others_kept() {
        let owner = |pid, host: Option<&str>| {
            Some(TempOwner {
                pid,
                host: host.map(str::to_string),
            })
        };
        assert_eq!(temp_owner(".results.csv.123.tmp"), owner(123, None));
        assert_eq!(temp_owner(".pareto.png.5-1.tmp.png"), owner(5, None));
        assert_eq!(temp_owner(".out.77@node3.tmp"), owner(77, Some("node3")));
        assert_eq!(
            temp_owner(".out.77@node3-old2.tmp"),
            owner(77, Some("node3"))
        );
        assert_eq!(temp_owner("results.csv"), None);
        assert_eq!(temp_owner(".hidden"), None);
        assert_eq!(temp_owner(".x.tmpfoo"), None);
        let root = tempfile::tempdir().unwrap();
        let (me, here) = (std::process::id(), host_tag());
        // A pid far above any pid_max (2^22 on Linux) runs nowhere.
        let dead = 4_000_000_000u32;
        for name in [
            format!(".out.{dead}@{here}.tmp"),
            format!(".out.{dead}@{here}-old1.tmp"),
            format!(".out.{dead}@elsewhere0.tmp"),
            format!(".out.{me}@{here}.tmp"),
            format!(".other.{dead}@{here}.tmp"),
        ] {
            fs::create_dir(root.path().join(name)).unwrap();
        }
        let removed = remove_dead_staging(root.path(), "out").unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(removed, 2);
            let mut want = vec![
                format!(".other.{dead}@{here}.tmp"),
                format!(".out.{dead}@elsewhere0.tmp"),
                format!(".out.{me}@{here}.tmp"),
            ];
            want.sort();
            assert_eq!(names(root.path()), want);
        }
    }
}
