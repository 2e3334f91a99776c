//! Trace files: round trip, layout, and refusal of malformed traces.

mod common;

use std::collections::HashMap;
use std::path::Path;

use cascade_env::{
    Error, ReplayBackend, RewardSpec, StageBackend, StageTrace, SyntheticTraceConfig, TraceMeta,
    TRACE_METADATA_KEY,
};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

#[test]
fn save_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/trace.safetensors");
    let trace = common::small(9);
    trace.save(&path).unwrap();
    let back = ReplayBackend::load(&path).unwrap();
    assert_eq!(back, trace);
    assert_eq!(back.header(), trace.header());
    assert_eq!(back.meta().dataset, "synthetic");
    assert_eq!(
        back.stage_names(),
        &["synthetic-0", "synthetic-1", "synthetic-2"]
    );
    // Only the file itself is left (the write was atomic, no temp file).
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn file_layout_is_the_documented_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.safetensors");
    let trace = common::small(9);
    trace.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        [
            "costs",
            "labels",
            "stage0.features",
            "stage0.probs",
            "stage1.features",
            "stage1.probs",
            "stage2.features",
            "stage2.probs"
        ]
    );
    let f1 = st.tensor("stage1.features").unwrap();
    assert_eq!((f1.dtype(), f1.shape()), (Dtype::F32, &[64usize, 3][..]));
    let p2 = st.tensor("stage2.probs").unwrap();
    assert_eq!((p2.dtype(), p2.shape()), (Dtype::F32, &[64usize, 5][..]));
    let l = st.tensor("labels").unwrap();
    assert_eq!((l.dtype(), l.shape()), (Dtype::I64, &[64usize][..]));
    let c = st.tensor("costs").unwrap();
    assert_eq!((c.dtype(), c.shape()), (Dtype::F64, &[3usize][..]));
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let json = &meta.metadata().as_ref().unwrap()[TRACE_METADATA_KEY];
    let header: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(header["format_version"], 1);
    assert_eq!(header["num_samples"], 64);
    assert_eq!(header["num_classes"], 5);
    assert_eq!(header["stages"][2]["cost"], 9.0);
    assert_eq!(header["stages"][1]["feature_dim"], 3);
    assert_eq!(header["split"], "all");
}

/// A valid trace as raw parts: (name, dtype, shape, bytes) and the header.
struct Raw {
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    header: serde_json::Value,
}

fn f32b(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Raw {
    fn valid() -> Raw {
        // 2 stages, 3 samples, 2 classes, widths 1 and 2.
        let tensors = vec![
            (
                "stage0.features".into(),
                Dtype::F32,
                vec![3, 1],
                f32b(&[0.1, 0.2, 0.3]),
            ),
            (
                "stage0.probs".into(),
                Dtype::F32,
                vec![3, 2],
                f32b(&[0.5, 0.5, 0.9, 0.1, 0.2, 0.8]),
            ),
            (
                "stage1.features".into(),
                Dtype::F32,
                vec![3, 2],
                f32b(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            ),
            (
                "stage1.probs".into(),
                Dtype::F32,
                vec![3, 2],
                f32b(&[0.0, 1.0, 1.0, 0.0, 0.3, 0.7]),
            ),
            (
                "labels".into(),
                Dtype::I64,
                vec![3],
                [1i64, 0, 1].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            (
                "costs".into(),
                Dtype::F64,
                vec![2],
                [2.0f64, 10.0]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
        ];
        let header = serde_json::json!({
            "format_version": 1,
            "dataset": "toy", "split": "val", "cascade": "two", "cost_unit": "MACs",
            "num_samples": 3, "num_classes": 2,
            "stages": [
                {"name": "a", "cost": 2.0, "feature_dim": 1},
                {"name": "b", "cost": 10.0, "feature_dim": 2}
            ]
        });
        Raw { tensors, header }
    }

    fn set(&mut self, name: &str, dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) {
        self.tensors.retain(|t| t.0 != name);
        self.tensors.push((name.into(), dtype, shape, bytes));
    }

    fn write(&self, path: &Path, with_header: bool) {
        let views: Vec<(String, TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let meta = with_header
            .then(|| HashMap::from([(TRACE_METADATA_KEY.to_string(), self.header.to_string())]));
        std::fs::write(path, safetensors::tensor::serialize(views, meta).unwrap()).unwrap();
    }
}

/// Writes `raw` and returns the load error's message (panics if it loads).
fn load_err(raw: &Raw) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    raw.write(&path, true);
    let e = ReplayBackend::load(&path).unwrap_err();
    assert!(matches!(e, Error::Trace { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("bad.safetensors"),
        "does not name the file: {msg}"
    );
    msg
}

#[test]
fn the_valid_handmade_trace_loads_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.safetensors");
    Raw::valid().write(&path, true);
    let mut t = ReplayBackend::load(&path).unwrap();
    assert_eq!(t.feature_dims(), &[1, 2]);
    assert_eq!(t.stage_costs(), &[2.0, 10.0]);
    assert_eq!(t.labels(), &[1, 0, 1]);
    let b = t.run_stage(1, &[2, 0]).unwrap();
    assert_eq!(b.features, vec![5.0, 6.0, 1.0, 2.0]);
    assert_eq!(b.probs, vec![0.3, 0.7, 0.0, 1.0]);
    assert!(t.run_stage(2, &[0]).is_err());
    assert!(t
        .run_stage(0, &[3])
        .unwrap_err()
        .to_string()
        .contains("sample 3 out of range"));
    // Labels stored as U8 are accepted too.
    let mut raw = Raw::valid();
    raw.set("labels", Dtype::U8, vec![3], vec![1, 0, 1]);
    raw.write(&path, true);
    assert_eq!(ReplayBackend::load(&path).unwrap().labels(), &[1, 0, 1]);
}

#[test]
fn malformed_traces_are_refused_with_the_problem_named() {
    type Mutation = Box<dyn Fn(&mut Raw)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "dtype F64, expected F32",
            Box::new(|r: &mut Raw| {
                r.set(
                    "stage0.features",
                    Dtype::F64,
                    vec![3, 1],
                    [0.1f64, 0.2, 0.3]
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                )
            }),
        ),
        (
            "`stage1.features` has shape [2, 2], expected [3, 2]",
            Box::new(|r: &mut Raw| {
                r.set(
                    "stage1.features",
                    Dtype::F32,
                    vec![2, 2],
                    f32b(&[1.0, 2.0, 3.0, 4.0]),
                )
            }),
        ),
        (
            "`stage1.probs` has shape [3, 3], expected [3, 2]",
            Box::new(|r: &mut Raw| {
                r.set(
                    "stage1.probs",
                    Dtype::F32,
                    vec![3, 3],
                    f32b(&[1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]),
                )
            }),
        ),
        (
            "stage0.probs: sample 1 sums to",
            Box::new(|r: &mut Raw| {
                r.set(
                    "stage0.probs",
                    Dtype::F32,
                    vec![3, 2],
                    f32b(&[0.5, 0.5, 0.9, 0.2, 0.2, 0.8]),
                )
            }),
        ),
        (
            "stage1.probs: sample 2 class 0 is NaN",
            Box::new(|r: &mut Raw| {
                r.set(
                    "stage1.probs",
                    Dtype::F32,
                    vec![3, 2],
                    f32b(&[0.0, 1.0, 1.0, 0.0, f32::NAN, 0.7]),
                )
            }),
        ),
        (
            "stage0.features: sample 2 feature 0 is inf",
            Box::new(|r: &mut Raw| {
                r.set(
                    "stage0.features",
                    Dtype::F32,
                    vec![3, 1],
                    f32b(&[0.1, 0.2, f32::INFINITY]),
                )
            }),
        ),
        (
            "labels: sample 1 has label 2, not below num_classes 2",
            Box::new(|r: &mut Raw| {
                r.set(
                    "labels",
                    Dtype::I64,
                    vec![3],
                    [1i64, 2, 1].iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            }),
        ),
        (
            "sample 0 has label -1",
            Box::new(|r: &mut Raw| {
                r.set(
                    "labels",
                    Dtype::I64,
                    vec![3],
                    [-1i64, 0, 1].iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            }),
        ),
        (
            "tensor `labels`: dtype F32, expected an integer type",
            Box::new(|r: &mut Raw| r.set("labels", Dtype::F32, vec![3], f32b(&[1.0, 0.0, 1.0]))),
        ),
        (
            "missing tensor `stage1.probs`",
            Box::new(|r: &mut Raw| r.tensors.retain(|t| t.0 != "stage1.probs")),
        ),
        (
            "missing tensor `costs`",
            Box::new(|r: &mut Raw| r.tensors.retain(|t| t.0 != "costs")),
        ),
        (
            "costs mismatch at stage1: tensor `costs` says 12, the header says 10",
            Box::new(|r: &mut Raw| {
                r.set(
                    "costs",
                    Dtype::F64,
                    vec![2],
                    [2.0f64, 12.0]
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                )
            }),
        ),
        (
            "tensor `costs` has shape [3], expected [2]",
            Box::new(|r: &mut Raw| {
                r.set(
                    "costs",
                    Dtype::F64,
                    vec![3],
                    [2.0f64, 10.0, 20.0]
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                )
            }),
        ),
        (
            "unknown trace format version 2 (this build reads version 1)",
            Box::new(|r: &mut Raw| r.header["format_version"] = 2.into()),
        ),
        (
            "tensor `stage2.features` but the header names 2 stages",
            Box::new(|r: &mut Raw| {
                r.set("stage2.features", Dtype::F32, vec![3, 1], f32b(&[0.0; 3]))
            }),
        ),
        (
            "stage index 0 has cost -2",
            Box::new(|r: &mut Raw| {
                r.header["stages"][0]["cost"] = (-2.0).into();
                r.set(
                    "costs",
                    Dtype::F64,
                    vec![2],
                    [-2.0f64, 10.0]
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                )
            }),
        ),
        (
            "bad header: missing field `split`",
            Box::new(|r: &mut Raw| {
                r.header.as_object_mut().unwrap().remove("split");
            }),
        ),
        (
            "`stage0.probs` has shape [3, 2], expected [3, 3]",
            Box::new(|r: &mut Raw| r.header["num_classes"] = 3.into()),
        ),
    ];
    for (want, mutate) in cases {
        let mut raw = Raw::valid();
        mutate(&mut raw);
        let msg = load_err(&raw);
        assert!(msg.contains(want), "expected {want:?} in {msg:?}");
    }
}

#[test]
fn non_trace_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.safetensors");
    Raw::valid().write(&path, false);
    let msg = ReplayBackend::load(&path).unwrap_err().to_string();
    assert!(msg.contains("no `cascade_trace` entry"), "{msg}");
    std::fs::write(&path, b"definitely not safetensors").unwrap();
    let msg = ReplayBackend::load(&path).unwrap_err().to_string();
    assert!(
        msg.contains("not a safetensors file") && msg.contains("x.safetensors"),
        "{msg}"
    );
    let missing = dir.path().join("missing.safetensors");
    let e = ReplayBackend::load(&missing).unwrap_err();
    assert!(
        matches!(e, Error::Io { .. }) && e.to_string().contains("missing.safetensors"),
        "{e}"
    );
}

fn meta(c: usize) -> TraceMeta {
    TraceMeta {
        dataset: "toy".into(),
        split: "val".into(),
        cascade: "c".into(),
        cost_unit: "MACs".into(),
        num_classes: c,
    }
}

fn stage(cost: f64, d: usize, features: Vec<f32>, probs: Vec<f32>) -> StageTrace {
    StageTrace {
        name: "s".into(),
        cost,
        feature_dim: d,
        features,
        probs,
    }
}

#[test]
fn new_validates_in_memory_data() {
    let ok = || stage(1.0, 1, vec![0.0, 1.0], vec![1.0, 0.0, 0.5, 0.5]);
    ReplayBackend::new(meta(2), vec![ok()], vec![0, 1]).unwrap();
    let cases: Vec<(Vec<StageTrace>, Vec<u32>, usize, &str)> = vec![
        (vec![], vec![0], 2, "cascade is empty"),
        (vec![ok()], vec![], 2, "no samples"),
        (vec![ok()], vec![0, 2], 2, "sample 1 has label 2"),
        (
            vec![stage(0.0, 1, vec![0.0, 1.0], vec![1.0, 0.0, 0.5, 0.5])],
            vec![0, 1],
            2,
            "cost 0",
        ),
        (
            vec![stage(f64::NAN, 1, vec![0.0, 1.0], vec![1.0, 0.0, 0.5, 0.5])],
            vec![0, 1],
            2,
            "cost NaN",
        ),
        (
            vec![ok(), stage(2.0, 1, vec![0.0], vec![1.0, 0.0, 0.5, 0.5])],
            vec![0, 1],
            2,
            "stage1.features has 1 values, expected N*d = 2*1 = 2",
        ),
        (
            vec![stage(1.0, 0, vec![], vec![1.0, 0.0, 0.5, 0.5])],
            vec![0, 1],
            2,
            "feature_dim is 0",
        ),
        (
            vec![stage(1.0, 1, vec![0.0, 1.0], vec![1.0, 0.0, 0.5, 0.6])],
            vec![0, 1],
            2,
            "sample 1 sums to",
        ),
        (
            vec![stage(1.0, 1, vec![0.0, 1.0], vec![1.5, -0.5, 0.5, 0.5])],
            vec![0, 1],
            2,
            "sample 0 class 0 is 1.5",
        ),
        (vec![ok()], vec![0, 1], 0, "num_classes is 0"),
    ];
    for (stages, labels, c, want) in cases {
        let e = ReplayBackend::new(meta(c), stages, labels).unwrap_err();
        assert!(matches!(e, Error::Trace { path: None, .. }));
        let msg = e.to_string();
        assert!(msg.starts_with("trace: "), "{msg}");
        assert!(msg.contains(want), "expected {want:?} in {msg:?}");
    }
}

#[test]
fn subset_and_oracle() {
    let trace = common::small(2);
    let sub = trace.subset(&[5, 3], "val").unwrap();
    assert_eq!(sub.num_samples(), 2);
    assert_eq!(sub.meta().split, "val");
    assert_eq!(sub.labels(), &[trace.labels()[5], trace.labels()[3]]);
    assert_eq!(sub.stage_probs(1)[..5], trace.stage_probs(1)[25..30]);
    assert!(trace.subset(&[64], "x").is_err());

    // The synthetic trace's known optimum: stop at the first right stage,
    // or at stage 0 if no stage is right.
    let t = ReplayBackend::synthetic(&SyntheticTraceConfig {
        num_samples: 300,
        ..Default::default()
    })
    .unwrap();
    let spec = RewardSpec::with_alpha(0.5); // 0.5 * Cost(K) = 0.656 < 1
    let oracle = t.oracle(&spec).unwrap();
    let model = spec.compile(t.stage_costs()).unwrap();
    let mut by_stage = [0usize; 3];
    for (i, o) in oracle.iter().enumerate() {
        let right: Vec<bool> = (0..3)
            .map(|s| {
                let p = &t.stage_probs(s)[i * 10..(i + 1) * 10];
                cascade_env::reward::argmax(p) == t.labels()[i]
            })
            .collect();
        let want = right.iter().position(|&r| r).unwrap_or(0);
        assert_eq!(o.stage, want, "sample {i}");
        let loss = if right[want] { 0.0 } else { 1.0 };
        assert_eq!(o.reward, -loss - 0.5 * model.cost(want));
        // The difficulty hint and the right-flag features agree.
        assert_eq!(
            t.stage_features(want)[i * [16, 32, 64][want] + 1] == 1.0,
            right[want]
        );
        by_stage[want] += 1;
    }
    // Roughly 0.9/3 of the samples per difficulty plus 0.1 hopeless at 0.
    assert!(by_stage.iter().all(|&c| c > 60), "{by_stage:?}");
}

#[test]
fn synthetic_is_seeded_and_validates_its_config() {
    let a = ReplayBackend::synthetic(&SyntheticTraceConfig::default()).unwrap();
    let b = ReplayBackend::synthetic(&SyntheticTraceConfig::default()).unwrap();
    let c = ReplayBackend::synthetic(&SyntheticTraceConfig {
        seed: 1,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    for (cfg, want) in [
        (
            SyntheticTraceConfig {
                feature_dims: vec![],
                stage_costs: vec![],
                ..Default::default()
            },
            "no stages",
        ),
        (
            SyntheticTraceConfig {
                feature_dims: vec![1, 4, 4],
                ..Default::default()
            },
            "feature width 1 < 2",
        ),
        (
            SyntheticTraceConfig {
                stage_costs: vec![1.0],
                ..Default::default()
            },
            "3 feature widths but 1 stage costs",
        ),
        (
            SyntheticTraceConfig {
                num_classes: 1,
                ..Default::default()
            },
            "num_classes 1 < 2",
        ),
        (
            SyntheticTraceConfig {
                hopeless_fraction: 1.5,
                ..Default::default()
            },
            "hopeless_fraction",
        ),
        (
            SyntheticTraceConfig {
                stage_costs: vec![1.0, -1.0, 2.0],
                ..Default::default()
            },
            "cost -1",
        ),
    ] {
        let msg = ReplayBackend::synthetic(&cfg).unwrap_err().to_string();
        assert!(msg.contains(want), "expected {want:?} in {msg:?}");
    }
}

#[test]
fn recording_a_backend_keeps_every_output_and_stage_name() {
    let src = ReplayBackend::synthetic(&SyntheticTraceConfig {
        num_samples: 37,
        seed: 5,
        ..Default::default()
    })
    .unwrap();
    let names: Vec<String> = (0..src.num_stages()).map(|t| src.stage_name(t)).collect();
    // Through a box (pointer forwarding) and in chunks that do not divide n.
    let mut boxed: Box<dyn StageBackend> = Box::new(src.clone());
    assert_eq!(boxed.stage_name(1), names[1]);
    let rec = ReplayBackend::record(&mut boxed, src.meta().clone(), 8).unwrap();
    assert_eq!(rec.labels(), src.labels());
    assert_eq!(rec.stage_costs(), src.stage_costs());
    for (t, name) in names.iter().enumerate() {
        assert_eq!(&rec.stage_name(t), name);
        assert_eq!(rec.stage_features(t), src.stage_features(t));
        assert_eq!(rec.stage_probs(t), src.stage_probs(t));
    }
}

#[test]
fn the_content_hash_is_written_checked_and_computed_for_older_files() {
    let dir = tempfile::tempdir().unwrap();
    // A file written before the header had the hash loads, and its hash is
    // computed on load; it does not depend on the label dtype.
    let old = dir.path().join("old.safetensors");
    Raw::valid().write(&old, true);
    let t = ReplayBackend::load(&old).unwrap();
    let hash = t.content_sha256().to_string();
    assert_eq!(hash.len(), 64);
    assert_eq!(t.header().content_sha256.as_deref(), Some(hash.as_str()));
    let mut raw = Raw::valid();
    raw.set("labels", Dtype::U8, vec![3], vec![1, 0, 1]);
    raw.write(&old, true);
    assert_eq!(ReplayBackend::load(&old).unwrap().content_sha256(), hash);
    // The definition of the module docs, pinned: the value numpy and
    // hashlib give for sha256 of [K, N, C, d..] as u64, then features and
    // probs per stage, labels as i64, costs as f64.
    assert_eq!(
        hash,
        "64176442815e7f249360a59b8754616a0d8c21e606f344db0ccc3ca5fad49cfc"
    );

    // A saved trace carries it, and a changed number is refused on load.
    let path = dir.path().join("t.safetensors");
    let trace = common::small(9);
    trace.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let header: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()[TRACE_METADATA_KEY]).unwrap();
    assert_eq!(header["content_sha256"], trace.content_sha256());
    let mut flipped = bytes.clone();
    let last = flipped.len() - 20; // inside the data, far from the header
    flipped[last] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    let msg = ReplayBackend::load(&path).unwrap_err().to_string();
    assert!(
        msg.contains("t.safetensors") && msg.contains("content hash mismatch"),
        "{msg}"
    );
    // So is a header whose hash does not match its tensors.
    let mut raw = Raw::valid();
    raw.header["content_sha256"] = serde_json::json!("00".repeat(32));
    let msg = load_err(&raw);
    assert!(msg.contains("content hash mismatch"), "{msg}");
    // Descriptive fields do not change the hash.
    let mut raw = Raw::valid();
    raw.header["dataset"] = serde_json::json!("renamed");
    raw.header["content_sha256"] = serde_json::json!(hash);
    raw.write(&old, true);
    assert_eq!(ReplayBackend::load(&old).unwrap().content_sha256(), hash);
}
