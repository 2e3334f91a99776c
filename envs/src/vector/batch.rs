//! The buffers of a [`VecEnv`]: the batched observation (layout in the
//! docs of [`crate::vector`]) and the per-sub-env side information. Both
//! are allocated once and written in place by the vector env.
//!
//! [`VecEnv`]: super::VecEnv

use crate::env::Observation;
use crate::error::{Error, Result};

/// The batched observation of a [`VecEnv`](super::VecEnv); see the docs
/// of [`crate::vector`] for the layout.
///
/// # Shapes
/// `stage: [n]`, `stage_features(t): [n, d_t]`, `probs: [n, C]`,
/// `cost_so_far: [n]`, `envs_at_stage(t): [m_t]`.
#[derive(Debug, Clone)]
pub struct BatchObservation {
    pub(super) num_classes: usize,
    pub(super) feature_dims: Vec<usize>,
    pub(super) stage: Vec<u32>,
    pub(super) features: Vec<Vec<f32>>,
    pub(super) probs: Vec<f32>,
    pub(super) cost_so_far: Vec<f32>,
    pub(super) envs_at_stage: Vec<Vec<u32>>,
}

impl BatchObservation {
    pub(super) fn new(n: usize, feature_dims: &[usize], num_classes: usize) -> Self {
        BatchObservation {
            num_classes,
            feature_dims: feature_dims.to_vec(),
            stage: vec![0; n],
            features: feature_dims.iter().map(|&d| vec![0.0; n * d]).collect(),
            probs: vec![0.0; n * num_classes],
            cost_so_far: vec![0.0; n],
            envs_at_stage: feature_dims.iter().map(|_| Vec::with_capacity(n)).collect(),
        }
    }

    /// A batch of one live sub-env holding `obs`, in a cascade of
    /// `num_stages` stages: what single-observation callers hand to code
    /// written for batches (allocates). Only stage `obs.stage` has
    /// features, of width `obs.features.len()`; the other stages' feature
    /// buffers are empty (width 0), as no sub-env is at them.
    ///
    /// Errors when `obs.stage >= num_stages`.
    pub fn from_observation(obs: &Observation, num_stages: usize) -> Result<Self> {
        if obs.stage >= num_stages {
            return Err(Error::InvalidArgument(format!(
                "observation at stage index {} of a {num_stages}-stage cascade",
                obs.stage
            )));
        }
        let t = obs.stage;
        let mut feature_dims = vec![0; num_stages];
        feature_dims[t] = obs.features.len();
        let mut features = vec![Vec::new(); num_stages];
        features[t] = obs.features.clone();
        let mut envs_at_stage = vec![Vec::new(); num_stages];
        envs_at_stage[t].push(0);
        Ok(BatchObservation {
            num_classes: obs.probs.len(),
            feature_dims,
            stage: vec![t as u32],
            features,
            probs: obs.probs.clone(),
            cost_so_far: vec![obs.cost_so_far],
            envs_at_stage,
        })
    }

    /// A batch built from arrays, as a Python or other caller holds
    /// observations: sub-env i is at stage `stage[i]`, its features are the
    /// first `feature_dims[stage[i]]` entries of row i of `features`
    /// (`[n, width]`, zero-padded to `width >= max d_t`), its probabilities
    /// row i of `probs` (`[n, C]`) and its cost so far `cost_so_far[i]`.
    /// Every sub-env is live.
    ///
    /// Errors name the array and the first bad row: a stage out of range,
    /// buffers of the wrong size, a width below the widest stage.
    pub fn from_rows(
        feature_dims: &[usize],
        num_classes: usize,
        stage: &[u32],
        features: &[f32],
        width: usize,
        probs: &[f32],
        cost_so_far: &[f32],
    ) -> Result<Self> {
        let n = stage.len();
        let k = feature_dims.len();
        let bad = |m: String| Error::InvalidArgument(format!("observation batch: {m}"));
        let max_d = feature_dims.iter().copied().max().unwrap_or(0);
        if width < max_d {
            return Err(bad(format!(
                "features rows have {width} values, the widest stage has {max_d}"
            )));
        }
        if features.len() != n * width {
            return Err(bad(format!(
                "features has {} values, expected {n} rows x {width}",
                features.len()
            )));
        }
        if probs.len() != n * num_classes {
            return Err(bad(format!(
                "probs has {} values, expected {n} rows x {num_classes} classes",
                probs.len()
            )));
        }
        if cost_so_far.len() != n {
            return Err(bad(format!(
                "cost_so_far has {} values for {n} rows",
                cost_so_far.len()
            )));
        }
        if let Some(i) = stage.iter().position(|&t| t as usize >= k) {
            return Err(bad(format!(
                "row {i} is at stage {}, the cascade has {k} stages",
                stage[i]
            )));
        }
        let mut b = BatchObservation::new(n, feature_dims, num_classes);
        for (i, &t) in stage.iter().enumerate() {
            let t = t as usize;
            let d = feature_dims[t];
            b.stage[i] = t as u32;
            b.features[t][i * d..(i + 1) * d].copy_from_slice(&features[i * width..i * width + d]);
            b.envs_at_stage[t].push(i as u32);
        }
        b.probs.copy_from_slice(probs);
        b.cost_so_far.copy_from_slice(cost_so_far);
        Ok(b)
    }

    /// Number of sub-envs n.
    pub fn num_envs(&self) -> usize {
        self.stage.len()
    }

    /// Number of stages K.
    pub fn num_stages(&self) -> usize {
        self.feature_dims.len()
    }

    /// Number of classes C.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Feature width `d_t` per stage, `[K]`.
    pub fn feature_dims(&self) -> &[usize] {
        &self.feature_dims
    }

    /// 0-based stage of each sub-env's observation, `[n]`.
    pub fn stage(&self) -> &[u32] {
        &self.stage
    }

    /// Stage `t`'s feature buffer, `[n, d_t]` row-major. Row i is valid
    /// where `stage[i] >= t` (this episode's stage-t features).
    pub fn stage_features(&self, t: usize) -> &[f32] {
        &self.features[t]
    }

    /// Sub-env `i`'s current features, `[d_{stage[i]}]`.
    pub fn features(&self, i: usize) -> &[f32] {
        let t = self.stage[i] as usize;
        let d = self.feature_dims[t];
        &self.features[t][i * d..(i + 1) * d]
    }

    /// Current probabilities of every sub-env, `[n, C]` row-major.
    pub fn probs(&self) -> &[f32] {
        &self.probs
    }

    /// Sub-env `i`'s current probabilities, `[C]`.
    pub fn probs_of(&self, i: usize) -> &[f32] {
        &self.probs[i * self.num_classes..(i + 1) * self.num_classes]
    }

    /// Normalised cost spent so far per sub-env, `[n]`.
    pub fn cost_so_far(&self) -> &[f32] {
        &self.cost_so_far
    }

    /// The live (not done) sub-envs whose observation is at stage `t`, in
    /// increasing order, `[m_t]`.
    pub fn envs_at_stage(&self, t: usize) -> &[u32] {
        &self.envs_at_stage[t]
    }

    /// Packs the stage-`t` features of [`Self::envs_at_stage`]`(t)` into
    /// `out` as a contiguous `[m_t, d_t]` block (row j = env
    /// `envs_at_stage(t)[j]`). `out` is cleared first and reuses its
    /// capacity.
    pub fn gather_features(&self, t: usize, out: &mut Vec<f32>) {
        let d = self.feature_dims[t];
        out.clear();
        for &i in &self.envs_at_stage[t] {
            let i = i as usize;
            out.extend_from_slice(&self.features[t][i * d..(i + 1) * d]);
        }
    }

    /// Sub-env `i`'s observation as an owned [`Observation`] (allocates; for
    /// tests and logging, not for the hot loop).
    pub fn to_observation(&self, i: usize) -> Observation {
        Observation {
            stage: self.stage[i] as usize,
            features: self.features(i).to_vec(),
            probs: self.probs_of(i).to_vec(),
            cost_so_far: self.cost_so_far[i],
        }
    }
}

/// Per-sub-env side information of a [`VecEnv`](super::VecEnv).
///
/// # Shapes
/// Every accessor returns `[n]`. The `final_*`-style outcome fields
/// (`stop_stage`, `prediction`, `label`, `loss`, `episode_cost`,
/// `final_sample`) are valid where `terminated[i]` is true in the step just
/// taken, and keep the last episode's values otherwise.
#[derive(Debug, Clone)]
pub struct BatchInfo {
    pub(super) sample: Vec<usize>,
    pub(super) done: Vec<bool>,
    pub(super) final_sample: Vec<usize>,
    pub(super) stop_stage: Vec<u32>,
    pub(super) prediction: Vec<u32>,
    pub(super) label: Vec<u32>,
    pub(super) loss: Vec<f64>,
    pub(super) episode_cost: Vec<f64>,
}

impl BatchInfo {
    pub(super) fn new(n: usize) -> Self {
        BatchInfo {
            sample: vec![0; n],
            done: vec![true; n],
            final_sample: vec![0; n],
            stop_stage: vec![0; n],
            prediction: vec![0; n],
            label: vec![0; n],
            loss: vec![0.0; n],
            episode_cost: vec![0.0; n],
        }
    }

    /// The sample of each sub-env's current episode.
    pub fn sample(&self) -> &[usize] {
        &self.sample
    }

    /// The done mask: true where a sub-env has no running episode (it
    /// terminated and waits for a reset; never true under
    /// [`AutoReset::SameStep`](super::AutoReset::SameStep) after a step).
    pub fn done(&self) -> &[bool] {
        &self.done
    }

    /// The sample of the episode that terminated.
    pub fn final_sample(&self) -> &[usize] {
        &self.final_sample
    }

    /// 0-based stage the terminated episode stopped at (its length is
    /// `stop_stage + 1`).
    pub fn stop_stage(&self) -> &[u32] {
        &self.stop_stage
    }

    /// The terminated episode's prediction `yhat`.
    pub fn prediction(&self) -> &[u32] {
        &self.prediction
    }

    /// The terminated episode's true label `y`.
    pub fn label(&self) -> &[u32] {
        &self.label
    }

    /// The terminated episode's loss `L(yhat, y)`.
    pub fn loss(&self) -> &[f64] {
        &self.loss
    }

    /// The terminated episode's normalised cost `Cost(k)`.
    pub fn episode_cost(&self) -> &[f64] {
        &self.episode_cost
    }
}
