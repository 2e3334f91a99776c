//! Checkpoints: one safetensors file per classifier plus a `cascade.json`
//! manifest per cascade: the files of a cascade folder, which
//! [`crate::cascade::Cascade`] loads and saves.
//!
//! A cascade folder, as written by [`crate::train::pretrain`]:
//!
//! | file | content |
//! |---|---|
//! | `stage1.safetensors` .. `stageK.safetensors` | weights and batch-norm running statistics, f32, PyTorch names (`conv1.weight`, `layer1.0.bn1.running_var`, `fc.bias`, ...) |
//! | `cascade.json` | [`CascadeManifest`]: data set, preset, per-stage model and training config, MACs, validation and test error, normalisation, seed, synthetic flag |
//! | `static.md`, `static.csv` | per-stage test error and cost as a share of the largest stage |
//! | `train_log.csv` | one row per stage and epoch (columns below) |
//!
//! # `train_log.csv`
//!
//! Pretraining (one row per stage and epoch, in a cascade folder) and the
//! learned stopping agents (one row per epoch, in an agent folder,
//! `cascade_agents::EpochMetrics`) write training logs of this one name
//! and share one metric vocabulary: `epoch` (1-based), `charts/*` for the
//! epoch's training samples, `losses/*` for training losses, `val/*` for
//! the validation evaluation after the epoch. The same name means the
//! same quantity; errors and costs are fractions, not percent.
//!
//! | column | pretraining | agents | meaning |
//! |---|---|---|---|
//! | `stage` | yes | | 1-based stage the row trains |
//! | `epoch` | yes | yes | 1-based epoch |
//! | `global_step` | | yes | optimisation steps so far |
//! | `charts/mean_reward` | | yes | mean reward of the epoch's training episodes |
//! | `charts/error` | yes | yes | error on the epoch's training samples (pretraining: train mode, augmented) |
//! | `charts/cost` | | yes | mean normalised cost of the epoch's training episodes |
//! | `losses/policy` | | yes | mean surrogate policy loss |
//! | `losses/classifier` | yes | yes | the classifiers' training loss: the mean cross-entropy (pretraining, and the expected-joint agent's classifier steps); the REINFORCE classifier term (joint agent); 0 when the classifiers are frozen |
//! | `losses/value` | | yes | mean value-baseline loss (0 without a learned baseline) |
//! | `charts/alpha` | | yes | the price of compute in the epoch |
//! | `charts/learning_rate` | yes | | learning rate at the epoch's last step |
//! | `charts/seconds` | yes | | wall time of the epoch with validation |
//! | `charts/sps` | yes | yes | training samples per second (images for pretraining, episodes, one image each, for the agents) |
//! | `val/mean_reward` | | yes | validation mean reward at the epoch's alpha |
//! | `val/loss` | yes | | validation cross-entropy |
//! | `val/error` | yes | yes | validation error |
//! | `val/cost` | | yes | validation mean normalised cost |
//! | `synthetic` | yes | | whether the data set is the synthetic one |
//!
//! Pretraining's columns come in the order of
//! [`crate::train::PRETRAIN_LOG_COLUMNS`], the agents' in the order above.
//!
//! Loading checks the manifest against what the caller expects (preset,
//! data set) and every safetensors file against its model config (missing,
//! extra, wrong-shaped or wrong-typed tensors) and refuses a mismatch with an
//! error naming the file and the tensors.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::Normalization;
use crate::error::{Error, Result};
use crate::flops;
use crate::models::{Model, ModelConfig};
use crate::train::TrainConfig;

// The loaded cascade and its reports lived here before they moved to
// `crate::cascade`; these paths keep working.
pub use crate::cascade::{static_csv, static_markdown, Cascade, CascadeStage};

/// Version of the `cascade.json` layout; bumped on incompatible changes.
pub const MANIFEST_VERSION: u32 = 1;

/// File name of the manifest in a cascade folder.
pub const MANIFEST_FILE: &str = "cascade.json";

/// File name of the per-epoch training log, pretraining's in a cascade
/// folder and the agents' in an agent folder (columns in the module docs).
pub const TRAIN_LOG_FILE: &str = "train_log.csv";

/// The checkpoint file name of stage `t` (1-based): `stage{t}.safetensors`.
pub fn stage_file_name(t: usize) -> String {
    format!("stage{t}.safetensors")
}

/// Sizes of the splits a cascade was trained and evaluated on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitRecord {
    /// Validation fraction carved from the training set.
    pub val_fraction: f64,
    /// Training images used.
    pub n_train: usize,
    /// Validation images.
    pub n_val: usize,
    /// Test images.
    pub n_test: usize,
}

/// One stage in `cascade.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// Stage number, 1-based (C_1 .. C_K).
    pub stage: usize,
    /// Canonical model name.
    pub name: String,
    /// Checkpoint file, relative to the cascade folder.
    pub file: String,
    /// Model configuration.
    pub model: ModelConfig,
    /// Training recipe used.
    pub train: TrainConfig,
    /// Multiply-accumulates per image (see [`crate::flops`]).
    pub macs: u64,
    /// Trainable parameters.
    pub params: u64,
    /// Stage feature dimension.
    pub feature_dim: usize,
    /// Epoch whose weights were kept (lowest validation error).
    pub best_epoch: usize,
    /// Validation error of the kept weights.
    pub val_error: f64,
    /// Validation cross-entropy of the kept weights.
    pub val_loss: f64,
    /// Test error (reported, never used for choices).
    pub test_error: f64,
    /// Test cross-entropy.
    pub test_loss: f64,
    /// Training wall time, seconds.
    pub train_seconds: f64,
    /// Softmax temperature `T_t`: the stage's probabilities are
    /// `softmax(logits / T_t)` everywhere a policy or the env reads them
    /// (1: uncalibrated). Fitted on held-out images by
    /// [`Cascade::calibrate`]; it never changes the argmax.
    #[serde(default = "unit_temperature")]
    pub temperature: f64,
    /// Content hash of `file` when it was written ([`crate::hash`]);
    /// loading refuses a file with another, so a manifest never describes
    /// another run's weights. Absent in folders written before it was
    /// recorded (then unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
}

fn unit_temperature() -> f64 {
    1.0
}

/// The four data roles of a cascade's experiments, each on its own images:
/// classifier training (D_C), policy training (D_P, never seen by the
/// classifiers), selection (D_V) and the report (D_T, read once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitRoles {
    /// D_C: images the classifiers were trained on.
    pub classifier_train: usize,
    /// D_P: images the stopping policies (and temperatures) are fitted on.
    pub policy_train: usize,
    /// D_V: thresholds, alphas, early stopping and every other choice.
    pub validation: usize,
    /// D_T: the report.
    pub test: usize,
    /// How D_P is carved, in words.
    pub rule: String,
}

/// How the stage temperatures in `cascade.json` were fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRecord {
    /// The split they were fitted on (held out from classifier training).
    pub split: String,
    /// Images in it.
    pub images: usize,
    /// Mean cross-entropy per stage at temperature 1.
    pub nll_before: Vec<f64>,
    /// Mean cross-entropy per stage at the fitted temperature.
    pub nll_after: Vec<f64>,
}

/// The content of `cascade.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeManifest {
    /// [`MANIFEST_VERSION`] at writing time.
    pub format_version: u32,
    /// Preset name.
    pub preset: String,
    /// Data set name.
    pub dataset: String,
    /// True when trained on the built-in synthetic data.
    pub synthetic: bool,
    /// The synthetic-data notice, present exactly when `synthetic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    /// Where the data came from.
    pub data_source: String,
    /// Input shape `(c, h, w)`.
    pub input_shape: [usize; 3],
    /// Number of classes.
    pub num_classes: usize,
    /// Class names.
    pub class_names: Vec<String>,
    /// Normalisation applied to inputs (fitted on the training split).
    pub normalization: Normalization,
    /// Run seed.
    pub seed: u64,
    /// Split sizes.
    pub split: SplitRecord,
    /// Device the stages were trained on.
    pub device: String,
    /// The stages, cheapest first.
    pub stages: Vec<StageRecord>,
    /// How the stage temperatures were fitted (absent: all 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationRecord>,
    /// The data roles of the experiments on this cascade (absent: only
    /// the pretraining split above is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<SplitRoles>,
}

pub(crate) fn ckpt_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Writes the weights of `model` to `path` as safetensors, atomically, with
/// metadata `format = pt` and the model name.
pub fn save_model(model: &Model, path: &Path) -> Result<()> {
    let vars = model.named_vars()?;
    let tensors: Vec<(String, Tensor)> = vars
        .into_iter()
        .map(|(k, v)| Ok((k, v.as_tensor().to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    let [c, h, w] = model.classifier().input_shape();
    let meta: HashMap<String, String> = [
        ("format".to_string(), "pt".to_string()),
        ("model".to_string(), model.config().name()),
        ("input_shape".to_string(), format!("{c},{h},{w}")),
        (
            "num_classes".to_string(),
            model.classifier().num_classes().to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let bytes = serialize_safetensors(&tensors, meta)
        .map_err(|e| ckpt_err(path, format!("cannot serialise: {e}")))?;
    crate::fsutil::write_atomic(path, &bytes).map_err(|e| Error::io(path, e))
}

/// The safetensors bytes of `tensors` with the metadata `meta`, the same
/// bytes for the same tensors and metadata every time. The safetensors
/// writer takes the metadata as a `HashMap` and writes its keys in that
/// map's order, which changes from one map to the next; the header is
/// therefore written again with every object's keys sorted (the tensors'
/// data and their offsets are untouched; the header stays padded with
/// spaces to a multiple of 8 bytes, as the format asks).
pub fn serialize_safetensors(
    tensors: &[(String, Tensor)],
    meta: HashMap<String, String>,
) -> std::result::Result<Vec<u8>, String> {
    use serde_json::Value;
    fn sorted(v: Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut entries: Vec<(String, Value)> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            other => other,
        }
    }
    const N_LEN: usize = 8;
    let bytes =
        safetensors::tensor::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))
            .map_err(|e| e.to_string())?;
    let n = bytes
        .get(..N_LEN)
        .and_then(|b| <[u8; N_LEN]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| N_LEN + n <= bytes.len())
        .ok_or("the writer's header length is out of range")?;
    let header: Value =
        serde_json::from_slice(&bytes[N_LEN..N_LEN + n]).map_err(|e| e.to_string())?;
    let mut h = serde_json::to_vec(&sorted(header)).map_err(|e| e.to_string())?;
    h.resize(h.len().next_multiple_of(N_LEN), b' ');
    let mut out = Vec::with_capacity(N_LEN + h.len() + bytes.len() - N_LEN - n);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[N_LEN + n..]);
    Ok(out)
}

/// Loads a model of `config` for `input_shape` / `num_classes` from the
/// safetensors file at `path` onto `device`. The file must hold exactly the
/// tensors the model has, with the same shapes, in f32; anything else is
/// refused with a list of the differences.
pub fn load_model(
    path: &Path,
    config: &ModelConfig,
    input_shape: [usize; 3],
    num_classes: usize,
    device: &Device,
) -> Result<Model> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let stored = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| ckpt_err(path, format!("not a readable safetensors file: {e}")))?;
    let model = Model::new(config, input_shape, num_classes, 0, device)?;
    let vars = model.named_vars()?;
    let expected: BTreeSet<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    let found: BTreeSet<&str> = stored.keys().map(|k| k.as_str()).collect();
    let mut problems = Vec::new();
    let missing: Vec<&str> = expected.difference(&found).copied().collect();
    if !missing.is_empty() {
        problems.push(format!("missing tensors {}", list(&missing)));
    }
    let extra: Vec<&str> = found.difference(&expected).copied().collect();
    if !extra.is_empty() {
        problems.push(format!("unexpected tensors {}", list(&extra)));
    }
    for (name, var) in &vars {
        if let Some(t) = stored.get(name) {
            if t.dims() != var.dims() {
                problems.push(format!(
                    "{name} has shape {:?}, the model needs {:?}",
                    t.dims(),
                    var.dims()
                ));
            } else if t.dtype() != DType::F32 {
                problems.push(format!("{name} is {:?}, expected f32", t.dtype()));
            } else if let Some((i, v)) = first_non_finite(t)? {
                problems.push(format!(
                    "{name} holds {v} at flat index {i} (weights must be finite)"
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(ckpt_err(
            path,
            format!("does not match model {}: {}", config, problems.join("; ")),
        ));
    }
    for (name, var) in &vars {
        let t = stored[name].to_device(device)?;
        var.set(&t)?;
    }
    Ok(model)
}

/// The flat index and value of the first NaN or infinite entry of `t`
/// (any float dtype), or `None` when every entry is finite.
pub fn first_non_finite(t: &Tensor) -> Result<Option<(usize, f32)>> {
    let v = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i])))
}

fn list(names: &[&str]) -> String {
    const SHOW: usize = 6;
    let mut s = names
        .iter()
        .take(SHOW)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOW {
        s += &format!(" and {} more", names.len() - SHOW);
    }
    s
}

/// Writes `dir/cascade.json` atomically.
pub fn write_manifest(dir: &Path, manifest: &CascadeManifest) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Json {
        path: path.clone(),
        source: e,
    })?;
    crate::fsutil::write_atomic(&path, &json).map_err(|e| Error::io(&path, e))
}

/// Reads and checks `dir/cascade.json` (version, stage numbering, the
/// synthetic notice, MACs recomputed from the configs).
pub fn read_manifest(dir: &Path) -> Result<CascadeManifest> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let m: CascadeManifest = serde_json::from_slice(&bytes).map_err(|e| Error::Json {
        path: path.clone(),
        source: e,
    })?;
    if m.format_version != MANIFEST_VERSION {
        return Err(ckpt_err(
            &path,
            format!(
                "format version {} is not supported (this build reads {MANIFEST_VERSION})",
                m.format_version
            ),
        ));
    }
    if m.stages.is_empty() {
        return Err(ckpt_err(&path, "lists no stages"));
    }
    if m.synthetic != m.notice.is_some() {
        return Err(ckpt_err(&path, "synthetic flag and notice disagree"));
    }
    if m.class_names.len() != m.num_classes {
        return Err(ckpt_err(
            &path,
            format!(
                "num_classes is {} but {} class names are listed",
                m.num_classes,
                m.class_names.len()
            ),
        ));
    }
    for (i, s) in m.stages.iter().enumerate() {
        if s.stage != i + 1 {
            return Err(ckpt_err(
                &path,
                format!("stage {} listed in position {}", s.stage, i + 1),
            ));
        }
        let macs = flops::count(&s.model, m.input_shape, m.num_classes)
            .map_err(|e| ckpt_err(&path, format!("stage {}: {e}", s.stage)))?
            .macs;
        if macs != s.macs {
            return Err(ckpt_err(
                &path,
                format!(
                    "stage {}: records {} MACs but {} counts {macs}",
                    s.stage, s.macs, s.model
                ),
            ));
        }
    }
    Ok(m)
}

/// Checks the stage files of `dir` against its manifest: every listed
/// file is a bare name inside the folder, and no stage file beyond the
/// listed stages lies there (the leftover of a larger cascade written to
/// the same folder would otherwise be mistaken for part of this one).
pub(crate) fn check_stage_files(dir: &Path, m: &CascadeManifest) -> Result<()> {
    let mpath = dir.join(MANIFEST_FILE);
    for s in &m.stages {
        let bare = Path::new(&s.file).file_name().map(|n| n == s.file.as_str());
        if bare != Some(true) {
            return Err(ckpt_err(
                &mpath,
                format!(
                    "stage {}: file {:?} must be a file name inside the cascade folder",
                    s.stage, s.file
                ),
            ));
        }
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let index = name
            .strip_prefix("stage")
            .and_then(|r| r.strip_suffix(".safetensors"))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(t) = index.filter(|&t| t > m.stages.len()) {
            return Err(ckpt_err(
                &mpath,
                format!(
                    "lists {} stages, but the folder also holds {name} (stage {t}); \
                     remove it or pretrain into a fresh folder",
                    m.stages.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks stage `r`'s file against the content hash `cascade.json`
/// records for it (when it records one).
pub(crate) fn check_content_hash(dir: &Path, r: &StageRecord) -> Result<()> {
    let Some(want) = &r.content_hash else {
        return Ok(());
    };
    let have = crate::hash::file_hash(&dir.join(&r.file))?;
    if &have != want {
        return Err(ckpt_err(
            &dir.join(MANIFEST_FILE),
            format!(
                "stage {}: {} has content hash {have}, but the manifest was written with one of \
                 hash {want}: the file comes from another run or changed since; pretrain again",
                r.stage, r.file
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_model_is_independent() {
        let cfg: ModelConfig = "resnet-8-w0.25".parse().unwrap();
        let m = Model::new(&cfg, [1, 12, 12], 4, 3, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1., (5, 1, 12, 12), &Device::Cpu).unwrap();
        // Running statistics are copied too.
        m.forward_t(&x, true).unwrap();
        let logits = |m: &Model| {
            m.forward_t(&x, false)
                .unwrap()
                .logits
                .to_vec2::<f32>()
                .unwrap()
        };
        let before = logits(&m);
        let f = m.fork().unwrap();
        assert_eq!(logits(&f), before);
        for (_, v) in f.named_vars().unwrap() {
            v.set(&v.as_tensor().zeros_like().unwrap()).unwrap();
        }
        assert_ne!(logits(&f), before);
        assert_eq!(logits(&m), before, "changing the fork changed the original");
    }

    #[test]
    fn non_finite_weights_are_refused_naming_file_and_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage2.safetensors");
        let cfg: ModelConfig = "mlp-8".parse().unwrap();
        let m = Model::new(&cfg, [1, 4, 4], 3, 1, &Device::Cpu).unwrap();
        save_model(&m, &path).unwrap();
        assert!(load_model(&path, &cfg, [1, 4, 4], 3, &Device::Cpu).is_ok());
        for bad in [f32::NAN, f32::INFINITY] {
            let mut stored = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
            let name = stored.keys().min().unwrap().clone();
            let t = &stored[&name];
            let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v[1] = bad;
            let t = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
            stored.insert(name.clone(), t);
            let broken = dir.path().join("broken.safetensors");
            candle_core::safetensors::save(&stored, &broken).unwrap();
            let err = load_model(&broken, &cfg, [1, 4, 4], 3, &Device::Cpu)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("broken.safetensors")
                    && err.contains(&format!("{name} holds {bad} at flat index 1")),
                "{err}"
            );
        }
    }

    #[test]
    fn saved_model_files_are_byte_identical_and_keep_their_metadata() {
        // The metadata's four keys come out of a fresh HashMap each save,
        // in an order that changes from map to map: without the sorted
        // header, eight saves would almost surely not all agree.
        let dir = tempfile::tempdir().unwrap();
        let cfg: ModelConfig = "resnet-8-w0.25".parse().unwrap();
        let m = Model::new(&cfg, [1, 12, 12], 4, 9, &Device::Cpu).unwrap();
        let files: Vec<Vec<u8>> = (0..8)
            .map(|i| {
                let path = dir.path().join(format!("m{i}.safetensors"));
                save_model(&m, &path).unwrap();
                std::fs::read(&path).unwrap()
            })
            .collect();
        assert!(files.iter().all(|f| f == &files[0]));
        let n = u64::from_le_bytes(files[0][..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0, "header padded to 8 bytes");
        let (_, st) = safetensors::SafeTensors::read_metadata(&files[0]).unwrap();
        let meta = st.metadata().as_ref().unwrap();
        assert_eq!(meta["model"], "resnet-8-w0.25");
        assert_eq!(meta["input_shape"], "1,12,12");
        assert_eq!(meta["num_classes"], "4");
        assert_eq!(meta["format"], "pt");
        let back = load_model(
            &dir.path().join("m3.safetensors"),
            &cfg,
            [1, 12, 12],
            4,
            &Device::Cpu,
        );
        assert!(back.is_ok());
    }

    #[test]
    fn saved_model_reloads_bit_identically_and_mismatches_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let cfg: ModelConfig = "resnet-8-w0.25".parse().unwrap();
        let m = Model::new(&cfg, [1, 12, 12], 4, 9, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1., (5, 1, 12, 12), &Device::Cpu).unwrap();
        // Train-mode passes change the running statistics, which must be saved.
        m.forward_t(&x, true).unwrap();
        let before = m.forward_t(&x, false).unwrap();
        save_model(&m, &path).unwrap();
        let back = load_model(&path, &cfg, [1, 12, 12], 4, &Device::Cpu).unwrap();
        let after = back.forward_t(&x, false).unwrap();
        let a: Vec<Vec<f32>> = before.logits.to_vec2().unwrap();
        let b: Vec<Vec<f32>> = after.logits.to_vec2().unwrap();
        assert_eq!(a, b);
        assert_eq!(
            before.features.to_vec2::<f32>().unwrap(),
            after.features.to_vec2::<f32>().unwrap()
        );

        // Another model: missing, extra and wrong-shaped tensors.
        let err = load_model(
            &path,
            &"resnet-8-w0.5".parse().unwrap(),
            [1, 12, 12],
            4,
            &Device::Cpu,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("conv1.weight has shape [4, 1, 3, 3]"), "{err}");
        let err = load_model(
            &path,
            &"resnet-8-w0.25-b".parse().unwrap(),
            [1, 12, 12],
            4,
            &Device::Cpu,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("missing tensors layer2.0.downsample"), "{err}");
        let err = load_model(
            &path,
            &"cnn-4".parse().unwrap(),
            [1, 12, 12],
            4,
            &Device::Cpu,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unexpected tensors"), "{err}");
        // A truncated file.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_model(&path, &cfg, [1, 12, 12], 4, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a readable safetensors file"), "{err}");
    }
}
