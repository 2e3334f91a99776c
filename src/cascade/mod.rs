//! [`Cascade`]: a cascade folder loaded into memory, its stages' models
//! with their variables (for joint fine-tuning), saved back with
//! [`Cascade::save`]; the temperature calibration of its stages
//! ([`Cascade::calibrate`]) and its static reports ([`static_markdown`],
//! [`static_csv`]). The folder's files are described in
//! [`crate::checkpoint`].

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::checkpoint::{
    check_content_hash, check_stage_files, ckpt_err, load_model, read_manifest, save_model,
    write_manifest, CascadeManifest, SplitRoles, StageRecord, MANIFEST_FILE,
};
use crate::data::Normalization;
use crate::error::{Error, Result};
use crate::models::Model;

mod calibration;
mod report;
#[cfg(test)]
mod tests;

pub use report::{static_csv, static_markdown};

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
