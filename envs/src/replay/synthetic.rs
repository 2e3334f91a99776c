//! [`ReplayBackend::synthetic`]: a generated trace whose best stopping
//! policy is known by construction.

use serde::{Deserialize, Serialize};

use super::{ReplayBackend, StageTrace, TraceMeta};
use crate::error::{Error, Result};
use crate::rng::EnvRng;

/// Settings of [`ReplayBackend::synthetic`]: a synthetic trace of stage
/// outputs (features, probabilities, labels, costs), not images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticTraceConfig {
    /// Number of samples N.
    pub num_samples: usize,
    /// Number of classes C (>= 2).
    pub num_classes: usize,
    /// Feature width per stage (each >= 2); its length is K.
    pub feature_dims: Vec<usize>,
    /// Raw stage costs, `[K]`.
    pub stage_costs: Vec<f64>,
    /// Fraction of samples no stage gets right (in `[0, 1]`).
    pub hopeless_fraction: f64,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for SyntheticTraceConfig {
    fn default() -> Self {
        SyntheticTraceConfig {
            num_samples: 2000,
            num_classes: 10,
            feature_dims: vec![16, 32, 64],
            stage_costs: vec![1.0, 4.0, 16.0],
            hopeless_fraction: 0.1,
            seed: 0,
        }
    }
}

impl ReplayBackend {
    /// A generated trace whose best policy is known by construction
    /// (data set name `"synthetic"`: not real data).
    ///
    /// Each sample draws a label uniformly and a difficulty: with
    /// probability `hopeless_fraction` no stage is right, otherwise a
    /// difficulty h uniform in `0..K`, and stages `t >= h` are right. A
    /// right stage puts probability in `[0.91, 0.99)` on the label, a wrong
    /// one puts `[0.55, 0.85)` on another class; the rest is spread evenly.
    /// So "stop once the top probability exceeds 0.9" stops at h (and runs
    /// hopeless samples to the end). Features: `f[0]` is a noisy hint of
    /// the difficulty (`h / K`, 1 for hopeless, plus N(0, 0.02^2) noise),
    /// `f[1]` is 1 when the stage is right and 0 otherwise, the rest are
    /// N(0, 1) noise.
    ///
    /// With [`crate::Prediction::Argmax`] and [`crate::Loss::ZeroOne`], if
    /// `alpha * Cost(K) < 1` the optimal stop is stage h for a solvable
    /// sample and stage 0 for a hopeless one; [`ReplayBackend::oracle`]
    /// computes it for any spec.
    pub fn synthetic(cfg: &SyntheticTraceConfig) -> Result<Self> {
        let bad = |m: String| Error::InvalidArgument(format!("synthetic trace: {m}"));
        let k = cfg.feature_dims.len();
        if k == 0 {
            return Err(bad("feature_dims is empty (no stages)".into()));
        }
        if cfg.stage_costs.len() != k {
            return Err(bad(format!(
                "{k} feature widths but {} stage costs",
                cfg.stage_costs.len()
            )));
        }
        if let Some(d) = cfg.feature_dims.iter().find(|&&d| d < 2) {
            return Err(bad(format!("feature width {d} < 2")));
        }
        if cfg.num_classes < 2 {
            return Err(bad(format!("num_classes {} < 2", cfg.num_classes)));
        }
        if cfg.num_samples == 0 {
            return Err(bad("num_samples is 0".into()));
        }
        if !(0.0..=1.0).contains(&cfg.hopeless_fraction) {
            return Err(bad(format!(
                "hopeless_fraction {} not in [0, 1]",
                cfg.hopeless_fraction
            )));
        }
        let (n, c) = (cfg.num_samples, cfg.num_classes);
        let mut sizes = crate::size::Buffers::new(format!(
            "synthetic trace of {n} samples, {c} classes, {k} stages"
        ));
        sizes.add("labels", &[n], 8);
        for (t, &d) in cfg.feature_dims.iter().enumerate() {
            sizes.add(&format!("stage {} features", t + 1), &[n, d], 4);
            sizes.add(&format!("stage {} probabilities", t + 1), &[n, c], 4);
        }
        sizes.check()?;
        let mut rng = EnvRng::new(cfg.seed);
        let mut stages: Vec<StageTrace> = (0..k)
            .map(|t| StageTrace {
                name: format!("synthetic-{t}"),
                cost: cfg.stage_costs[t],
                feature_dim: cfg.feature_dims[t],
                features: Vec::with_capacity(n * cfg.feature_dims[t]),
                probs: Vec::with_capacity(n * c),
            })
            .collect();
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let y = rng.below(c);
            let h = if rng.next_f64() < cfg.hopeless_fraction {
                None
            } else {
                Some(rng.below(k))
            };
            let hint = h.map_or(1.0, |h| h as f64 / k as f64);
            labels.push(y as u32);
            for (t, st) in stages.iter_mut().enumerate() {
                let right = h.is_some_and(|h| t >= h);
                let (top, conf) = if right {
                    (y, 0.91 + 0.08 * rng.next_f64())
                } else {
                    ((y + 1 + rng.below(c - 1)) % c, 0.55 + 0.30 * rng.next_f64())
                };
                let rest = ((1.0 - conf) / (c - 1) as f64) as f32;
                let start = st.probs.len();
                st.probs.resize(start + c, rest);
                st.probs[start + top] = conf as f32;
                st.features.push((hint + 0.02 * rng.normal()) as f32);
                st.features.push(if right { 1.0 } else { 0.0 });
                for _ in 2..st.feature_dim {
                    st.features.push(rng.normal() as f32);
                }
            }
        }
        let meta = TraceMeta {
            dataset: "synthetic".into(),
            split: "all".into(),
            cascade: format!("synthetic-{k}-stage"),
            cost_unit: "arbitrary".into(),
            num_classes: c,
        };
        ReplayBackend::new(meta, stages, labels)
    }
}
