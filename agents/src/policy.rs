//! [`StopPolicy`]: the learned stopping policy `pi_t(s_t, p_t)`, one small
//! network per stage.
//!
//! # Architecture (per stage, not shared)
//!
//! Stage t (every stage but the last, where `pi_K = 1`) has its own head:
//!
//! ```text
//! x_t = [ (s_t - mu_t) / sigma_t ,  p_t ,  max_c p_t(c) ,  H(p_t) / ln C ]   [d_t + C + 2]
//! pi_t = sigmoid( w2 . tanh(W1 x_t + b1) + b2 )                              W1: [H, d_t + C + 2]
//! ```
//!
//! Per-stage heads because the feature widths `d_t` differ per stage and a
//! shared network would need a per-stage input projection anyway; the
//! heads are tiny next to the classifiers. `mu_t`, `sigma_t` standardise
//! the features with statistics of the training split, fitted once and
//! saved with the weights. The top probability and the normalised entropy
//! give the head the confidence signals a threshold rule uses, without
//! having to learn a max over classes. Everything is a tensor op, so in
//! joint training gradients flow through `s_t` and `p_t` into the
//! classifiers.
//!
//! # Cost
//!
//! [`StopPolicy::macs`]: per stage evaluated, `d_t` multiply-adds for the
//! standardisation, `C` for the entropy, `(d_t + C + 2) * H + H` for the
//! two layers (the activation and the max are not counted). 0 at the last
//! stage.
//!
//! Parameter names: `stage{t}.fc1.weight`, `stage{t}.fc1.bias`,
//! `stage{t}.fc2.weight`, `stage{t}.fc2.bias`, and the standardisation
//! `stage{t}.norm.mean`, `stage{t}.norm.std` (0-based t).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{Init, Linear, Module, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a [`StopPolicy`] head reads from an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PolicyInputs {
    /// The standardised stage features, then the confidence inputs:
    /// `[z_t, p_t, max p_t, H(p_t) / ln C]`.
    #[default]
    FeaturesAndProbs,
    /// The confidence inputs only, `[p_t, max p_t, H(p_t) / ln C]`: the
    /// inputs of `ann`'s rule (and a superset of a threshold rule's).
    Probs,
}

/// The shape of a [`StopPolicy`]: what it is built for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Feature width `d_t` of every stage, `[K]`.
    pub feature_dims: Vec<usize>,
    /// Number of classes C.
    pub num_classes: usize,
    /// Hidden width H of each head; 0: a linear head, `pi_t = sigmoid(w .
    /// x_t + b)` (the functional form of `ann`'s rule).
    pub hidden: usize,
    /// What each head reads.
    #[serde(default)]
    pub inputs: PolicyInputs,
}

impl PolicySpec {
    /// Number of stages K.
    pub fn num_stages(&self) -> usize {
        self.feature_dims.len()
    }

    /// Input width of stage `t`'s head: `d_t + C + 2`, or `C + 2` on the
    /// confidence inputs alone.
    pub fn input_dim(&self, t: usize) -> usize {
        match self.inputs {
            PolicyInputs::FeaturesAndProbs => self.feature_dims[t] + self.num_classes + 2,
            PolicyInputs::Probs => self.num_classes + 2,
        }
    }

    /// Refuses an empty cascade, zero widths, fewer than 2 classes.
    pub fn validate(&self) -> Result<()> {
        if self.feature_dims.is_empty() {
            return Err(Error::Config("policy: the cascade has no stages".into()));
        }
        if self.feature_dims.contains(&0) {
            return Err(Error::Config(format!(
                "policy: feature widths {:?} must be positive",
                self.feature_dims
            )));
        }
        if self.num_classes < 2 {
            return Err(Error::Config(format!(
                "policy: needs at least 2 classes, got {}",
                self.num_classes
            )));
        }
        Ok(())
    }
}

/// Per-stage feature standardisation, `[K][d_t]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureNorm {
    /// Mean per feature.
    pub mean: Vec<Vec<f32>>,
    /// Standard deviation per feature (1 where the feature is constant).
    pub std: Vec<Vec<f32>>,
}

impl FeatureNorm {
    /// The identity standardisation for widths `dims`.
    pub fn identity(dims: &[usize]) -> Self {
        FeatureNorm {
            mean: dims.iter().map(|&d| vec![0.0; d]).collect(),
            std: dims.iter().map(|&d| vec![1.0; d]).collect(),
        }
    }

    /// Statistics of row-major `[N, d_t]` feature blocks, one per stage,
    /// accumulated in f64.
    pub fn fit(blocks: &[(&[f32], usize)]) -> Self {
        let mut mean = Vec::with_capacity(blocks.len());
        let mut std = Vec::with_capacity(blocks.len());
        for &(x, d) in blocks {
            let n = (x.len() / d.max(1)).max(1) as f64;
            let mut s = vec![0f64; d];
            let mut sq = vec![0f64; d];
            for row in x.chunks_exact(d) {
                for (j, &v) in row.iter().enumerate() {
                    s[j] += v as f64;
                    sq[j] += (v as f64) * (v as f64);
                }
            }
            let m: Vec<f64> = s.iter().map(|v| v / n).collect();
            let sd: Vec<f32> = sq
                .iter()
                .zip(&m)
                .map(|(q, mu)| {
                    let v = (q / n - mu * mu).max(0.0).sqrt();
                    if v > 1e-6 {
                        v as f32
                    } else {
                        1.0
                    }
                })
                .collect();
            mean.push(m.into_iter().map(|v| v as f32).collect());
            std.push(sd);
        }
        FeatureNorm { mean, std }
    }
}

struct Head {
    /// The hidden layer (`None` for a linear head).
    fc1: Option<Linear>,
    fc2: Linear,
    mean: Tensor,
    inv_std: Tensor,
}

/// The stopping policy: one head per stage before the last (see the
/// module docs).
pub struct StopPolicy {
    spec: PolicySpec,
    norm: FeatureNorm,
    heads: Vec<Head>,
    varmap: VarMap,
    device: Device,
}

impl std::fmt::Debug for StopPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopPolicy")
            .field("spec", &self.spec)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl StopPolicy {
    /// A freshly initialised policy (the same `seed` gives the same
    /// weights): `fc1` He-normal, `fc2` N(0, 0.01^2) with zero bias, so
    /// every `pi_t` starts near 1/2. A linear head (`hidden` 0) is `fc2`
    /// alone, on the head input.
    pub fn new(spec: PolicySpec, norm: FeatureNorm, seed: u64, device: &Device) -> Result<Self> {
        spec.validate()?;
        let k = spec.num_stages();
        if norm.mean.len() != k
            || norm.std.len() != k
            || (0..k).any(|t| {
                norm.mean[t].len() != spec.feature_dims[t]
                    || norm.std[t].len() != spec.feature_dims[t]
            })
        {
            return Err(Error::Config(format!(
                "policy: the feature standardisation does not match widths {:?}",
                spec.feature_dims
            )));
        }
        let varmap = VarMap::new();
        let vb = cascade_rl::nn::seeded_var_builder(&varmap, seed, DType::F32, device);
        let h = spec.hidden;
        let mut heads = Vec::with_capacity(k.saturating_sub(1));
        for t in 0..k.saturating_sub(1) {
            let vb = vb.pp(format!("stage{t}"));
            let d_in = spec.input_dim(t);
            let fc1 = if h == 0 {
                None
            } else {
                Some(linear(
                    d_in,
                    h,
                    vb.pp("fc1"),
                    Init::Kaiming {
                        dist: candle_nn::init::NormalOrUniform::Normal,
                        fan: candle_nn::init::FanInOut::FanIn,
                        non_linearity: candle_nn::init::NonLinearity::Tanh,
                    },
                )?)
            };
            let fc2 = linear(
                if h == 0 { d_in } else { h },
                1,
                vb.pp("fc2"),
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.01,
                },
            )?;
            let d = spec.feature_dims[t];
            let inv: Vec<f32> = norm.std[t].iter().map(|s| 1.0 / s).collect();
            heads.push(Head {
                fc1,
                fc2,
                mean: Tensor::from_slice(&norm.mean[t], (1, d), device)?,
                inv_std: Tensor::from_vec(inv, (1, d), device)?,
            });
        }
        Ok(StopPolicy {
            spec,
            norm,
            heads,
            varmap,
            device: device.clone(),
        })
    }

    /// What the policy is built for.
    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// The feature standardisation.
    pub fn norm(&self) -> &FeatureNorm {
        &self.norm
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The trainable variables (hand these to an optimiser).
    pub fn vars(&self) -> Vec<Var> {
        self.varmap.all_vars()
    }

    /// The variables, for snapshots.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Multiply-accumulates of one evaluation at each stage, `[K]` (see the
    /// module docs; 0 at the last stage).
    pub fn macs(&self) -> Vec<f64> {
        let (c, h) = (self.spec.num_classes, self.spec.hidden);
        (0..self.spec.num_stages())
            .map(|t| {
                if t + 1 == self.spec.num_stages() {
                    0.0
                } else {
                    let d = match self.spec.inputs {
                        PolicyInputs::FeaturesAndProbs => self.spec.feature_dims[t],
                        PolicyInputs::Probs => 0,
                    };
                    let layers = if h == 0 {
                        self.spec.input_dim(t)
                    } else {
                        self.spec.input_dim(t) * h + h
                    };
                    (d + c + layers) as f64
                }
            })
            .collect()
    }

    /// The head input `x_t` (see the module docs).
    ///
    /// # Shapes
    /// `features: [m, d_t]`, `probs: [m, C]` -> `[m, d_t + C + 2]` (or
    /// `[m, C + 2]` on the confidence inputs alone)
    pub fn input(&self, t: usize, features: &Tensor, probs: &Tensor) -> Result<Tensor> {
        let head = self.head(t)?;
        let top = probs.max_keepdim(1)?;
        let ln_c = (self.spec.num_classes as f64).ln();
        let ent = (probs * probs.clamp(1e-12f32, 1f32)?.log()?)?
            .sum_keepdim(1)?
            .affine(-1.0 / ln_c, 0.0)?;
        match self.spec.inputs {
            PolicyInputs::FeaturesAndProbs => {
                let z = features
                    .broadcast_sub(&head.mean)?
                    .broadcast_mul(&head.inv_std)?;
                Ok(Tensor::cat(&[&z, probs, &top, &ent], 1)?)
            }
            PolicyInputs::Probs => Ok(Tensor::cat(&[probs, &top, &ent], 1)?),
        }
    }

    /// Sets a linear head's weights: stage `t`'s logit becomes `w . x_t +
    /// b` on the head input `x_t` ([`StopPolicy::input`]). Refuses a head
    /// with a hidden layer, another stage count or a width other than the
    /// input's.
    pub fn set_linear(&self, t: usize, w: &[f32], b: f32) -> Result<()> {
        let head = self.head(t)?;
        if head.fc1.is_some() || w.len() != self.spec.input_dim(t) {
            return Err(Error::Config(format!(
                "policy stage index {t}: cannot set {} linear weights on a head with input width {} and hidden width {}",
                w.len(),
                self.spec.input_dim(t),
                self.spec.hidden
            )));
        }
        let vars = cascade_rl::nn::named_vars(&self.varmap)?;
        for (name, value) in [
            (
                format!("stage{t}.fc2.weight"),
                Tensor::from_slice(w, (1, w.len()), &self.device)?,
            ),
            (
                format!("stage{t}.fc2.bias"),
                Tensor::from_slice(&[b], 1, &self.device)?,
            ),
        ] {
            let var = vars
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
                .ok_or_else(|| Error::Config(format!("policy: no variable {name}")))?;
            var.set(&value)?;
        }
        Ok(())
    }

    /// Stop logits `z_t` (`pi_t = sigmoid(z_t)`) from head inputs.
    ///
    /// # Shapes
    /// `x: [m, d_t + C + 2]` -> `[m]`
    pub fn logits_from_input(&self, t: usize, x: &Tensor) -> Result<Tensor> {
        let head = self.head(t)?;
        let out = match &head.fc1 {
            Some(fc1) => head.fc2.forward(&fc1.forward(x)?.tanh()?)?,
            None => head.fc2.forward(x)?,
        };
        Ok(out.squeeze(D::Minus1)?)
    }

    /// Stop logits `z_t` of stage `t` (not the last stage).
    ///
    /// # Shapes
    /// `features: [m, d_t]`, `probs: [m, C]` -> `[m]`
    pub fn logits(&self, t: usize, features: &Tensor, probs: &Tensor) -> Result<Tensor> {
        self.logits_from_input(t, &self.input(t, features, probs)?)
    }

    /// Stop probabilities of `m` rows given as plain `f32` data; 1 at the
    /// last stage.
    ///
    /// # Shapes
    /// `features: [m, d_t]`, `probs: [m, C]` row-major -> `[m]`
    pub fn stop_probs_rows(&self, t: usize, features: &[f32], probs: &[f32]) -> Result<Vec<f32>> {
        let (d, c) = (self.spec.feature_dims[t], self.spec.num_classes);
        let m = probs.len() / c;
        if features.len() != m * d || probs.len() != m * c {
            return Err(Error::Config(format!(
                "policy stage index {t}: {} feature and {} probability values do not make rows of widths {d} and {c}",
                features.len(),
                probs.len()
            )));
        }
        if t + 1 == self.spec.num_stages() {
            return Ok(vec![1.0; m]);
        }
        if m == 0 {
            return Ok(Vec::new());
        }
        let f = Tensor::from_slice(features, (m, d), &self.device)?;
        let p = Tensor::from_slice(probs, (m, c), &self.device)?;
        let z = self.logits(t, &f, &p)?;
        Ok(candle_nn::ops::sigmoid(&z)?.to_vec1::<f32>()?)
    }

    fn head(&self, t: usize) -> Result<&Head> {
        self.heads.get(t).ok_or_else(|| {
            Error::Config(format!(
                "policy: no head at stage index {t} (the last stage, index {}, always stops)",
                self.spec.num_stages() - 1
            ))
        })
    }

    /// Every tensor to save, by name: weights and standardisation.
    fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> = cascade_rl::nn::named_vars(&self.varmap)?
            .into_iter()
            .map(|(k, v)| Ok((k, v.as_tensor().to_device(&Device::Cpu)?)))
            .collect::<Result<_>>()?;
        for t in 0..self.heads.len() {
            let d = self.spec.feature_dims[t];
            out.push((
                format!("stage{t}.norm.mean"),
                Tensor::from_slice(&self.norm.mean[t], d, &Device::Cpu)?,
            ));
            out.push((
                format!("stage{t}.norm.std"),
                Tensor::from_slice(&self.norm.std[t], d, &Device::Cpu)?,
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Writes the weights and standardisation to `path` (safetensors),
    /// atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors = self.named_tensors()?;
        let meta: HashMap<String, String> = [(
            "policy_spec".to_string(),
            serde_json::to_string(&self.spec).map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            })?,
        )]
        .into_iter()
        .collect();
        let bytes = safetensors::tensor::serialize(
            tensors.iter().map(|(k, t)| (k.as_str(), t)),
            Some(meta),
        )
        .map_err(|e| Error::agent_file(path, format!("cannot serialise the policy: {e}")))?;
        cascade_env::fsutil::write_atomic(path, &bytes).map_err(|e| Error::io(path, e))
    }

    /// Loads a policy of shape `spec` from `path` onto `device`; the file
    /// must hold exactly the tensors such a policy has, with their shapes.
    pub fn load(path: &Path, spec: PolicySpec, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let stored = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
            Error::agent_file(path, format!("not a readable safetensors file: {e}"))
        })?;
        let k = spec.num_stages();
        let mut norm = FeatureNorm::identity(&spec.feature_dims);
        for t in 0..k.saturating_sub(1) {
            for (what, dst) in [("mean", &mut norm.mean[t]), ("std", &mut norm.std[t])] {
                let name = format!("stage{t}.norm.{what}");
                let v = stored
                    .get(&name)
                    .ok_or_else(|| Error::agent_file(path, format!("missing tensor {name}")))?;
                if v.dims() != [spec.feature_dims[t]] || v.dtype() != DType::F32 {
                    return Err(Error::agent_file(
                        path,
                        format!(
                            "{name} is {:?} {:?}, expected f32 [{}]",
                            v.dtype(),
                            v.dims(),
                            spec.feature_dims[t]
                        ),
                    ));
                }
                *dst = v.to_vec1::<f32>()?;
            }
        }
        if let Some((t, m)) = norm
            .mean
            .iter()
            .enumerate()
            .find_map(|(t, m)| m.iter().find(|v| !v.is_finite()).map(|v| (t, *v)))
        {
            return Err(Error::agent_file(
                path,
                format!("stage{t}.norm.mean holds {m} (weights must be finite)"),
            ));
        }
        if let Some((t, s)) = norm.std.iter().enumerate().find_map(|(t, s)| {
            s.iter()
                .find(|v| !(v.is_finite() && **v > 0.0))
                .map(|v| (t, *v))
        }) {
            return Err(Error::agent_file(
                path,
                format!("stage{t}.norm.std holds {s}; standard deviations must be positive"),
            ));
        }
        let policy = StopPolicy::new(spec, norm, 0, device)?;
        let vars = cascade_rl::nn::named_vars(&policy.varmap)?;
        let expected: std::collections::BTreeSet<String> = policy
            .named_tensors()?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let found: std::collections::BTreeSet<String> = stored.keys().cloned().collect();
        if expected != found {
            let missing: Vec<&String> = expected.difference(&found).collect();
            let extra: Vec<&String> = found.difference(&expected).collect();
            return Err(Error::agent_file(
                path,
                format!("does not match the policy: missing {missing:?}, unexpected {extra:?}"),
            ));
        }
        for (name, var) in vars {
            let t = &stored[&name];
            if t.dims() != var.dims() || t.dtype() != DType::F32 {
                return Err(Error::agent_file(
                    path,
                    format!(
                        "{name} is {:?} {:?}, the policy needs f32 {:?}",
                        t.dtype(),
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            if let Some((i, v)) = cascade_rl::checkpoint::first_non_finite(t)? {
                return Err(Error::agent_file(
                    path,
                    format!("{name} holds {v} at flat index {i} (weights must be finite)"),
                ));
            }
            var.set(&t.to_device(device)?)?;
        }
        Ok(policy)
    }
}

/// A linear layer `[out, in]` with weights drawn by `init` and a bias
/// drawn `U(-1/sqrt(in), 1/sqrt(in))` (zero for the `Randn` output layer).
fn linear(d_in: usize, d_out: usize, vb: VarBuilder, init: Init) -> Result<Linear> {
    let w = vb.get_with_hints((d_out, d_in), "weight", init)?;
    let b_init = match init {
        Init::Randn { .. } => Init::Const(0.0),
        _ => {
            let bound = 1.0 / (d_in as f64).sqrt();
            Init::Uniform {
                lo: -bound,
                up: bound,
            }
        }
    };
    let b = vb.get_with_hints(d_out, "bias", b_init)?;
    Ok(Linear::new(w, Some(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PolicySpec {
        PolicySpec {
            feature_dims: vec![3, 5],
            num_classes: 4,
            hidden: 6,
            inputs: PolicyInputs::FeaturesAndProbs,
        }
    }

    #[test]
    fn a_linear_head_on_the_confidence_inputs() {
        let linear = PolicySpec {
            hidden: 0,
            inputs: PolicyInputs::Probs,
            ..spec()
        };
        let p = StopPolicy::new(
            linear.clone(),
            FeatureNorm::identity(&[3, 5]),
            1,
            &Device::Cpu,
        )
        .unwrap();
        // Entropy (C), then one dot product of C + 2 inputs; no features.
        assert_eq!(p.macs(), vec![(4 + 6) as f64, 0.0]);
        assert_eq!(p.vars().len(), 2);
        // logit = w . [p, max p, H / ln C] + b, set by hand.
        p.set_linear(0, &[0.0, 0.0, 0.0, 0.0, 4.0, -2.0], -1.0)
            .unwrap();
        let f = [9.0f32, 9.0, 9.0, -9.0, -9.0, -9.0];
        let pr = [0.25f32, 0.25, 0.25, 0.25, 1.0, 0.0, 0.0, 0.0];
        let pi = p.stop_probs_rows(0, &f, &pr).unwrap();
        let sig = |z: f32| 1.0 / (1.0 + (-z).exp());
        assert!((pi[0] - sig(4.0 * 0.25 - 2.0 - 1.0)).abs() < 1e-6, "{pi:?}");
        assert!((pi[1] - sig(4.0 - 1.0)).abs() < 1e-6, "{pi:?}");
        // Saved and loaded, the same rule; a wrong width is refused.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lin.safetensors");
        p.save(&path).unwrap();
        let q = StopPolicy::load(&path, linear, &Device::Cpu).unwrap();
        assert_eq!(q.stop_probs_rows(0, &f, &pr).unwrap(), pi);
        assert!(p.set_linear(0, &[0.0; 5], 0.0).is_err());
        let mlp = StopPolicy::new(spec(), FeatureNorm::identity(&[3, 5]), 1, &Device::Cpu).unwrap();
        assert!(mlp.set_linear(0, &[0.0; 9], 0.0).is_err());
    }

    #[test]
    fn shapes_macs_and_last_stage() {
        let p = StopPolicy::new(spec(), FeatureNorm::identity(&[3, 5]), 1, &Device::Cpu).unwrap();
        assert_eq!(p.macs(), vec![(3 + 4 + 9 * 6 + 6) as f64, 0.0]);
        let f = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let q = Tensor::from_slice(
            &[0.25f32, 0.25, 0.25, 0.25, 1.0, 0.0, 0.0, 0.0],
            (2, 4),
            &Device::Cpu,
        )
        .unwrap();
        let x = p.input(0, &f, &q).unwrap();
        assert_eq!(x.dims(), &[2, 9]);
        let x: Vec<Vec<f32>> = x.to_vec2().unwrap();
        // Top probability, then entropy / ln C: 1 for uniform, 0 for one-hot.
        assert_eq!(&x[0][7..], &[0.25, 1.0]);
        assert_eq!(&x[1][7..], &[1.0, 0.0]);
        assert_eq!(p.logits(0, &f, &q).unwrap().dims(), &[2]);
        // The last stage always stops and has no head.
        assert_eq!(
            p.stop_probs_rows(1, &[0.0; 10], &[0.25; 8]).unwrap(),
            vec![1.0, 1.0]
        );
        assert!(p.logits(1, &f, &q).is_err());
        // A fresh head starts near 1/2.
        let pi = p.stop_probs_rows(0, &[0.1; 6], &[0.25; 8]).unwrap();
        assert!(pi.iter().all(|v| (v - 0.5).abs() < 0.05), "{pi:?}");
        assert!(p.stop_probs_rows(0, &[0.1; 5], &[0.25; 8]).is_err());
    }

    #[test]
    fn standardisation_is_fitted_and_applied() {
        let x = [1.0f32, 10.0, 3.0, 10.0];
        let n = FeatureNorm::fit(&[(&x, 2)]);
        assert_eq!(n.mean, vec![vec![2.0, 10.0]]);
        // A constant feature gets std 1, not 0.
        assert_eq!(n.std, vec![vec![1.0, 1.0]]);
        let norm = FeatureNorm {
            mean: vec![vec![2.0, 10.0, 0.0], vec![0.0; 5]],
            std: vec![vec![1.0, 1.0, 2.0], vec![1.0; 5]],
        };
        let p = StopPolicy::new(spec(), norm, 0, &Device::Cpu).unwrap();
        let f = Tensor::from_slice(&[3.0f32, 10.0, 4.0], (1, 3), &Device::Cpu).unwrap();
        let q = Tensor::from_slice(&[0.25f32; 4], (1, 4), &Device::Cpu).unwrap();
        let x: Vec<Vec<f32>> = p.input(0, &f, &q).unwrap().to_vec2().unwrap();
        assert_eq!(&x[0][..3], &[1.0, 0.0, 2.0]);
        assert!(StopPolicy::new(spec(), FeatureNorm::identity(&[3, 4]), 0, &Device::Cpu).is_err());
    }

    #[test]
    fn save_load_is_bit_identical_and_checks_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.safetensors");
        let norm = FeatureNorm {
            mean: vec![vec![0.5, -1.0, 2.0], vec![0.0; 5]],
            std: vec![vec![2.0, 1.0, 0.5], vec![1.0; 5]],
        };
        let p = StopPolicy::new(spec(), norm.clone(), 7, &Device::Cpu).unwrap();
        p.save(&path).unwrap();
        let q = StopPolicy::load(&path, spec(), &Device::Cpu).unwrap();
        assert_eq!(q.norm(), &norm);
        let f = [0.3f32, -2.0, 1.0, 5.0, 0.0, 0.1];
        let pr = [0.7f32, 0.1, 0.1, 0.1, 0.4, 0.3, 0.2, 0.1];
        assert_eq!(
            p.stop_probs_rows(0, &f, &pr).unwrap(),
            q.stop_probs_rows(0, &f, &pr).unwrap()
        );
        // Non-finite weights or normalisation statistics are refused.
        for name in ["stage0.fc1.weight", "stage0.norm.mean"] {
            let mut stored = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
            let t = &stored[name];
            let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v[0] = f32::NAN;
            let t = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
            stored.insert(name.to_string(), t);
            let broken = dir.path().join("nan.safetensors");
            candle_core::safetensors::save(&stored, &broken).unwrap();
            let err = StopPolicy::load(&broken, spec(), &Device::Cpu)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("nan.safetensors") && err.contains(&format!("{name} holds NaN")),
                "{err}"
            );
        }
        let other = PolicySpec {
            hidden: 7,
            ..spec()
        };
        let err = StopPolicy::load(&path, other, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p.safetensors") && err.contains("stage0.fc1"),
            "{err}"
        );
    }
}
