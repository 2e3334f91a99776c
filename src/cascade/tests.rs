//! Loading, refusing and saving a pretrained cascade folder.

use candle_core::Device;

use super::Cascade;
use crate::checkpoint::{read_manifest, write_manifest};
use crate::data::{SplitConfig, SyntheticConfig, SYNTHETIC_NOTICE};
use crate::presets::Preset;
use crate::train::{evaluate, pretrain, PretrainOptions};

/// Pretrains `synthetic-3` on a small synthetic set (a few seconds), then
/// loads it back, checks it reproduces the recorded test errors exactly,
/// and checks every refusal.
#[test]
fn pretrained_cascade_loads_and_mismatches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let preset = Preset::by_name("synthetic-3").unwrap();
    let split = SplitConfig {
        synthetic: SyntheticConfig {
            n_train: 3000,
            n_test: 600,
            ..Default::default()
        },
        ..Default::default()
    };
    let opts = PretrainOptions {
        seed: 3,
        split,
        ..PretrainOptions::new(dir.path())
    };
    let started = std::time::Instant::now();
    let summary = pretrain(&preset, &opts).unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(secs < 60.0, "pretraining synthetic-3 took {secs:.1} s");
    let m = &summary.manifest;
    assert_eq!(m.stages.len(), 3);
    assert!(m.synthetic && m.notice.as_deref() == Some(SYNTHETIC_NOTICE));
    let (first, last) = (&m.stages[0], &m.stages[2]);
    assert!(
        last.val_error < first.val_error,
        "last stage {} val error {} vs first {}",
        last.name,
        last.val_error,
        first.val_error
    );
    assert!(m.stages.windows(2).all(|w| w[0].macs < w[1].macs));
    for f in [
        "cascade.json",
        "static.md",
        "static.csv",
        "train_log.csv",
        "stage1.safetensors",
        "stage3.safetensors",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let md = std::fs::read_to_string(dir.path().join("static.md")).unwrap();
    assert!(md.contains(SYNTHETIC_NOTICE), "{md}");
    let log = std::fs::read_to_string(dir.path().join("train_log.csv")).unwrap();
    assert_eq!(
        log.lines().next(),
        Some(crate::train::PRETRAIN_LOG_COLUMNS.join(",").as_str())
    );
    let csv = std::fs::read_to_string(dir.path().join("static.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    assert!(
        csv.lines().skip(1).all(|l| l.contains(",synthetic,true,")),
        "{csv}"
    );

    // Loading reproduces the recorded test errors bit for bit.
    let c = Cascade::load(
        dir.path(),
        &Device::Cpu,
        Some("synthetic-3"),
        Some("synthetic"),
    )
    .unwrap();
    assert_eq!(c.len(), 3);
    assert_eq!(
        c.macs(),
        m.stages.iter().map(|s| s.macs).collect::<Vec<_>>()
    );
    assert_eq!(c.feature_dims(), vec![144, 64, 32]);
    assert_eq!((c.num_classes(), c.input_shape()), (4, [1, 12, 12]));
    assert!(c.is_synthetic());
    let splits =
        crate::data::Splits::load("synthetic", None, &SplitConfig { seed: 3, ..split }).unwrap();
    assert_eq!(c.normalization(), &splits.normalization);
    for s in c.stages() {
        let e = evaluate(&s.model, &splits.test, 500).unwrap();
        // Same count of mistakes (the JSON float may differ in the last bit).
        let n = splits.test.len() as f64;
        assert_eq!(
            (e.error * n).round(),
            (s.record.test_error * n).round(),
            "stage {}",
            s.record.stage
        );
    }

    // Refusals: preset, data set, corrupted and swapped checkpoints.
    let err = Cascade::load(dir.path(), &Device::Cpu, Some("fmnist-4"), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("preset 'synthetic-3'") && err.contains("'fmnist-4'"),
        "{err}"
    );
    let err = Cascade::load(dir.path(), &Device::Cpu, None, Some("fashion-mnist"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("data set 'synthetic'"), "{err}");
    let p2 = dir.path().join("stage2.safetensors");
    let p3 = dir.path().join("stage3.safetensors");
    let good2 = std::fs::read(&p2).unwrap();
    std::fs::copy(&p3, &p2).unwrap();
    let err = Cascade::load(dir.path(), &Device::Cpu, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stage2.safetensors") && err.contains("does not match model mlp-64"),
        "{err}"
    );
    std::fs::write(&p2, &good2[..100]).unwrap();
    let err = Cascade::load(dir.path(), &Device::Cpu, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stage2.safetensors") && err.contains("not a readable"),
        "{err}"
    );
    // Weights of the right shape from another run (one changed
    // value): the manifest records other content.
    let mut other2 = good2.clone();
    let last = other2.len() - 1;
    other2[last] ^= 0x01;
    std::fs::write(&p2, &other2).unwrap();
    let err = Cascade::load(dir.path(), &Device::Cpu, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stage 2: stage2.safetensors has content hash") && err.contains("another run"),
        "{err}"
    );
    std::fs::write(&p2, &good2).unwrap();
    assert!(Cascade::load(dir.path(), &Device::Cpu, None, None).is_ok());
    // A stage file beyond the listed stages.
    let p4 = dir.path().join("stage4.safetensors");
    std::fs::copy(&p3, &p4).unwrap();
    let err = Cascade::load(dir.path(), &Device::Cpu, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lists 3 stages") && err.contains("stage4.safetensors"),
        "{err}"
    );
    std::fs::remove_file(&p4).unwrap();
    // Class names that do not match the class count; a stage file
    // outside the folder.
    let mut bad = m.clone();
    bad.class_names.pop();
    write_manifest(dir.path(), &bad).unwrap();
    let err = read_manifest(dir.path()).unwrap_err().to_string();
    assert!(err.contains("num_classes is 4 but 3 class names"), "{err}");
    let mut bad = m.clone();
    bad.stages[0].file = "../stage1.safetensors".into();
    write_manifest(dir.path(), &bad).unwrap();
    let err = Cascade::load(dir.path(), &Device::Cpu, None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be a file name inside"), "{err}");
    write_manifest(dir.path(), m).unwrap();
    std::fs::remove_file(&p2).unwrap();
    assert!(Cascade::load(dir.path(), &Device::Cpu, None, None).is_err());
    // A manifest whose MACs disagree with its configs.
    let mut bad = m.clone();
    bad.stages[1].macs += 1;
    write_manifest(dir.path(), &bad).unwrap();
    let err = read_manifest(dir.path()).unwrap_err().to_string();
    assert!(err.contains("records"), "{err}");
}
