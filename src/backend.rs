//! The live backend: the pretrained candle cascade behind
//! [`cascade_env::StageBackend`], run lazily.
//!
//! Stage t runs only for the samples the env asks for, which are exactly the
//! samples that went forward to it, in batches. That is what makes the
//! saving of early stopping real: a sample stopped at stage 1 never pays for
//! stages 2..K. Batch norm is folded into the convolutions once at
//! construction, so inference pays for the convs only.

use candle_core::{DType, Device, Tensor};
use cascade_env::{ReplayBackend, StageBackend, StageBatch, TraceMeta};

use crate::cascade::Cascade;
use crate::data::{renormalize, same_images, Dataset, SplitConfig, Splits, SyntheticConfig};
use crate::error::{Error, Result};
use crate::models::Classifier;

/// Samples per forward pass when the caller does not choose.
pub const DEFAULT_BATCH: usize = 512;

/// The split settings that rebuild a cascade's data: the recorded seed,
/// validation fraction and sizes. When `cascade.json` records held-out
/// policy images ([`crate::checkpoint::SplitRoles`]), the synthetic
/// generator is sized for them too, as the study that carved them did.
fn recorded_split(cascade: &Cascade, max_train: usize) -> SplitConfig {
    let m = cascade.manifest();
    let policy = m
        .roles
        .as_ref()
        .filter(|r| r.classifier_train == m.split.n_train)
        .map_or(0, |r| r.policy_train);
    SplitConfig {
        val_fraction: m.split.val_fraction,
        seed: m.seed,
        max_train: Some(max_train),
        max_val: Some(m.split.n_val),
        max_test: Some(m.split.n_test),
        synthetic: SyntheticConfig {
            n_train: m.split.n_train + policy + m.split.n_val,
            n_test: m.split.n_test,
            ..SyntheticConfig::default()
        },
    }
}

/// Reloads the data splits a cascade was trained on: same data set, seed,
/// validation fraction and sizes as recorded in its `cascade.json`. The
/// normalisation refitted on the reloaded training split must equal the
/// recorded one, which proves it is the same split; otherwise this fails
/// rather than evaluate on data the cascade may have trained on.
pub fn cascade_splits(cascade: &Cascade, data_dir: Option<&std::path::Path>) -> Result<Splits> {
    let m = cascade.manifest();
    let cfg = recorded_split(cascade, m.split.n_train);
    let splits = Splits::load(&m.dataset, data_dir, &cfg)?;
    if splits.normalization != m.normalization || splits.train.len() != m.split.n_train {
        return Err(Error::Checkpoint {
            path: cascade.dir().join("cascade.json"),
            msg: format!(
                "cannot reproduce the training split of data set '{}' (seed {}): the reloaded \
                 training statistics {:?} differ from the recorded {:?}",
                m.dataset, m.seed, splits.normalization, m.normalization
            ),
        });
    }
    Ok(splits)
}

/// The policy images D_P recorded in a cascade's `cascade.json` (held out
/// from classifier training: the seeded training split's images after the
/// classifiers' own), normalised like the cascade's inputs; `None` when
/// the cascade records none. `splits` are the cascade's own
/// ([`cascade_splits`]): its training images are checked to be the prefix
/// of the longer split, so no classifier training image can leak into D_P.
pub fn cascade_policy_split(
    cascade: &Cascade,
    splits: &Splits,
    data_dir: Option<&std::path::Path>,
) -> Result<Option<Dataset>> {
    let m = cascade.manifest();
    let n_cls = m.split.n_train;
    let n_policy = match &m.roles {
        Some(r) if r.policy_train > 0 && r.classifier_train == n_cls => r.policy_train,
        _ => return Ok(None),
    };
    let all = Splits::load(
        &m.dataset,
        data_dir,
        &recorded_split(cascade, n_cls + n_policy),
    )?;
    let mismatch = |what: &str| Error::Checkpoint {
        path: cascade.dir().join("cascade.json"),
        msg: format!(
            "cannot rebuild the {n_policy} policy images of data set '{}' (seed {}): {what}",
            m.dataset, m.seed
        ),
    };
    if all.train.len() != n_cls + n_policy {
        return Err(mismatch(&format!(
            "the training split has {} images, not {}",
            all.train.len(),
            n_cls + n_policy
        )));
    }
    let head: Vec<usize> = (0..n_cls.min(32)).collect();
    let mut check = all.train.subset(&head);
    renormalize(&mut check, &all.normalization, &m.normalization);
    let reference = splits.train.subset(&head);
    if !same_images(&check, &reference) {
        return Err(mismatch(
            "the classifiers' images are not the prefix of the longer split",
        ));
    }
    let rest: Vec<usize> = (n_cls..n_cls + n_policy).collect();
    let mut policy = all.train.subset(&rest);
    renormalize(&mut policy, &all.normalization, &m.normalization);
    Ok(Some(policy))
}

/// A cascade of candle classifiers over one normalised data split.
pub struct CandleBackend {
    stages: Vec<Classifier>,
    stage_names: Vec<String>,
    dataset: String,
    cascade_name: String,
    /// The folder the cascade was loaded from (named in errors).
    cascade_dir: std::path::PathBuf,
    images: Vec<f32>,
    labels: Vec<u32>,
    shape: [usize; 3],
    costs: Vec<f64>,
    feature_dims: Vec<usize>,
    /// `1 / T_t` per stage (the cascade's fitted temperatures).
    inv_temperatures: Vec<f64>,
    num_classes: usize,
    device: Device,
    batch: usize,
    /// Samples run per stage since construction (for accounting and tests).
    runs: Vec<u64>,
}

impl std::fmt::Debug for CandleBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandleBackend")
            .field("stages", &self.stages.len())
            .field("samples", &self.labels.len())
            .field("costs", &self.costs)
            .field("device", &self.device)
            .field("batch", &self.batch)
            .finish()
    }
}

impl CandleBackend {
    /// Wraps `cascade` over `split` (already normalised with the cascade's
    /// statistics, as [`crate::data::Splits`] does). `batch` caps the
    /// samples per forward pass.
    pub fn new(cascade: &Cascade, split: &Dataset, batch: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Config("backend batch size must be positive".into()));
        }
        if split.is_empty() {
            return Err(Error::Config(format!(
                "data split of '{}' is empty",
                split.name
            )));
        }
        if split.shape != cascade.input_shape() || split.num_classes() != cascade.num_classes() {
            return Err(Error::Config(format!(
                "data '{}' ({:?}, {} classes) does not fit the cascade ({:?}, {} classes)",
                split.name,
                split.shape,
                split.num_classes(),
                cascade.input_shape(),
                cascade.num_classes()
            )));
        }
        let mut stages = Vec::with_capacity(cascade.len());
        let mut device = Device::Cpu;
        for s in cascade.stages() {
            device = s.model.device().clone();
            stages.push(s.model.classifier().fold_batch_norm()?);
        }
        Ok(Self {
            costs: cascade.macs().iter().map(|&m| m as f64).collect(),
            feature_dims: cascade.feature_dims(),
            inv_temperatures: cascade.temperatures().iter().map(|t| 1.0 / t).collect(),
            num_classes: cascade.num_classes(),
            runs: vec![0; stages.len()],
            stage_names: cascade
                .stages()
                .iter()
                .map(|s| s.model.config().name())
                .collect(),
            dataset: cascade.dataset().to_string(),
            cascade_name: cascade.preset().to_string(),
            cascade_dir: cascade.dir().to_path_buf(),
            stages,
            images: split.images.clone(),
            labels: split.labels.clone(),
            shape: split.shape,
            device,
            batch,
        })
    }

    /// How many sample evaluations each stage has run so far.
    pub fn stage_runs(&self) -> &[u64] {
        &self.runs
    }

    /// Runs stage `stage` on the given samples, returning `(features, probs)`
    /// as tensors on the backend's device.
    ///
    /// # Shapes
    /// `samples: [n]` -> `features: [n, d_stage]`, `probs: [n, classes]`
    pub fn forward_samples(&self, stage: usize, samples: &[usize]) -> Result<(Tensor, Tensor)> {
        let d = self.shape.iter().product::<usize>();
        let mut x = Vec::with_capacity(samples.len() * d);
        for &i in samples {
            x.extend_from_slice(&self.images[i * d..(i + 1) * d]);
        }
        let [c, h, w] = self.shape;
        let x = Tensor::from_vec(x, (samples.len(), c, h, w), &self.device)?;
        let out = self.stages[stage].forward_t(&x, false)?;
        // softmax(logits / T_t): the stage's calibrated probabilities.
        let beta = self.inv_temperatures[stage];
        let logits = if beta == 1.0 {
            out.logits
        } else {
            out.logits.affine(beta, 0.0)?
        };
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        Ok((out.features, probs))
    }

    /// Runs every stage on every sample and returns the recorded outputs as
    /// a replay backend (what `cascade export-trace` writes). `split` names
    /// the split in the trace header (`"val"`, `"test"`, ...).
    pub fn record_trace(&mut self, split: &str) -> Result<ReplayBackend> {
        let meta = TraceMeta {
            dataset: self.dataset.clone(),
            split: split.to_string(),
            cascade: self.cascade_name.clone(),
            cost_unit: "MACs".to_string(),
            num_classes: self.num_classes,
        };
        // One chunk: the whole split, batched by `run` itself.
        let n = self.labels.len().max(1);
        Ok(ReplayBackend::record(self, meta, n)?)
    }

    fn check_request(&self, stage: usize, samples: &[usize]) -> Result<()> {
        if stage >= self.stages.len() {
            return Err(Error::Config(format!(
                "stage {stage} requested from a cascade of {} stages",
                self.stages.len()
            )));
        }
        if let Some(&bad) = samples.iter().find(|&&i| i >= self.labels.len()) {
            return Err(Error::Config(format!(
                "sample {bad} requested from a split of {} samples",
                self.labels.len()
            )));
        }
        Ok(())
    }

    fn run(&mut self, stage: usize, samples: &[usize]) -> Result<StageBatch> {
        self.check_request(stage, samples)?;
        let mut out = StageBatch {
            features: Vec::with_capacity(samples.len() * self.feature_dims[stage]),
            probs: Vec::with_capacity(samples.len() * self.num_classes),
        };
        for chunk in samples.chunks(self.batch) {
            let (f, p) = self.forward_samples(stage, chunk)?;
            let f = f.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let p = p.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            for (what, v, width) in [
                ("features", &f, self.feature_dims[stage]),
                ("probabilities", &p, self.num_classes),
            ] {
                if let Some(j) = v.iter().position(|x| !x.is_finite()) {
                    return Err(Error::Checkpoint {
                        path: self.cascade_dir.clone(),
                        msg: format!(
                            "stage {} ({}) gave {} {} for sample {}: its outputs must be finite",
                            stage + 1,
                            self.stage_names[stage],
                            what,
                            v[j],
                            chunk[j / width.max(1)]
                        ),
                    });
                }
            }
            out.features.extend(f);
            out.probs.extend(p);
        }
        self.runs[stage] += samples.len() as u64;
        Ok(out)
    }
}

impl StageBackend for CandleBackend {
    fn num_stages(&self) -> usize {
        self.stages.len()
    }

    fn stage_costs(&self) -> &[f64] {
        &self.costs
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn feature_dims(&self) -> &[usize] {
        &self.feature_dims
    }

    fn num_samples(&self) -> usize {
        self.labels.len()
    }

    fn label(&self, sample: usize) -> u32 {
        self.labels[sample]
    }

    fn stage_name(&self, stage: usize) -> String {
        self.stage_names[stage].clone()
    }

    fn run_stage(&mut self, stage: usize, samples: &[usize]) -> cascade_env::Result<StageBatch> {
        self.run(stage, samples)
            .map_err(cascade_env::Error::backend)
    }
}
