//! The `cascade` binary: help, `data info`, `data preview`, and the one-line
//! error with a non-zero exit status.

use std::process::Command;

fn cascade() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cascade"))
}

#[test]
fn help_lists_the_subcommands() {
    let out = cascade().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("data"), "{text}");
}

#[test]
fn data_info_on_synthetic_says_it_is_synthetic() {
    let out = cascade()
        .args(["data", "info", "--dataset", "synthetic"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("synthetic data"), "{text}");
    assert!(
        text.contains("train 5400, validation 600, test 2000"),
        "{text}"
    );
    assert!(text.contains("| 0 | north |"), "{text}");
}

#[test]
fn unknown_data_set_is_one_line_and_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = cascade()
        .args(["data", "info", "--dataset", "cifar10", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: loading data set 'cifar10'"),
        "{err}"
    );
    assert!(err.contains("CIFAR-10 binary version"), "{err}");
}

#[test]
fn data_preview_writes_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("sub/preview.png");
    let out = cascade()
        .args([
            "data",
            "preview",
            "--dataset",
            "synthetic",
            "--per-class",
            "3",
            "--out",
        ])
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(png.with_extension("svg")).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("SYNTHETIC"),
        "svg lacks the notice"
    );
}

#[test]
fn pretrain_then_export_trace_writes_a_loadable_trace() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = cascade()
        .args([
            "pretrain",
            "--preset",
            "synthetic-3",
            "--epochs",
            "1",
            "--out",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace = dir.path().join("val.safetensors");
    let out = cascade()
        .args(["export-trace", "--split", "val", "--cascade"])
        .arg(&run)
        .arg("--out")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay = cascade_env::ReplayBackend::load(&trace).unwrap();
    assert_eq!(replay.meta().split, "val");
    assert_eq!(replay.meta().cascade, "synthetic-3");
    assert_eq!(replay.labels().len(), 600);
    let out = cascade()
        .args(["export-trace", "--split", "dev", "--cascade"])
        .arg(&run)
        .arg("--out")
        .arg(&trace)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown split 'dev'"));
}

#[test]
fn a_study_cascade_on_synthetic_data_is_reused_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_joint_vs_frozen"))
        .args([
            "--preset",
            "quick",
            "--synthetic-train",
            "1000",
            "--synthetic-test",
            "300",
            "--pretrain-epochs",
            "1",
            "--agents",
            "threshold",
            "--alphas",
            "0.02",
            "--seeds",
            "0",
            "--quiet",
            "--out",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cascade_dir = run.join("cascade");
    // The CLI rebuilds the study's data from what cascade.json records.
    for split in ["train", "val", "test"] {
        let trace = dir.path().join(format!("{split}.safetensors"));
        let out = cascade()
            .args(["export-trace", "--split", split, "--cascade"])
            .arg(&cascade_dir)
            .arg("--out")
            .arg(&trace)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let agent = dir.path().join("threshold");
    let out = cascade()
        .args(["train", "--agent", "threshold", "--quiet", "--cascade"])
        .arg(&cascade_dir)
        .arg("--out")
        .arg(&agent)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `--out FOLDER/` names files inside the folder.
    let evals = format!("{}/evals/", dir.path().display());
    let out = cascade()
        .args(["eval", "--agent-dir"])
        .arg(&agent)
        .args(["--out", &evals])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["eval_test.json", "eval_test.csv"] {
        assert!(dir.path().join("evals").join(f).is_file(), "{f}");
    }
    // Two agents on the same test images, compared image by image.
    let last = dir.path().join("static-3");
    let ok = |c: &mut Command| {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(cascade()
        .args(["train", "--agent", "static-3", "--quiet", "--cascade"])
        .arg(&cascade_dir)
        .arg("--out")
        .arg(&last));
    ok(cascade().args(["eval", "--agent-dir"]).arg(&last));
    let text = ok(cascade()
        .arg("paired")
        .arg(dir.path().join("evals/eval_test.json"))
        .arg(&last));
    assert!(
        text.contains("A - B:") && text.contains("95% paired-bootstrap"),
        "{text}"
    );
    ok(cascade()
        .args(["eval", "--split", "val", "--agent-dir"])
        .arg(&last));
    let out = cascade()
        .arg("paired")
        .arg(last.join("eval_val.json"))
        .arg(&last)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the same images"));
}
