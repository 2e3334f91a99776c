//! Traces from any framework's arrays: [`TraceArrays`] checks a cascade's
//! recorded outputs (features, probabilities or logits, labels, costs) and
//! builds a [`ReplayBackend`] or writes a trace file.
//!
//! ```
//! use cascade_env::{StageArrays, StageScores, TraceArrays};
//! # fn main() -> Result<(), cascade_env::Error> {
//! // Two samples, two classes, two stages (a cheap one and a dear one).
//! let stage = |name: &str, cost, logits: Vec<f32>| StageArrays {
//!     name: name.into(),
//!     cost,
//!     features: vec![0.1, 0.2, 0.3, 0.4],
//!     feature_dim: 2,
//!     scores: StageScores::Logits(logits),
//! };
//! let trace = TraceArrays {
//!     stages: vec![
//!         stage("small", 1.0, vec![2.0, 0.0, 0.0, 0.5]),
//!         stage("large", 8.0, vec![4.0, 0.0, 0.0, 4.0]),
//!     ],
//!     labels: vec![0, 1],
//!     ..TraceArrays::default()
//! }
//! .build()?;
//! assert_eq!(trace.labels(), &[0, 1]);
//! # Ok(()) }
//! ```
//!
//! Every check names the array, the stage and the first bad index, e.g.
//! `stage1.probs: sample 7 sums to 0.93, not 1 (tolerance 0.001)`, and
//! nothing is written when one fails ([`TraceArrays::write`] writes
//! atomically, after every check). What [`ReplayBackend::load`] reads back
//! is bit-identical to what was given: features and probabilities are
//! stored as the `f32` values given (logits become `f32` probabilities
//! once, here).

use std::path::Path;

use crate::error::{Error, Result};
use crate::replay::{ReplayBackend, StageTrace, TraceMeta};
use crate::spaces::PROB_SUM_TOLERANCE;

/// A stage's label scores as recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum StageScores {
    /// Label probabilities, `[N, C]` row-major: each in `[0, 1]`, each row
    /// summing to 1 within [`PROB_SUM_TOLERANCE`].
    Probs(Vec<f32>),
    /// Logits, `[N, C]` row-major: turned into probabilities by a softmax
    /// at [`TraceArrays::temperature`].
    Logits(Vec<f32>),
}

impl StageScores {
    fn values(&self) -> &[f32] {
        match self {
            StageScores::Probs(v) | StageScores::Logits(v) => v,
        }
    }

    fn array_name(&self) -> &'static str {
        match self {
            StageScores::Probs(_) => "probs",
            StageScores::Logits(_) => "logits",
        }
    }
}

/// One stage's recorded outputs.
///
/// # Shapes
/// `features: [N, feature_dim]`, `scores: [N, C]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct StageArrays {
    /// Stage name, e.g. `"exit-1"`.
    pub name: String,
    /// Raw cost `F_t` of the stage (e.g. MACs), finite and > 0.
    pub cost: f64,
    /// Features, `[N, feature_dim]` row-major.
    pub features: Vec<f32>,
    /// Feature width `d_t` (>= 1).
    pub feature_dim: usize,
    /// Probabilities or logits, `[N, C]` row-major.
    pub scores: StageScores,
}

/// A cascade's recorded outputs on one data split, as arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceArrays {
    /// The stages in cascade order (at least 2).
    pub stages: Vec<StageArrays>,
    /// True labels, `[N]`, each in `0..C`.
    pub labels: Vec<i64>,
    /// Number of classes C; `None` takes the width of stage 0's scores.
    pub num_classes: Option<usize>,
    /// Softmax temperature for logits (finite and > 0): `p = softmax(z / T)`.
    pub temperature: f64,
    /// Class names, `[C]`, stored in the header (optional).
    pub class_names: Option<Vec<String>>,
    /// Data set name.
    pub dataset: String,
    /// Split name (`"train"`, `"val"`, `"test"`).
    pub split: String,
    /// Cascade name.
    pub cascade: String,
    /// Unit of the stage costs.
    pub cost_unit: String,
}

impl Default for TraceArrays {
    fn default() -> Self {
        TraceArrays {
            stages: Vec::new(),
            labels: Vec::new(),
            num_classes: None,
            temperature: 1.0,
            class_names: None,
            dataset: "custom".into(),
            split: "all".into(),
            cascade: "custom".into(),
            cost_unit: "arbitrary".into(),
        }
    }
}

fn bad(problem: String) -> Error {
    Error::Trace {
        path: None,
        problem,
    }
}

/// Probabilities of one row of logits at temperature `temp`, computed in
/// `f64` (max-subtracted) and stored as `f32`.
fn softmax_row(logits: &[f32], temp: f64, out: &mut Vec<f32>) {
    let max = logits
        .iter()
        .map(|&z| z as f64 / temp)
        .fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits
        .iter()
        .map(|&z| (z as f64 / temp - max).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    out.extend(exps.iter().map(|&e| (e / sum) as f32));
}

impl TraceArrays {
    /// Checks every array and builds the trace in memory.
    ///
    /// Refuses, naming the array, the stage and the first bad index: fewer
    /// than 2 stages; no samples; a stage whose feature or score buffer
    /// does not hold `N` rows (N = the number of labels) of its width; a
    /// score width other than C, or C < 2; a non-finite feature, logit or
    /// probability; a probability outside `[0, 1]` or a row not summing to
    /// 1 within [`PROB_SUM_TOLERANCE`]; a cost that is not finite and > 0;
    /// a label outside `0..C`; class names not `[C]`; a temperature that is
    /// not finite and > 0.
    pub fn build(self) -> Result<ReplayBackend> {
        let k = self.stages.len();
        if k < 2 {
            return Err(bad(format!(
                "stages: a cascade needs at least 2 stages, got {k} (a single stage leaves nothing to decide)"
            )));
        }
        let n = self.labels.len();
        if n == 0 {
            return Err(bad("labels: no samples (labels is empty)".into()));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(bad(format!(
                "temperature: {} (must be finite and > 0)",
                self.temperature
            )));
        }
        let c = match self.num_classes {
            Some(c) => c,
            None => {
                let s0 = &self.stages[0];
                s0.scores.values().len() / n
            }
        };
        if c < 2 {
            return Err(bad(format!(
                "stage0.{}: {c} classes (need at least 2)",
                self.stages[0].scores.array_name()
            )));
        }
        for (t, s) in self.stages.iter().enumerate() {
            if !(s.cost.is_finite() && s.cost > 0.0) {
                return Err(bad(format!(
                    "costs: stage {t} costs {} (costs must be finite and > 0)",
                    s.cost
                )));
            }
            let d = s.feature_dim;
            if d == 0 {
                return Err(bad(format!("stage{t}.features: feature width 0")));
            }
            if s.features.len() != n * d {
                return Err(bad(format!(
                    "stage{t}.features: {} values are not {n} samples (the number of labels) x {d} features{}",
                    s.features.len(),
                    if s.features.len() % d == 0 {
                        format!(" ({} samples)", s.features.len() / d)
                    } else {
                        String::new()
                    }
                )));
            }
            let what = s.scores.array_name();
            let v = s.scores.values();
            if v.len() != n * c {
                return Err(bad(format!(
                    "stage{t}.{what}: {} values are not {n} samples (the number of labels) x {c} classes{}",
                    v.len(),
                    if v.len() % c == 0 {
                        format!(" ({} samples)", v.len() / c)
                    } else {
                        String::new()
                    }
                )));
            }
        }
        for (t, s) in self.stages.iter().enumerate() {
            let d = s.feature_dim;
            if let Some(j) = s.features.iter().position(|x| !x.is_finite()) {
                return Err(bad(format!(
                    "stage{t}.features: sample {} feature {} is {}",
                    j / d,
                    j % d,
                    s.features[j]
                )));
            }
            let what = s.scores.array_name();
            for (i, row) in s.scores.values().chunks_exact(c).enumerate() {
                if let Some(j) = row.iter().position(|x| !x.is_finite()) {
                    return Err(bad(format!(
                        "stage{t}.{what}: sample {i} class {j} is {}",
                        row[j]
                    )));
                }
                if let StageScores::Probs(_) = s.scores {
                    if let Some(j) = row.iter().position(|p| !(0.0..=1.0).contains(p)) {
                        return Err(bad(format!(
                            "stage{t}.probs: sample {i} class {j} is {} (probabilities are in [0, 1])",
                            row[j]
                        )));
                    }
                    let sum: f64 = row.iter().map(|&p| p as f64).sum();
                    if (sum - 1.0).abs() > PROB_SUM_TOLERANCE {
                        return Err(bad(format!(
                            "stage{t}.probs: sample {i} sums to {sum}, not 1 (tolerance {PROB_SUM_TOLERANCE}; pass logits to have them softmaxed)"
                        )));
                    }
                }
            }
        }
        if let Some(i) = self
            .labels
            .iter()
            .position(|&y| y < 0 || y as u64 >= c as u64)
        {
            return Err(bad(format!(
                "labels: sample {i} has label {}, not in 0..{c}",
                self.labels[i]
            )));
        }
        if let Some(names) = &self.class_names {
            if names.len() != c {
                return Err(bad(format!(
                    "class_names: {} names for {c} classes",
                    names.len()
                )));
            }
        }
        let temp = self.temperature;
        let stages = self
            .stages
            .into_iter()
            .map(|s| {
                let probs = match s.scores {
                    StageScores::Probs(p) => p,
                    StageScores::Logits(z) => {
                        let mut p = Vec::with_capacity(z.len());
                        for row in z.chunks_exact(c) {
                            softmax_row(row, temp, &mut p);
                        }
                        p
                    }
                };
                StageTrace {
                    name: s.name,
                    cost: s.cost,
                    feature_dim: s.feature_dim,
                    features: s.features,
                    probs,
                }
            })
            .collect();
        // Labels were checked to lie in 0..C, so they fit u32.
        let labels = self.labels.iter().map(|&y| y as u32).collect();
        let meta = TraceMeta {
            dataset: self.dataset,
            split: self.split,
            cascade: self.cascade,
            cost_unit: self.cost_unit,
            num_classes: c,
        };
        let trace = ReplayBackend::new(meta, stages, labels)?;
        match self.class_names {
            Some(names) => trace.with_class_names(names),
            None => Ok(trace),
        }
    }

    /// Checks every array ([`TraceArrays::build`]) and writes the trace
    /// file atomically; nothing is written when a check fails. Returns the
    /// trace written.
    pub fn write(self, path: &Path) -> Result<ReplayBackend> {
        let trace = self.build()?;
        trace.save(path)?;
        Ok(trace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(t: usize, n: usize, c: usize) -> StageArrays {
        let mut probs = vec![0.0f32; n * c];
        for i in 0..n {
            probs[i * c + (i + t) % c] = 1.0;
        }
        StageArrays {
            name: format!("s{t}"),
            cost: (t + 1) as f64,
            features: (0..n * 3).map(|x| x as f32).collect(),
            feature_dim: 3,
            scores: StageScores::Probs(probs),
        }
    }

    fn arrays(k: usize, n: usize, c: usize) -> TraceArrays {
        TraceArrays {
            stages: (0..k).map(|t| stage(t, n, c)).collect(),
            labels: (0..n as i64).map(|i| i % c as i64).collect(),
            ..Default::default()
        }
    }

    fn err(a: TraceArrays) -> String {
        a.build().unwrap_err().to_string()
    }

    #[test]
    fn every_bad_input_names_the_array_and_index() {
        assert!(arrays(3, 5, 4).build().is_ok());
        let mut a = arrays(2, 5, 4);
        a.stages[1].features[7] = f32::NAN;
        assert!(err(a).contains("stage1.features: sample 2 feature 1 is NaN"));
        let mut a = arrays(2, 5, 4);
        a.stages[1].features.truncate(12);
        a.stages[1].scores = StageScores::Probs(vec![0.25; 16]);
        let e = err(a);
        assert!(
            e.contains("stage1.features") && e.contains("(4 samples)"),
            "{e}"
        );
        let mut a = arrays(2, 5, 4);
        a.stages[0].scores = StageScores::Probs(vec![0.2; 20]);
        let e = err(a);
        assert!(e.contains("stage0.probs: sample 0 sums to"), "{e}");
        let mut a = arrays(2, 5, 4);
        a.stages[1].cost = -1.0;
        assert!(err(a).contains("costs: stage 1 costs -1"));
        let mut a = arrays(2, 5, 4);
        a.labels[3] = 4;
        assert!(err(a).contains("labels: sample 3 has label 4, not in 0..4"));
        let mut a = arrays(2, 5, 4);
        a.labels[2] = -1;
        assert!(err(a).contains("labels: sample 2 has label -1"));
        assert!(err(arrays(1, 5, 4)).contains("at least 2 stages, got 1"));
        let mut a = arrays(2, 5, 4);
        a.stages[1].scores = StageScores::Logits(vec![f32::INFINITY; 20]);
        assert!(err(a).contains("stage1.logits: sample 0 class 0 is inf"));
        let mut a = arrays(2, 5, 4);
        a.class_names = Some(vec!["a".into()]);
        assert!(err(a).contains("class_names: 1 names for 4 classes"));
        let mut a = arrays(2, 5, 4);
        a.temperature = 0.0;
        assert!(err(a).contains("temperature"));
    }

    #[test]
    fn logits_are_softmaxed_at_the_temperature() {
        let mut a = arrays(2, 2, 2);
        a.stages[0].scores = StageScores::Logits(vec![0.0, 2.0f32.ln(), 1.0, 1.0]);
        let t = a.clone().build().unwrap();
        let p = t.stage_probs(0);
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-7 && (p[1] - 2.0 / 3.0).abs() < 1e-7);
        assert_eq!(&p[2..], &[0.5, 0.5]);
        a.temperature = 0.5;
        let t = a.build().unwrap();
        let p = t.stage_probs(0);
        assert!((p[0] - 0.2).abs() < 1e-7 && (p[1] - 0.8).abs() < 1e-7);
    }

    #[test]
    fn what_is_written_loads_back_bit_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let mut a = arrays(3, 6, 3);
        a.stages[2].features[4] = 1.0e-38;
        a.class_names = Some(vec!["x".into(), "y".into(), "z".into()]);
        a.split = "test".into();
        let given = a.clone();
        let written = a.write(&path).unwrap();
        let back = ReplayBackend::load(&path).unwrap();
        assert_eq!(back, written);
        assert_eq!(
            back.class_names(),
            Some(&["x".into(), "y".into(), "z".into()][..])
        );
        for (t, s) in given.stages.iter().enumerate() {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(back.stage_features(t)), bits(&s.features));
            assert_eq!(bits(back.stage_probs(t)), bits(s.scores.values()));
        }
        // A failed check writes nothing.
        let other = dir.path().join("u.safetensors");
        let mut a = given;
        a.labels[0] = 9;
        assert!(a.write(&other).is_err());
        assert!(!other.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
