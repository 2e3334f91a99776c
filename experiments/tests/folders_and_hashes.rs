//! What the commands do with folders that already hold results, recorded
//! files that changed, sizes beyond memory, summary inputs that make no
//! sense, leftovers of killed processes and bad paths: every case ends in
//! a one-line `error: ...` naming the problem, or in a whole new result,
//! never in a mix or a silent number. Small cascades on synthetic data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use cascade_rl::data::{SplitConfig, SyntheticConfig};
use cascade_rl::presets::{Preset, StagePreset};
use cascade_rl::train::{pretrain, OptimizerConfig, PretrainOptions, TrainConfig};

fn cascade() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cascade"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The single `error: ...` line of a refused command (exit status 1).
fn refused(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(!err.contains(" { "), "a debug struct: {err}");
    lines[0].to_string()
}

/// A fresh folder for one test under the target's scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("folders_and_hashes")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A two-stage cascade on 800 synthetic images, one epoch per stage.
fn tiny_cascade(dir: &Path, seed: u64) {
    let recipe = TrainConfig {
        epochs: 1,
        batch_size: 64,
        optimizer: OptimizerConfig::adamw(3e-3, 0.0),
        ..Default::default()
    };
    let stage = |m: &str| StagePreset {
        model: m.parse().unwrap(),
        train: recipe.clone(),
    };
    let preset = Preset {
        name: "tiny-2".into(),
        dataset: "synthetic".into(),
        description: "two-stage test cascade on synthetic data".into(),
        val_fraction: 0.25,
        stages: vec![stage("linear"), stage("mlp-16")],
    };
    let mut opts = PretrainOptions::new(dir);
    opts.seed = seed;
    opts.split = SplitConfig {
        synthetic: SyntheticConfig {
            n_train: 800,
            n_test: 200,
            ..Default::default()
        },
        ..Default::default()
    };
    pretrain(&preset, &opts).unwrap();
}

/// Two cascades of the same shape (seeds 0 and 1), made once.
fn cascades() -> &'static (PathBuf, PathBuf) {
    static C: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    C.get_or_init(|| {
        let root = scratch("cascades");
        let (a, b) = (root.join("a"), root.join("b"));
        tiny_cascade(&a, 0);
        tiny_cascade(&b, 1);
        (a, b)
    })
}

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
        "1",
        "--agents",
        "threshold,ann",
        "--alphas",
        "0.02",
        "--seeds",
        "0",
        "--quiet",
        "--out",
    ])
    .arg(out);
    cmd
}

/// A finished small study (threshold and ann agents), made once; tests
/// work on copies.
fn study_run() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = scratch("study").join("run");
        ok(&run(&mut study(&dir)));
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

fn train(cascade_dir: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = cascade();
    cmd.args(["train", "--quiet", "--cascade"])
        .arg(cascade_dir)
        .arg("--out")
        .arg(out)
        .args(extra);
    cmd
}

fn eval(agent: &Path, extra: &[&str]) -> Command {
    let mut cmd = cascade();
    cmd.args(["eval", "--agent-dir"]).arg(agent).args(extra);
    cmd
}

#[test]
fn pretraining_over_a_cascade_is_refused_and_overwrite_replaces_it_whole() {
    let root = scratch("pretrain");
    let out = root.join("c");
    tiny_cascade(&out, 0);
    let before = std::fs::read(out.join("stage1.safetensors")).unwrap();
    // A file another run left beside the cascade.
    std::fs::write(out.join("stage3.safetensors"), b"old").unwrap();
    let pretrain = |extra: &[&str]| {
        let mut cmd = cascade();
        cmd.args([
            "pretrain",
            "--preset",
            "synthetic-3",
            "--epochs",
            "1",
            "--quiet",
        ])
        .args(extra)
        .arg("--out")
        .arg(&out);
        cmd
    };
    let t0 = std::time::Instant::now();
    let err = refused(&run(&mut pretrain(&[])));
    assert!(
        err.contains("already holds a pretrained cascade (cascade.json)")
            && err.contains("--overwrite"),
        "{err}"
    );
    assert!(t0.elapsed().as_secs() < 20, "refused only after training");
    assert_eq!(
        std::fs::read(out.join("stage1.safetensors")).unwrap(),
        before
    );
    // With --overwrite the new cascade replaces the folder whole: the
    // leftover stage file is gone with the old weights.
    ok(&run(&mut pretrain(&["--overwrite"])));
    assert_eq!(
        names(&out),
        [
            "cascade.json",
            "stage1.safetensors",
            "stage2.safetensors",
            "stage3.safetensors",
            "static.csv",
            "static.md",
            "train_log.csv"
        ]
    );
    assert_ne!(
        std::fs::read(out.join("stage3.safetensors")).unwrap(),
        b"old"
    );
    assert_eq!(names(&root), ["c"], "staging left beside the folder");
    // A folder of other files is never written into; a file is not a folder.
    let other = root.join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("todo.txt"), b"mine").unwrap();
    for target in [other.clone(), other.join("todo.txt")] {
        let mut cmd = cascade();
        cmd.args([
            "pretrain",
            "--preset",
            "synthetic-3",
            "--overwrite",
            "--out",
        ])
        .arg(&target);
        let err = refused(&run(&mut cmd));
        assert!(
            err.contains("holds no cascade.json (todo.txt)") || err.contains("not a folder"),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(other.join("todo.txt")).unwrap(), b"mine");
}

#[test]
fn training_over_another_agent_is_refused_and_overwrite_replaces_it_whole() {
    let (a, _) = cascades();
    let root = scratch("train");
    let agent = root.join("agent");
    ok(&run(&mut train(
        a,
        &agent,
        &["--agent", "reinforce", "--epochs", "1"],
    )));
    assert!(agent.join("policy.safetensors").is_file());
    assert!(agent.join("train_log.csv").is_file());
    let err = refused(&run(&mut train(a, &agent, &["--agent", "threshold"])));
    assert!(
        err.contains("already holds a saved agent (agent.json)") && err.contains("--overwrite"),
        "{err}"
    );
    ok(&run(&mut train(
        a,
        &agent,
        &["--agent", "threshold", "--overwrite"],
    )));
    // Nothing of the REINFORCE agent is left to be scored in its place.
    assert_eq!(
        names(&agent),
        ["agent.json", "train_args.json", "train_summary.json"]
    );
    let out = ok(&run(&mut eval(&agent, &[])));
    assert!(out.starts_with("threshold"), "{out}");
    assert_eq!(names(&root), ["agent"], "staging left beside the folder");
    let args: serde_json::Value =
        serde_json::from_slice(&std::fs::read(agent.join("train_args.json")).unwrap()).unwrap();
    assert_eq!(
        args["cascade_hash"].as_str().unwrap(),
        cascade_experiments::provenance::cascade_hash(a).unwrap()
    );
}

#[test]
fn evaluation_checks_and_records_what_it_evaluates() {
    let (a, b) = cascades();
    let root = scratch("eval");
    let agent = root.join("threshold");
    ok(&run(&mut train(a, &agent, &["--agent", "threshold"])));
    // Another cascade of the same shape is refused, naming the flag.
    let err = refused(&run(&mut eval(&agent, &["--cascade", b.to_str().unwrap()])));
    assert!(
        err.contains("trained on a cascade with content hash") && err.contains("--other-cascade"),
        "{err}"
    );
    assert!(!agent.join("eval_test.json").exists());
    // ... and so is the cascade folder pretrained again in place.
    let moved = root.join("a-copy");
    copy_dir(a, &moved);
    let mut retrained: serde_json::Value =
        serde_json::from_slice(&std::fs::read(agent.join("train_args.json")).unwrap()).unwrap();
    retrained["cascade"] = serde_json::Value::String(moved.display().to_string());
    std::fs::write(
        agent.join("train_args.json"),
        serde_json::to_vec(&retrained).unwrap(),
    )
    .unwrap();
    ok(&run(&mut eval(&agent, &[])));
    // The folder pretrained again (here: another cascade in its place).
    std::fs::remove_dir_all(&moved).unwrap();
    copy_dir(b, &moved);
    let err = refused(&run(&mut eval(&agent, &[])));
    assert!(err.contains("pretrained again"), "{err}");
    // A stage file replaced by one of the same shape from another run:
    // refused when the cascade loads.
    std::fs::copy(
        a.join("stage2.safetensors"),
        moved.join("stage2.safetensors"),
    )
    .unwrap();
    let err = refused(&run(&mut eval(&agent, &["--other-cascade"])));
    assert!(err.contains("stage2.safetensors has content hash"), "{err}");
    // Asked for, it runs, and the report says which cascade it used.
    ok(&run(&mut eval(
        &agent,
        &["--cascade", b.to_str().unwrap(), "--other-cascade"],
    )));
    let r = cascade_agents::EvalReport::read_json(&agent.join("eval_test.json")).unwrap();
    let ev = r.evaluated.expect("no record of what was evaluated");
    assert_eq!(
        ev.cascade_hash,
        cascade_experiments::provenance::cascade_hash(b).unwrap()
    );
    assert_eq!(ev.cascade_dir, b.display().to_string());
    assert_eq!(
        ev.agent_hash,
        cascade_experiments::provenance::agent_hash(&agent).unwrap()
    );
}

#[test]
fn paired_refuses_nonsense_inputs() {
    let (a, _) = cascades();
    let root = scratch("paired");
    let (x, y) = (root.join("x"), root.join("y"));
    ok(&run(&mut train(a, &x, &["--agent", "static-1"])));
    ok(&run(&mut train(a, &y, &["--agent", "static-2"])));
    for d in [&x, &y] {
        ok(&run(&mut eval(d, &[])));
    }
    let paired = |extra: &[&str]| {
        let mut cmd = cascade();
        cmd.arg("paired").arg(&x).arg(&y).args(extra);
        cmd
    };
    let out = ok(&run(&mut paired(&[])));
    assert!(out.contains("points") && !out.contains("NaN"), "{out}");
    for r in ["0", "1", "99"] {
        let err = refused(&run(&mut paired(&["--resamples", r])));
        assert!(err.contains("at least 100"), "{err}");
    }
    // Per-image values that are not 0/1, exits past the last stage.
    let file = y.join("eval_test.json");
    let good = std::fs::read_to_string(&file).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["sample_correct"][3] = 5.into();
    std::fs::write(&file, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = refused(&run(&mut paired(&[])));
    assert!(err.contains("sample_correct[3] is 5"), "{err}");
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["sample_exits"][0] = 7.into();
    std::fs::write(&file, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = refused(&run(&mut paired(&[])));
    assert!(err.contains("sample_exits[0] is 7"), "{err}");
    // An evaluation of an agent trained again since is stale.
    std::fs::write(&file, &good).unwrap();
    ok(&run(&mut train(
        a,
        &y,
        &["--agent", "threshold", "--overwrite"],
    )));
    std::fs::write(&file, &good).unwrap();
    let err = refused(&run(&mut paired(&[])));
    assert!(err.contains("evaluate it again"), "{err}");
}

#[test]
fn a_changed_trace_is_refused_by_plot_and_recorded_again_by_the_study() {
    let run_dir = scratch("trace").join("run");
    copy_dir(study_run(), &run_dir);
    ok(&run(cascade().arg("plot").arg(&run_dir)));
    let trace = run_dir.join("traces/test.trace");
    let mut bytes = std::fs::read(&trace).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x01; // one bit of the last stage's outputs
    std::fs::write(&trace, &bytes).unwrap();
    let err = refused(&run(cascade().arg("plot").arg(&run_dir)));
    assert!(
        err.contains("test.trace") && err.contains("is not what was recorded"),
        "{err}"
    );
    // The study says so and records the trace again.
    let out = run(&mut study(&run_dir));
    ok(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("test.trace") && said.contains("recording it again"),
        "{said}"
    );
    ok(&run(cascade().arg("plot").arg(&run_dir)));
    // An agent folder changed after its evaluation: the paired tests of
    // the summary refuse its report.
    let agents = run_dir.join("agents");
    let ann = std::fs::read_dir(&agents)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("__ann__"))
        .unwrap();
    let r = cascade_agents::EvalReport::read_json(&ann.join("eval_test.json")).unwrap();
    let ev = r.evaluated.expect("the study's report records no agent");
    assert_eq!(ev.cascade_dir, "cascade");
    let manifest = ann.join("agent.json");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push('\n');
    std::fs::write(&manifest, text).unwrap();
    let err = refused(&run(cascade().arg("plot").arg(&run_dir)));
    assert!(
        err.contains("evaluated an agent with content hash"),
        "{err}"
    );
}

#[test]
fn plot_and_merge_remove_what_killed_processes_left() {
    let run_dir = scratch("leftovers").join("run");
    copy_dir(study_run(), &run_dir);
    let dead = 4_000_000_000u32;
    let left = [
        format!(".results.csv.{dead}.tmp"),
        format!("figures/.pareto.png.{dead}-1.tmp.png"),
        format!(".summary.md.{dead}.tmp"),
    ];
    for cmd in ["plot", "merge"] {
        for l in &left {
            std::fs::write(run_dir.join(l), b"half").unwrap();
        }
        ok(&run(cascade().arg(cmd).arg(&run_dir)));
        for l in &left {
            assert!(!run_dir.join(l).exists(), "{cmd} left {l}");
        }
    }
    // While a shard writes to the folder (holding its lock), its
    // temporary files stay.
    let shard =
        cascade_experiments::lock::lock_run(&run_dir, cascade_experiments::lock::Access::Shared)
            .unwrap();
    let mine = format!(".results.shard-0-of-2.csv.{}.tmp", std::process::id());
    std::fs::write(run_dir.join(&mine), b"in progress").unwrap();
    ok(&run(cascade().arg("plot").arg(&run_dir)));
    assert!(run_dir.join(&mine).exists());
    drop(shard);
    ok(&run(cascade().arg("plot").arg(&run_dir)));
    assert!(!run_dir.join(&mine).exists());
}

#[test]
fn aggregate_says_what_it_leaves_out_and_what_it_was_made_from() {
    let root = scratch("aggregate");
    let (r0, r1) = (root.join("r0"), root.join("r1"));
    copy_dir(study_run(), &r0);
    copy_dir(study_run(), &r1);
    // r1: another cascade seed, without the threshold agent.
    let cfg = r1.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["config"]["pretrain"]["seed"] = 1.into();
    std::fs::write(&cfg, serde_json::to_vec(&v).unwrap()).unwrap();
    let results = r1.join("results.csv");
    let text = std::fs::read_to_string(&results).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("threshold,"))
        .collect();
    assert!(kept.len() < text.lines().count());
    std::fs::write(&results, kept.join("\n") + "\n").unwrap();
    let out = run(cascade().arg("aggregate").arg(&r0).arg(&r1));
    let md = ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: left out of the table") && err.contains("agent threshold"),
        "{err}"
    );
    assert!(
        md.contains("Left out") && md.contains("- agent threshold"),
        "{md}"
    );
    assert!(!md.contains("| threshold |"), "{md}");
    let h = cascade_experiments::provenance::file_hash(&results).unwrap();
    assert!(md.contains(&format!("(hash {h})")), "{md}");
}

#[test]
fn bad_output_paths_are_refused_before_any_work() {
    let root = scratch("paths");
    let file = root.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let t0 = std::time::Instant::now();
    let err = refused(&run(&mut study(&file)));
    assert!(err.contains("not a folder"), "{err}");
    let other = root.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"x").unwrap();
    let err = refused(&run(&mut study(&other)));
    assert!(
        err.contains("no config.json") && err.contains("notes.txt"),
        "{err}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let bad = root.join(std::ffi::OsStr::from_bytes(b"run\xff"));
        let err = refused(&run(&mut study(&bad)));
        assert!(err.contains("not valid UTF-8"), "{err}");
        assert!(!bad.exists());
        let (a, _) = cascades();
        let err = refused(&run(&mut train(a, &bad, &["--agent", "threshold"])));
        assert!(err.contains("not valid UTF-8"), "{err}");
    }
    assert!(t0.elapsed().as_secs() < 30, "refused only after work");
    assert_eq!(names(&root), ["a-file", "other"]);
}

#[test]
fn sizes_beyond_memory_are_refused_with_the_size_and_the_limit() {
    let root = scratch("sizes");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_joint_vs_frozen"));
    cmd.args([
        "--preset",
        "quick",
        "--quiet",
        "--synthetic-train",
        "10000000000",
    ])
    .arg("--out")
    .arg(root.join("run"));
    let err = refused(&run(&mut cmd));
    assert!(
        err.contains("10000000000") && err.contains("more than the limit"),
        "{err}"
    );
}

#[test]
fn negative_numbers_are_values_and_numbers_read_as_written() {
    let root = scratch("numbers");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_alpha_sweep"));
    cmd.args([
        "--agent",
        "threshold",
        "--preset",
        "quick",
        "--budgets",
        "-0.5",
    ])
    .arg("--out")
    .arg(root.join("run"));
    let err = refused(&run(&mut cmd));
    assert!(err.contains("got -0.5"), "{err}");
    assert!(!err.contains("e-1") && !err.contains("e0"), "{err}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_joint_vs_frozen"));
    cmd.args(["--preset", "quick", "--alphas", "-0.1,0.2"])
        .arg("--out")
        .arg(root.join("run"));
    let err = refused(&run(&mut cmd));
    assert!(err.contains("got -0.1"), "{err}");
    let (a, _) = cascades();
    let err = refused(&run(&mut train(
        a,
        &root.join("agent"),
        &["--agent", "threshold", "--alpha", "-0.25"],
    )));
    assert!(err.contains("-0.25"), "{err}");
}

/// A `main` that returns a `Result` prints the error with `Debug`
/// (`Error: Trace { .. }`); every binary and example prints one line
/// with `Display` instead.
#[test]
fn no_main_returns_a_result() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stack = vec![root.clone()];
    let mut bad = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    stack.push(p);
                }
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for l in text.lines() {
                    let l = l.trim_start();
                    if l.starts_with("fn main() ->") || l.starts_with("pub fn main() ->") {
                        bad.push(format!("{}: {l}", p.display()));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
