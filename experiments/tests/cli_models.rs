//! The `cascade` binary: `flops`, `pretrain` and `bench`.

use std::process::Command;

fn cascade() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cascade"))
}

fn stdout_of(args: &[&str]) -> String {
    let out = cascade().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn flops_json_for_resnet_110() {
    let text = stdout_of(&[
        "flops",
        "--model",
        "resnet-110",
        "--input",
        "3,32,32",
        "--classes",
        "10",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["model"], "resnet-110");
    assert_eq!(v["macs"], 252_887_680u64);
    assert_eq!(v["params"], 1_727_962u64);
    assert_eq!(v["layers"].as_array().unwrap().len(), 1 + 2 + 54 * 7 + 2);
}

#[test]
fn flops_table_and_preset() {
    let text = stdout_of(&["flops", "--model", "mlp-256", "--input", "1,28,28"]);
    assert!(text.contains("fc1"), "{text}");
    assert!(text.contains("203264"), "{text}");
    let text = stdout_of(&["flops", "--preset", "fmnist-4"]);
    assert!(text.contains("resnet-20"), "{text}");
    assert!(text.contains("30821248"), "{text}");
    assert!(text.contains("100.000"), "{text}");
    let out = cascade()
        .args(["flops", "--model", "resnet-21"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("6n+2"));
}

#[test]
fn pretrain_synthetic_writes_a_loadable_cascade() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("syn");
    let text = stdout_of(&[
        "pretrain",
        "--preset",
        "synthetic-3",
        "--out",
        out_dir.to_str().unwrap(),
        "--epochs",
        "2",
        "--max-train",
        "1000",
        "--quiet",
    ]);
    assert!(text.contains("synthetic data"), "{text}");
    assert!(text.contains("| 3 | cnn-8-16-fc32 |"), "{text}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("cascade.json")).unwrap()).unwrap();
    assert_eq!(manifest["synthetic"], true);
    assert_eq!(manifest["split"]["n_train"], 1000);
    assert_eq!(manifest["stages"][2]["train"]["epochs"], 2);
    let c = cascade_rl::cascade::Cascade::load(
        &out_dir,
        &candle_core::Device::Cpu,
        Some("synthetic-3"),
        Some("synthetic"),
    )
    .unwrap();
    assert_eq!(c.len(), 3);
}

#[test]
fn bench_one_model_and_cuda_without_the_feature() {
    let text = stdout_of(&[
        "bench", "--model", "linear", "--input", "1,12,12", "--iters", "1", "--batch", "8",
    ]);
    assert!(text.contains("linear"), "{text}");
    if !cfg!(feature = "cuda") {
        let out = cascade()
            .args(["bench", "--preset", "synthetic-3", "--device", "cuda"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--features cuda"));
    }
}

#[test]
fn bench_epoch_runs_the_recipes_on_the_data() {
    let text = stdout_of(&[
        "bench",
        "--epoch",
        "--preset",
        "synthetic-3",
        "--max-train",
        "200",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let epochs = v["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3, "{text}");
    for (i, e) in epochs.iter().enumerate() {
        assert_eq!(e["recipe_of_stage"], i + 1);
        assert_eq!(e["result"]["train_images"], 200);
        assert_eq!(e["result"]["recipe"]["epochs"], 1);
        assert_eq!(e["result"]["recipe"]["batch_size"], 64);
        assert!(e["result"]["train_s"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(epochs[1]["result"]["model"], "mlp-64");
    // A model outside the preset takes the last stage's recipe.
    let text = stdout_of(&[
        "bench",
        "--epoch",
        "--preset",
        "synthetic-3",
        "--max-train",
        "100",
        "--model",
        "mlp-8",
        "--batch",
        "16",
    ]);
    assert!(text.contains("mlp-8") && text.contains("st. 3"), "{text}");
    assert!(text.contains("    16 "), "{text}");
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&[
        "bench",
        "--epoch",
        "--preset",
        "synthetic-3",
        "--max-train",
        "100",
        "--model",
        "mlp-8",
        "--json",
    ]))
    .unwrap();
    let r = &v["epochs"][0]["result"];
    let (n, s) = (
        r["val_images"].as_f64().unwrap(),
        r["infer_s"].as_f64().unwrap(),
    );
    assert!(s > 0.0 && (r["infer_img_per_s"].as_f64().unwrap() - n / s).abs() < 1e-6 * n / s);
}

#[test]
fn bench_policy_times_one_reinforce_epoch_of_the_preset_shapes() {
    let text = stdout_of(&[
        "bench",
        "--policy",
        "--preset",
        "synthetic-3",
        "--samples",
        "300",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["samples"], 300);
    assert_eq!(v["feature_dims"].as_array().unwrap().len(), 3, "{text}");
    assert_eq!(v["config"]["epochs"], 1);
    let batch = v["config"]["batch_size"].as_u64().unwrap();
    assert_eq!(v["steps"].as_u64().unwrap(), 300u64.div_ceil(batch));
    let (train_s, total_s) = (
        v["train_s"].as_f64().unwrap(),
        v["total_s"].as_f64().unwrap(),
    );
    assert!(train_s > 0.0 && train_s <= total_s, "{text}");
    let out = cascade()
        .args(["bench", "--policy", "--epoch"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "--policy and --epoch together must be refused"
    );
}
