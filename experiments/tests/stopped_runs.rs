//! Runs stopped the hard way (SIGKILL) during pretraining and during the
//! sweep, then resumed; two runs started on one folder; a run that fails
//! before its first file. A shrunken `quick` study (synthetic data) run as
//! the `joint_vs_frozen` binary, so the kills are real process deaths.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cascade_experiments::lock::{is_temp_name, CASCADE_LOCK, RUN_LOCK};
use cascade_experiments::results::{read_results, ResultRow, RESULTS_FILE};

const LIMIT: Duration = Duration::from_secs(600);

fn study(out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_joint_vs_frozen"));
    cmd.args([
        "--preset",
        "quick",
        "--synthetic-train",
        "1000",
        "--synthetic-test",
        "300",
        "--pretrain-epochs",
        "8",
        "--frozen-epochs",
        "3",
        "--joint-epochs",
        "2",
        "--alphas",
        "0.02,0.2",
        "--seeds",
        "0,1",
        "--quiet",
        "--out",
    ])
    .arg(out);
    cmd
}

fn start(out: &Path) -> Child {
    study(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs to the end (or fails the test after [`LIMIT`]: a run that waits
/// forever on a dead process's lock).
fn finish(out: &Path) -> Output {
    let mut child = study(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > LIMIT {
            child.kill().unwrap();
            panic!("the run into {} did not finish", out.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool, child: &mut Child) {
    let t0 = Instant::now();
    while !cond() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before {what}");
        }
        assert!(t0.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the lock file `path` names process `pid` as its holder (a
/// process writes its id into a lock it holds exclusively). Reading it
/// takes no lock, so it never disturbs the run being watched.
fn stamped_by(path: &Path, pid: u32) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.trim() == pid.to_string())
}

/// Whether some process holds the lock file `path` (probes by locking:
/// only for locks nobody else is about to take).
fn held(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    match f.try_lock_shared() {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(e)) => panic!("{}: {e}", path.display()),
    }
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let temp = is_temp_name(&p.file_name().unwrap().to_string_lossy());
            if temp {
                found.push(p);
            } else if p.is_dir() {
                stack.push(p);
            }
        }
    }
    found
}

/// The rows of a finished run with the wall-time columns zeroed, after
/// checking that every point appears exactly once in the file.
fn rows(run: &Path) -> Vec<ResultRow> {
    let text = std::fs::read_to_string(run.join(RESULTS_FILE)).unwrap();
    let rows = read_results(&run.join(RESULTS_FILE)).unwrap();
    assert_eq!(text.lines().count(), rows.len() + 1, "a row repeated");
    let mut keys: Vec<String> = rows.iter().map(|r| r.key().to_string()).collect();
    keys.dedup();
    assert_eq!(keys.len(), rows.len());
    rows.into_iter()
        .map(|r| ResultRow {
            train_seconds: 0.0,
            eval_seconds: 0.0,
            ..r
        })
        .collect()
}

#[test]
fn killed_runs_resume_to_the_same_rows_and_concurrent_runs_lose_none() {
    let tmp = tempfile::tempdir().unwrap();

    // 1. SIGKILL while the cascade pretrains: the lock dies with the
    //    process, the rerun pretrains and finishes.
    let a = tmp.path().join("a");
    let mut child = start(&a);
    let lock = a.join(CASCADE_LOCK);
    let pid = child.id();
    wait_until("pretraining starts", || stamped_by(&lock, pid), &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !a.join("cascade/cascade.json").exists(),
        "the kill came after pretraining"
    );
    assert!(!held(&lock));

    // 2. While the rerun holds the folder, a second run on it is refused
    //    at once (it would rewrite results.csv from its own rows).
    let mut rerun = study(&a)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = rerun.id();
    wait_until(
        "the rerun holds the folder",
        || stamped_by(&a.join(RUN_LOCK), pid),
        &mut rerun,
    );
    let second = study(&a).output().unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("is writing to this run folder") && err.lines().count() == 1,
        "{err}"
    );
    let t0 = Instant::now();
    while rerun.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < LIMIT, "the rerun did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rerun.wait().unwrap().success());
    let full = rows(&a);
    assert!(full.len() > 20, "{} rows", full.len());
    assert!(temp_files(&a).is_empty(), "{:?}", temp_files(&a));

    // 3. SIGKILL during the sweep (after the first rows are written), with
    //    a temporary file left as a kill in the middle of a write leaves
    //    it: the rerun removes it and ends with every row exactly once,
    //    the same numbers as the run that was never stopped.
    let b = tmp.path().join("b");
    let mut child = start(&b);
    wait_until(
        "the first rows",
        || b.join(RESULTS_FILE).exists(),
        &mut child,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = read_results(&b.join(RESULTS_FILE)).unwrap();
    assert!(partial.len() < full.len(), "the kill came after the sweep");
    std::fs::write(b.join(".results.csv.4242.tmp"), "half a file").unwrap();
    std::fs::create_dir_all(b.join("agents")).unwrap();
    std::fs::write(b.join("agents/.policy.safetensors.4242.tmp"), "x").unwrap();
    finish(&b);
    assert!(temp_files(&b).is_empty(), "{:?}", temp_files(&b));
    assert_eq!(rows(&b), full);

    // 4. A second run after the first finished adds and loses nothing.
    finish(&a);
    assert_eq!(rows(&a), full);
}

#[test]
fn a_run_that_fails_before_its_first_file_leaves_no_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("never");
    let res = Command::new(env!("CARGO_BIN_EXE_joint_vs_frozen"))
        .args([
            "--preset",
            "fmnist",
            "--quiet",
            "--data-dir",
            "/no/such/dir",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("/no/such/dir"), "{err}");
    assert!(!out.exists(), "{} left behind", out.display());
    // The default preset with a named folder: an error, not synthetic data.
    let res = Command::new(env!("CARGO_BIN_EXE_joint_vs_frozen"))
        .args(["--quiet", "--data-dir", "/no/such/dir"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("fashion-mnist") && err.contains("/no/such/dir"),
        "{err}"
    );
    assert!(!out.exists());
}
