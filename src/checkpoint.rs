//! Checkpoints: one safetensors file per classifier plus a `cascade.json`
//! manifest per cascade, and the [`Cascade`] they load into.
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
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Normalization};
use crate::error::{Error, Result};
use crate::flops;
use crate::models::{Model, ModelConfig};
use crate::train::TrainConfig;

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

fn ckpt_err(path: &Path, msg: impl Into<String>) -> Error {
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
fn check_stage_files(dir: &Path, m: &CascadeManifest) -> Result<()> {
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
fn check_content_hash(dir: &Path, r: &StageRecord) -> Result<()> {
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

/// One loaded stage.
#[derive(Debug)]
pub struct CascadeStage {
    /// Its record in `cascade.json`.
    pub record: StageRecord,
    /// The classifier with its variables (fine-tunable).
    pub model: Model,
}

/// A loaded cascade: per-stage models (with their variables, for joint
/// fine-tuning), costs, feature dimensions and the input normalisation.
/// Stages are indexed from 0 here (`stages()[0]` is C_1).
///
/// Not `Clone` (the weights are shared handles): [`Cascade::fork`] makes an
/// independent copy, e.g. for joint fine-tuning that must leave the
/// pretrained cascade as it is.
#[derive(Debug)]
pub struct Cascade {
    dir: PathBuf,
    manifest: CascadeManifest,
    stages: Vec<CascadeStage>,
}

impl Cascade {
    /// Loads the cascade in `dir` onto `device`. When `expected_preset` or
    /// `expected_dataset` is given, a cascade trained for another preset or
    /// data set is refused; so is any checkpoint file that does not match
    /// its stage's model config.
    pub fn load(
        dir: &Path,
        device: &Device,
        expected_preset: Option<&str>,
        expected_dataset: Option<&str>,
    ) -> Result<Cascade> {
        let manifest = read_manifest(dir)?;
        let mpath = dir.join(MANIFEST_FILE);
        if let Some(p) = expected_preset {
            if p != manifest.preset {
                return Err(ckpt_err(
                    &mpath,
                    format!(
                        "was trained for preset '{}', but preset '{p}' was requested",
                        manifest.preset
                    ),
                ));
            }
        }
        if let Some(d) = expected_dataset {
            if d != manifest.dataset {
                return Err(ckpt_err(
                    &mpath,
                    format!(
                        "was trained on data set '{}', but '{d}' was requested",
                        manifest.dataset
                    ),
                ));
            }
        }
        check_stage_files(dir, &manifest)?;
        let stages = manifest
            .stages
            .iter()
            .map(|r| {
                let model = load_model(
                    &dir.join(&r.file),
                    &r.model,
                    manifest.input_shape,
                    manifest.num_classes,
                    device,
                )?;
                check_content_hash(dir, r)?;
                Ok(CascadeStage {
                    record: r.clone(),
                    model,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Cascade {
            dir: dir.to_path_buf(),
            manifest,
            stages,
        })
    }

    /// Writes every stage's current weights and the manifest to `dir`
    /// (e.g. after fine-tuning), atomically per file, manifest last.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut stages = Vec::with_capacity(self.stages.len());
        for s in &self.stages {
            let path = dir.join(&s.record.file);
            save_model(&s.model, &path)?;
            stages.push(StageRecord {
                content_hash: Some(crate::hash::file_hash(&path)?),
                ..s.record.clone()
            });
        }
        let manifest = CascadeManifest {
            stages,
            ..self.manifest.clone()
        };
        write_manifest(dir, &manifest)
    }

    /// An independent copy (every stage [`Model::fork`]ed): fine-tuning the
    /// copy leaves this cascade unchanged.
    pub fn fork(&self) -> Result<Cascade> {
        Ok(Cascade {
            dir: self.dir.clone(),
            manifest: self.manifest.clone(),
            stages: self
                .stages
                .iter()
                .map(|s| {
                    Ok(CascadeStage {
                        record: s.record.clone(),
                        model: s.model.fork()?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        })
    }

    /// The folder it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &CascadeManifest {
        &self.manifest
    }

    /// The stages, cheapest first.
    pub fn stages(&self) -> &[CascadeStage] {
        &self.stages
    }

    /// Number of stages K.
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Always false: a loaded cascade has at least one stage.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The device the classifiers live on (the CPU for an empty cascade).
    pub fn device(&self) -> Device {
        self.stages
            .first()
            .map_or(Device::Cpu, |s| s.model.device().clone())
    }

    /// The model of stage `i` (0-based).
    pub fn model(&self, i: usize) -> Option<&Model> {
        self.stages.get(i).map(|s| &s.model)
    }

    /// MACs per image of each stage run alone.
    pub fn macs(&self) -> Vec<u64> {
        self.stages.iter().map(|s| s.record.macs).collect()
    }

    /// Feature dimension of each stage.
    pub fn feature_dims(&self) -> Vec<usize> {
        self.stages
            .iter()
            .map(|s| s.model.classifier().feature_dim())
            .collect()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.manifest.num_classes
    }

    /// The softmax temperature of each stage (see [`StageRecord::temperature`]).
    pub fn temperatures(&self) -> Vec<f64> {
        self.stages.iter().map(|s| s.record.temperature).collect()
    }

    /// Records the data roles in `cascade.json` (rewritten atomically).
    pub fn record_roles(&mut self, roles: SplitRoles) -> Result<()> {
        self.manifest.roles = Some(roles);
        write_manifest(&self.dir, &self.manifest)
    }

    /// Fits one softmax temperature per stage on `held_out` (images the
    /// classifiers never trained on, normalised like the cascade's inputs)
    /// by minimising the mean cross-entropy of `softmax(logits / T)`
    /// (Guo et al. 2017), records them with a [`CalibrationRecord`] naming
    /// `split`, and rewrites `cascade.json` in the cascade's folder.
    pub fn calibrate(&mut self, held_out: &Dataset, split: &str, batch: usize) -> Result<()> {
        self.fit_temperatures(held_out, split, batch)?;
        write_manifest(&self.dir, &self.manifest)
    }

    /// [`Cascade::calibrate`] in memory only: the cascade's folder is not
    /// touched (a cascade being fine-tuned refits its temperatures as its
    /// classifiers change; saving it writes them).
    pub fn fit_temperatures(
        &mut self,
        held_out: &Dataset,
        split: &str,
        batch: usize,
    ) -> Result<()> {
        if held_out.is_empty() || held_out.shape != self.input_shape() {
            return Err(Error::Config(format!(
                "calibration split '{}' ({} images of {:?}) does not fit the cascade ({:?})",
                held_out.name,
                held_out.len(),
                held_out.shape,
                self.input_shape()
            )));
        }
        let c = self.num_classes();
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for t in 0..self.stages.len() {
            let logits = stage_logits(&self.stages[t].model, held_out, batch.max(1))?;
            let nll = |beta: f64| mean_nll(&logits, &held_out.labels, c, beta);
            let beta = minimise_convex(nll, 0.02, 50.0);
            let temperature = 1.0 / beta;
            if !temperature.is_finite() {
                return Err(Error::Training(format!(
                    "stage {}: temperature fit gave {temperature}",
                    t + 1
                )));
            }
            before.push(nll(1.0));
            after.push(nll(beta));
            self.stages[t].record.temperature = temperature;
        }
        self.manifest.calibration = Some(CalibrationRecord {
            split: split.to_string(),
            images: held_out.len(),
            nll_before: before,
            nll_after: after,
        });
        self.manifest.stages = self.stages.iter().map(|s| s.record.clone()).collect();
        Ok(())
    }

    /// Sets the stages' temperatures in memory (one per stage, each
    /// positive and finite), e.g. back to those of a snapshot.
    pub fn set_temperatures(&mut self, temperatures: &[f64]) -> Result<()> {
        if temperatures.len() != self.stages.len()
            || temperatures.iter().any(|t| !(t.is_finite() && *t > 0.0))
        {
            return Err(Error::Config(format!(
                "temperatures {temperatures:?} for {} stages: one positive, finite value per stage",
                self.stages.len()
            )));
        }
        for (s, &t) in self.stages.iter_mut().zip(temperatures) {
            s.record.temperature = t;
        }
        self.manifest.stages = self.stages.iter().map(|s| s.record.clone()).collect();
        Ok(())
    }

    /// Input shape `(c, h, w)`.
    pub fn input_shape(&self) -> [usize; 3] {
        self.manifest.input_shape
    }

    /// The normalisation the classifiers expect their inputs in.
    pub fn normalization(&self) -> &Normalization {
        &self.manifest.normalization
    }

    /// Data set name.
    pub fn dataset(&self) -> &str {
        &self.manifest.dataset
    }

    /// Preset name.
    pub fn preset(&self) -> &str {
        &self.manifest.preset
    }

    /// True when trained on synthetic data.
    pub fn is_synthetic(&self) -> bool {
        self.manifest.synthetic
    }
}

/// One row of the static table.
struct StaticRow {
    stage: usize,
    name: String,
    macs: u64,
    /// % of the largest stage's MACs.
    pct: f64,
    cumulative: u64,
    cumulative_pct: f64,
    val_error: f64,
    test_error: f64,
}

fn static_rows(m: &CascadeManifest) -> Vec<StaticRow> {
    let largest = m.stages.iter().map(|s| s.macs).max().unwrap_or(1).max(1) as f64;
    let mut cum = 0u64;
    m.stages
        .iter()
        .map(|s| {
            cum += s.macs;
            StaticRow {
                stage: s.stage,
                name: s.name.clone(),
                macs: s.macs,
                pct: 100.0 * s.macs as f64 / largest,
                cumulative: cum,
                cumulative_pct: 100.0 * cum as f64 / largest,
                val_error: s.val_error,
                test_error: s.test_error,
            }
        })
        .collect()
}

/// The static table in Markdown: each stage used alone, its test error and
/// cost as a share of the largest stage.
pub fn static_markdown(m: &CascadeManifest) -> String {
    let mut s = format!(
        "# Static cascade table: preset `{}`, data set `{}`\n\n",
        m.preset, m.dataset
    );
    if let Some(n) = &m.notice {
        s += &format!("**{n}**\n\n");
    }
    s += &format!(
        "Each stage used alone on the {} test images (seed {}). MACs per image; \
         % is of the largest stage; cumulative = all stages up to this one run.\n\n",
        m.split.n_test, m.seed
    );
    s += "| stage | model | MACs | % of largest | cumulative MACs | cumulative % | val error % | test error % |\n";
    s += "|---:|---|---:|---:|---:|---:|---:|---:|\n";
    for r in static_rows(m) {
        s += &format!(
            "| {} | {} | {} | {:.2} | {} | {:.2} | {:.2} | {:.2} |\n",
            r.stage,
            r.name,
            r.macs,
            r.pct,
            r.cumulative,
            r.cumulative_pct,
            100.0 * r.val_error,
            100.0 * r.test_error
        );
    }
    s
}

/// The static table as CSV (one row per stage; the `synthetic` column says
/// whether the numbers come from synthetic data).
pub fn static_csv(m: &CascadeManifest) -> String {
    let mut s = String::from(
        "preset,dataset,synthetic,stage,model,macs,macs_pct_of_largest,cumulative_macs,cumulative_pct_of_largest,val_error,test_error\n",
    );
    for r in static_rows(m) {
        s += &format!(
            "{},{},{},{},{},{},{:.4},{},{:.4},{:.6},{:.6}\n",
            m.preset,
            m.dataset,
            m.synthetic,
            r.stage,
            r.name,
            r.macs,
            r.pct,
            r.cumulative,
            r.cumulative_pct,
            r.val_error,
            r.test_error
        );
    }
    s
}

/// The logits of `model` (eval mode) on every image of `ds`, `[n * C]`.
fn stage_logits(model: &Model, ds: &Dataset, batch: usize) -> Result<Vec<f32>> {
    let [c, h, w] = ds.shape;
    let mut out = Vec::with_capacity(ds.len() * model.classifier().num_classes());
    let idx: Vec<usize> = (0..ds.len()).collect();
    for part in idx.chunks(batch) {
        let mut x = Vec::with_capacity(part.len() * c * h * w);
        for &i in part {
            x.extend_from_slice(ds.image(i));
        }
        let x = Tensor::from_vec(x, (part.len(), c, h, w), model.device())?;
        let logits = model.forward_t(&x, false)?.logits;
        out.extend(
            logits
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    Ok(out)
}

/// Mean cross-entropy of `softmax(beta * logits)` (`[n * c]`) against `labels`.
fn mean_nll(logits: &[f32], labels: &[u32], c: usize, beta: f64) -> f64 {
    let mut total = 0.0;
    for (row, &y) in logits.chunks_exact(c).zip(labels) {
        let m = row
            .iter()
            .fold(f64::NEG_INFINITY, |a, &v| a.max(beta * v as f64));
        let lse = m + row
            .iter()
            .map(|&v| (beta * v as f64 - m).exp())
            .sum::<f64>()
            .ln();
        total += lse - beta * row[y as usize] as f64;
    }
    total / labels.len().max(1) as f64
}

/// The minimiser of a convex function on `[lo, hi]` by golden-section
/// search on a log scale (to 1e-6 relative).
fn minimise_convex(f: impl Fn(f64) -> f64, lo: f64, hi: f64) -> f64 {
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (lo.ln(), hi.ln());
    let mut x1 = b - g * (b - a);
    let mut x2 = a + g * (b - a);
    let (mut f1, mut f2) = (f(x1.exp()), f(x2.exp()));
    while b - a > 1e-6 {
        if f1 <= f2 {
            b = x2;
            x2 = x1;
            f2 = f1;
            x1 = b - g * (b - a);
            f1 = f(x1.exp());
        } else {
            a = x1;
            x1 = x2;
            f1 = f2;
            x2 = a + g * (b - a);
            f2 = f(x2.exp());
        }
    }
    ((a + b) / 2.0).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
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
            crate::data::Splits::load("synthetic", None, &SplitConfig { seed: 3, ..split })
                .unwrap();
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
            err.contains("stage 2: stage2.safetensors has content hash")
                && err.contains("another run"),
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
