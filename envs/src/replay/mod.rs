//! [`ReplayBackend`]: a cascade's recorded outputs on a data split, and the
//! trace file that stores them.
//!
//! # Trace file (format version 1)
//!
//! One safetensors file, readable from Python with
//! `safetensors.numpy.load_file(path)`:
//!
//! | tensor              | dtype | shape     | content                                  |
//! |---------------------|-------|-----------|------------------------------------------|
//! | `stage{t}.features` | F32   | `[N, d_t]`| stage features `s_t(x)`, t = 0..K-1      |
//! | `stage{t}.probs`    | F32   | `[N, C]`  | label probabilities `p_t(x)`, rows sum 1 |
//! | `labels`            | I64   | `[N]`     | true labels in `0..C`                    |
//! | `costs`             | F64   | `[K]`     | raw stage costs `F_t` (e.g. MACs)        |
//!
//! Stage indices `t` are 0-based (stage0 is the MDP's `C_1`). Labels may
//! also be stored as I32, U8, U16, U32 or U64; other tensors must have the
//! dtypes above. Tensors with other names are ignored, so a trace can carry
//! extra data.
//!
//! The safetensors `__metadata__` holds one entry, `cascade_trace`, a JSON
//! [`TraceHeader`]: format version, data set, split, cascade name, cost unit,
//! N, C, per stage its name, cost and feature width, and optionally the
//! class names (`class_names`, `[C]`). From Python:
//! `json.loads(safe_open(path, "np").metadata()["cascade_trace"])`.
//! The header's costs must equal the `costs` tensor. Loading refuses a file
//! whose header or tensors disagree, with a message naming the file and
//! the problem.
//!
//! The header's `content_sha256` pins the numbers an env replays: the
//! SHA-256 (lower-case hex) of, in this order, the little-endian `u64`
//! values `[K, N, C, d_0, ..., d_{K-1}]`, then per stage t its features
//! (`f32`, `[N, d_t]` row-major) and probabilities (`f32`, `[N, C]`), then
//! the labels as `i64` and the costs as `f64`, all little-endian. It does
//! not depend on how the file stores them (label dtype, tensor order) nor
//! on the descriptive fields (names, data set, split). Written by
//! [`ReplayBackend::save`] and checked by [`ReplayBackend::load`], which
//! refuses a file whose content no longer hashes to it; a file written
//! before the field existed loads as before, and its hash is computed on
//! load ([`ReplayBackend::content_sha256`]). In numpy:
//!
//! ```text
//! h = hashlib.sha256(np.array([K, N, C, *dims], "<u8").tobytes())
//! for f, p in zip(features, probs): h.update(f.astype("<f4").tobytes()); h.update(p.astype("<f4").tobytes())
//! h.update(labels.astype("<i8").tobytes()); h.update(costs.astype("<f8").tobytes())
//! ```

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::{check_rows, StageBackend, StageBatch, StageRows};
use crate::error::{Error, Result};
use crate::reward::{validate_stage_costs, RewardSpec};
use crate::spaces::PROB_SUM_TOLERANCE;

mod file;
mod synthetic;

pub use synthetic::SyntheticTraceConfig;

/// The trace format version this build writes and reads.
pub const TRACE_FORMAT_VERSION: u32 = 1;

/// The safetensors metadata key holding the JSON [`TraceHeader`].
pub const TRACE_METADATA_KEY: &str = "cascade_trace";

/// Descriptive fields of a trace (what it was recorded from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceMeta {
    /// Data set name, e.g. `"fashion-mnist"` (`"synthetic"` for generated
    /// traces).
    pub dataset: String,
    /// Split name, e.g. `"val"` or `"test"`.
    pub split: String,
    /// Cascade name, e.g. a preset's name.
    pub cascade: String,
    /// Unit of the stage costs, e.g. `"MACs"`.
    pub cost_unit: String,
    /// Number of classes C.
    pub num_classes: usize,
}

/// One stage's recorded outputs.
///
/// # Shapes
/// `features: [N, feature_dim]`, `probs: [N, C]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTrace {
    /// Stage name, e.g. `"cnn-small"`.
    pub name: String,
    /// Raw cost `F_t` of running this stage alone.
    pub cost: f64,
    /// Feature width `d_t` (>= 1).
    pub feature_dim: usize,
    /// Features, `[N, d_t]` row-major.
    pub features: Vec<f32>,
    /// Probabilities, `[N, C]` row-major.
    pub probs: Vec<f32>,
}

/// Per-stage entry of a [`TraceHeader`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceStageInfo {
    /// Stage name.
    pub name: String,
    /// Raw cost `F_t`.
    pub cost: f64,
    /// Feature width `d_t`.
    pub feature_dim: usize,
}

/// The JSON header stored under [`TRACE_METADATA_KEY`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceHeader {
    /// Format version ([`TRACE_FORMAT_VERSION`]).
    pub format_version: u32,
    /// Data set name.
    pub dataset: String,
    /// Split name.
    pub split: String,
    /// Cascade name.
    pub cascade: String,
    /// Unit of the stage costs.
    pub cost_unit: String,
    /// Number of samples N.
    pub num_samples: usize,
    /// Number of classes C.
    pub num_classes: usize,
    /// The stages, in order.
    pub stages: Vec<TraceStageInfo>,
    /// SHA-256 of the content (see the module docs), lower-case hex.
    /// Absent in files written before it existed; always present in the
    /// header of a loaded or built trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
    /// Class names, `[C]` (optional; descriptive, not hashed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
}

/// The best stopping stage of one sample, knowing its label.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OracleStop {
    /// 0-based stage with the highest expected return (earliest on ties).
    pub stage: usize,
    /// That expected return.
    pub reward: f64,
}

/// Recorded stage outputs served as a [`StageBackend`]: running a stage is
/// a row copy, so episodes cost nothing but memory traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayBackend {
    meta: TraceMeta,
    names: Vec<String>,
    costs: Vec<f64>,
    feature_dims: Vec<usize>,
    features: Vec<Vec<f32>>,
    probs: Vec<Vec<f32>>,
    labels: Vec<u32>,
    content_sha256: String,
    class_names: Option<Vec<String>>,
}

/// Feeds `values` to `h` as little-endian bytes, a block at a time.
fn hash_le<T: Copy, const W: usize>(h: &mut Sha256, values: &[T], bytes: impl Fn(T) -> [u8; W]) {
    let mut buf = Vec::with_capacity(4096 * W);
    for block in values.chunks(4096) {
        buf.clear();
        for &v in block {
            buf.extend_from_slice(&bytes(v));
        }
        h.update(&buf);
    }
}

/// The content hash of the module docs, lower-case hex.
fn content_sha256(
    feature_dims: &[usize],
    num_classes: usize,
    features: &[Vec<f32>],
    probs: &[Vec<f32>],
    labels: &[u32],
    costs: &[f64],
) -> String {
    let mut h = Sha256::new();
    let mut sizes = vec![
        feature_dims.len() as u64,
        labels.len() as u64,
        num_classes as u64,
    ];
    sizes.extend(feature_dims.iter().map(|&d| d as u64));
    hash_le(&mut h, &sizes, u64::to_le_bytes);
    for (f, p) in features.iter().zip(probs) {
        hash_le(&mut h, f, f32::to_le_bytes);
        hash_le(&mut h, p, f32::to_le_bytes);
    }
    hash_le(&mut h, labels, |y| i64::from(y).to_le_bytes());
    hash_le(&mut h, costs, f64::to_le_bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a trace's content; the message names the stage and problem.
fn validate_content(
    meta: &TraceMeta,
    stages: &[StageTrace],
    labels: &[u32],
) -> std::result::Result<(), String> {
    if stages.is_empty() {
        return Err("the cascade is empty (no stages)".into());
    }
    let n = labels.len();
    if n == 0 {
        return Err("no samples (labels is empty)".into());
    }
    let c = meta.num_classes;
    if c == 0 {
        return Err("num_classes is 0".into());
    }
    let costs: Vec<f64> = stages.iter().map(|s| s.cost).collect();
    validate_stage_costs(&costs)?;
    for (t, st) in stages.iter().enumerate() {
        let d = st.feature_dim;
        if d == 0 {
            return Err(format!("stage{t} ({}): feature_dim is 0", st.name));
        }
        if st.features.len() != n * d {
            return Err(format!(
                "stage{t}.features has {} values, expected N*d = {n}*{d} = {}",
                st.features.len(),
                n * d
            ));
        }
        if st.probs.len() != n * c {
            return Err(format!(
                "stage{t}.probs has {} values, expected N*C = {n}*{c} = {}",
                st.probs.len(),
                n * c
            ));
        }
        if let Some(j) = st.features.iter().position(|x| !x.is_finite()) {
            return Err(format!(
                "stage{t}.features: sample {} feature {} is {}",
                j / d,
                j % d,
                st.features[j]
            ));
        }
        for (i, row) in st.probs.chunks_exact(c).enumerate() {
            if let Some(j) = row
                .iter()
                .position(|p| !(p.is_finite() && (0.0..=1.0).contains(p)))
            {
                return Err(format!(
                    "stage{t}.probs: sample {i} class {j} is {} (must be in [0, 1])",
                    row[j]
                ));
            }
            let sum: f64 = row.iter().map(|&p| p as f64).sum();
            if (sum - 1.0).abs() > PROB_SUM_TOLERANCE {
                return Err(format!(
                    "stage{t}.probs: sample {i} sums to {sum}, not 1 (tolerance {PROB_SUM_TOLERANCE})"
                ));
            }
        }
    }
    if let Some(i) = labels.iter().position(|&y| y as usize >= c) {
        return Err(format!(
            "labels: sample {i} has label {}, not below num_classes {c}",
            labels[i]
        ));
    }
    Ok(())
}

impl ReplayBackend {
    /// Runs every stage of `backend` on every sample once and keeps the
    /// outputs in memory as a [`ReplayBackend`] (with the backend's labels and
    /// stage costs; `meta` names the data set, split and cascade, its class
    /// count is taken from the backend). Stages run in chunks of `chunk`
    /// samples.
    ///
    /// When the classifiers are fixed this is all a policy ever needs to see:
    /// frozen training and threshold selection replay it instead of running
    /// the cascade every epoch.
    pub fn record(
        backend: &mut dyn StageBackend,
        meta: TraceMeta,
        chunk: usize,
    ) -> Result<ReplayBackend> {
        let k = backend.num_stages();
        let n = backend.num_samples();
        let c = backend.num_classes();
        let chunk = chunk.max(1);
        let all: Vec<usize> = (0..n).collect();
        let mut stages = Vec::with_capacity(k);
        for t in 0..k {
            let d = backend.feature_dims()[t];
            let mut features = Vec::with_capacity(n * d);
            let mut probs = Vec::with_capacity(n * c);
            for part in all.chunks(chunk) {
                let b = backend.run_stage(t, part)?;
                let m = part.len();
                let bad = if b.features.len() != m * d {
                    Some(("feature", m * d, b.features.len()))
                } else if b.probs.len() != m * c {
                    Some(("probability", m * c, b.probs.len()))
                } else {
                    None
                };
                if let Some((what, expected, found)) = bad {
                    return Err(Error::BackendOutput {
                        stage: t,
                        what,
                        expected,
                        found,
                    });
                }
                features.extend_from_slice(&b.features);
                probs.extend_from_slice(&b.probs);
            }
            stages.push(StageTrace {
                name: backend.stage_name(t),
                cost: backend.stage_costs()[t],
                feature_dim: d,
                features,
                probs,
            });
        }
        let labels = all.iter().map(|&s| backend.label(s)).collect();
        let meta = TraceMeta {
            num_classes: c,
            ..meta
        };
        ReplayBackend::new(meta, stages, labels)
    }

    /// A replay of `stages` (in cascade order) with true `labels` (`[N]`).
    /// Refuses an empty cascade, no samples, bad costs, a zero feature
    /// width, wrong buffer sizes, non-finite features, probability rows
    /// outside `[0, 1]` or not summing to 1 (within 1e-3), and labels not
    /// below `meta.num_classes`.
    pub fn new(meta: TraceMeta, stages: Vec<StageTrace>, labels: Vec<u32>) -> Result<Self> {
        validate_content(&meta, &stages, &labels).map_err(|p| Error::trace(None, p))?;
        Ok(Self::from_parts(meta, stages, labels))
    }

    fn from_parts(meta: TraceMeta, stages: Vec<StageTrace>, labels: Vec<u32>) -> Self {
        let mut r = ReplayBackend {
            meta,
            names: Vec::with_capacity(stages.len()),
            costs: Vec::with_capacity(stages.len()),
            feature_dims: Vec::with_capacity(stages.len()),
            features: Vec::with_capacity(stages.len()),
            probs: Vec::with_capacity(stages.len()),
            labels,
            content_sha256: String::new(),
            class_names: None,
        };
        for s in stages {
            r.names.push(s.name);
            r.costs.push(s.cost);
            r.feature_dims.push(s.feature_dim);
            r.features.push(s.features);
            r.probs.push(s.probs);
        }
        r.content_sha256 = content_sha256(
            &r.feature_dims,
            r.meta.num_classes,
            &r.features,
            &r.probs,
            &r.labels,
            &r.costs,
        );
        r
    }

    /// SHA-256 of the content (see the module docs), lower-case hex: the
    /// same for every file that stores these numbers.
    pub fn content_sha256(&self) -> &str {
        &self.content_sha256
    }

    /// The class names, `[C]`, when the trace has them.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// This trace with class names (`[C]`; descriptive: they change
    /// neither the content hash nor any reward).
    pub fn with_class_names(mut self, names: Vec<String>) -> Result<Self> {
        let c = self.meta.num_classes;
        if names.len() != c {
            return Err(Error::trace(
                None,
                format!("class_names: {} names for {c} classes", names.len()),
            ));
        }
        self.class_names = Some(names);
        Ok(self)
    }

    /// The descriptive fields.
    pub fn meta(&self) -> &TraceMeta {
        &self.meta
    }

    /// Stage names, `[K]`.
    pub fn stage_names(&self) -> &[String] {
        &self.names
    }

    /// All labels, `[N]`.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Stage `t`'s features, `[N, d_t]` row-major.
    pub fn stage_features(&self, t: usize) -> &[f32] {
        &self.features[t]
    }

    /// Stage `t`'s probabilities, `[N, C]` row-major.
    pub fn stage_probs(&self, t: usize) -> &[f32] {
        &self.probs[t]
    }

    /// The header this trace is saved with.
    pub fn header(&self) -> TraceHeader {
        TraceHeader {
            format_version: TRACE_FORMAT_VERSION,
            dataset: self.meta.dataset.clone(),
            split: self.meta.split.clone(),
            cascade: self.meta.cascade.clone(),
            cost_unit: self.meta.cost_unit.clone(),
            num_samples: self.labels.len(),
            num_classes: self.meta.num_classes,
            stages: (0..self.costs.len())
                .map(|t| TraceStageInfo {
                    name: self.names[t].clone(),
                    cost: self.costs[t],
                    feature_dim: self.feature_dims[t],
                })
                .collect(),
            content_sha256: Some(self.content_sha256.clone()),
            class_names: self.class_names.clone(),
        }
    }

    /// A replay of the samples `samples` (in that order) of this one, e.g.
    /// to carve a validation split; `split` names the result's split.
    pub fn subset(&self, samples: &[usize], split: &str) -> Result<Self> {
        let n = self.labels.len();
        if let Some(&s) = samples.iter().find(|&&s| s >= n) {
            return Err(Error::InvalidArgument(format!(
                "subset: sample {s} out of range (the trace has {n})"
            )));
        }
        let c = self.meta.num_classes;
        let gather = |src: &[f32], w: usize| -> Vec<f32> {
            let mut out = Vec::with_capacity(samples.len() * w);
            for &s in samples {
                out.extend_from_slice(&src[s * w..(s + 1) * w]);
            }
            out
        };
        let stages = (0..self.costs.len())
            .map(|t| StageTrace {
                name: self.names[t].clone(),
                cost: self.costs[t],
                feature_dim: self.feature_dims[t],
                features: gather(&self.features[t], self.feature_dims[t]),
                probs: gather(&self.probs[t], c),
            })
            .collect();
        let labels = samples.iter().map(|&s| self.labels[s]).collect();
        let meta = TraceMeta {
            split: split.to_string(),
            ..self.meta.clone()
        };
        let mut r = ReplayBackend::new(meta, stages, labels)?;
        r.class_names = self.class_names.clone();
        Ok(r)
    }

    /// For every sample, the stage with the highest expected return under
    /// `spec` knowing the label (earliest on ties): the per-sample upper
    /// bound no stopping policy can beat. Its mean return is the oracle's.
    pub fn oracle(&self, spec: &RewardSpec) -> Result<Vec<OracleStop>> {
        let model = spec.compile(&self.costs)?;
        let c = self.meta.num_classes;
        Ok((0..self.labels.len())
            .map(|i| {
                let mut best = OracleStop {
                    stage: 0,
                    reward: f64::NEG_INFINITY,
                };
                for t in 0..self.costs.len() {
                    let probs = &self.probs[t][i * c..(i + 1) * c];
                    let r = model.expected_stop_reward(t, probs, self.labels[i]);
                    if r > best.reward {
                        best = OracleStop {
                            stage: t,
                            reward: r,
                        };
                    }
                }
                best
            })
            .collect())
    }

    fn check_request(&self, stage: usize, samples: &[usize]) -> Result<()> {
        let k = self.costs.len();
        if stage >= k {
            return Err(Error::InvalidArgument(format!(
                "stage index {stage} out of range for a {k}-stage cascade"
            )));
        }
        let n = self.labels.len();
        if let Some(&s) = samples.iter().find(|&&s| s >= n) {
            return Err(Error::InvalidArgument(format!(
                "sample {s} out of range: the trace has {n} samples"
            )));
        }
        Ok(())
    }
}

/// Hints the CPU to load `src[start..start + len]` into cache (a no-op off
/// x86-64). Only an address is computed; nothing is read.
#[inline(always)]
fn prefetch_row(src: &[f32], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let base = src.as_ptr().wrapping_add(start).cast::<i8>();
        let mut off = 0;
        while off < len * 4 {
            // SAFETY: a prefetch is only a hint; it never faults, whatever
            // the address.
            unsafe { _mm_prefetch(base.wrapping_add(off), _MM_HINT_T0) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (src, start, len);
}

impl StageBackend for ReplayBackend {
    fn stage_name(&self, stage: usize) -> String {
        self.names[stage].clone()
    }

    fn num_stages(&self) -> usize {
        self.costs.len()
    }

    fn stage_costs(&self) -> &[f64] {
        &self.costs
    }

    fn num_classes(&self) -> usize {
        self.meta.num_classes
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

    fn run_stage(&mut self, stage: usize, samples: &[usize]) -> Result<StageBatch> {
        self.check_request(stage, samples)?;
        let d = self.feature_dims[stage];
        let c = self.meta.num_classes;
        let mut out = StageBatch {
            features: Vec::with_capacity(samples.len() * d),
            probs: Vec::with_capacity(samples.len() * c),
        };
        for &s in samples {
            out.features
                .extend_from_slice(&self.features[stage][s * d..(s + 1) * d]);
            out.probs
                .extend_from_slice(&self.probs[stage][s * c..(s + 1) * c]);
        }
        Ok(out)
    }

    fn run_stage_into(
        &mut self,
        stage: usize,
        samples: &[usize],
        out: StageRows<'_>,
    ) -> Result<()> {
        self.check_request(stage, samples)?;
        let d = self.feature_dims[stage];
        let c = self.meta.num_classes;
        check_rows(stage, samples.len(), d, c, &out)?;
        let (src_f, src_p) = (&self.features[stage], &self.probs[stage]);
        // Rows are scattered over the trace: fetch a few rows ahead so the
        // cache misses overlap instead of queueing behind each copy.
        const AHEAD: usize = 8;
        for &s in samples.iter().take(AHEAD) {
            prefetch_row(src_f, s * d, d);
            prefetch_row(src_p, s * c, c);
        }
        for (j, (&s, &r)) in samples.iter().zip(out.rows).enumerate() {
            if let Some(&ahead) = samples.get(j + AHEAD) {
                prefetch_row(src_f, ahead * d, d);
                prefetch_row(src_p, ahead * c, c);
            }
            let r = r as usize;
            out.features[r * d..(r + 1) * d].copy_from_slice(&src_f[s * d..(s + 1) * d]);
            out.probs[r * c..(r + 1) * c].copy_from_slice(&src_p[s * c..(s + 1) * c]);
        }
        Ok(())
    }
}
