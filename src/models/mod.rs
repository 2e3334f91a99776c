//! The classifier zoo: softmax regression (`linear`), MLPs (`mlp`), small
//! conv nets (`cnn`) and the CIFAR ResNets of He et al. 2016 (`resnet`).
//!
//! Every classifier returns both its stage features `s_t` (pooled
//! penultimate activations, what a stopping policy observes) and its logits.
//! A [`ModelConfig`] names a model (`"resnet-110"`, `"mlp-256"`, ...) and
//! round-trips through serde and [`std::str::FromStr`]; a [`Classifier`] is the
//! network built from it, a [`Model`] a classifier together with the
//! [`VarMap`] that holds its weights (what training and checkpoints need).
//!
//! A model is described once, by the layers it builds: next to its
//! `forward_t`, each network has a `cost` walk over the layers it holds,
//! from which [`Classifier::flop_report`] and [`crate::flops::count`] take
//! MACs, parameters and shapes. Adding a family means a file here (config,
//! network, forward, cost) and its arms in [`ModelConfig`] and
//! [`Classifier`]; `flops.rs` is not touched.
//!
//! Names accepted by [`ModelConfig::from_str`](std::str::FromStr):
//!
//! | name | model |
//! |---|---|
//! | `linear`, `linear-pool2` | softmax regression on the raw / 2x2-average-pooled image |
//! | `mlp-256`, `mlp-512-256` | MLP with these hidden widths |
//! | `cnn-16-32` | conv blocks of 16 and 32 channels, hidden fc of 128 |
//! | `cnn-16-32-fc64`, `cnn-16-32-gap` | same with a hidden fc of 64 / global average pooling |
//! | `cnn-16-32-nobn` | same without batch norm |
//! | `resnet-20`, `resnet-20-w0.5`, `resnet-20-b` | CIFAR ResNet-20; width 0.5; option-B shortcuts |

mod cnn;
mod linear;
mod mlp;
mod resnet;

pub use cnn::{CnnConfig, CnnNet};
pub use linear::{LinearConfig, LinearNet};
pub use mlp::{MlpConfig, MlpNet};
pub use resnet::{ResNet, ResNetConfig, Shortcut};

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flops::{FlopReport, Walker};
use crate::nn;

/// The configuration of one classifier, tagged by family.
///
/// In JSON: `{"family": "resnet", "depth": 20, "width": 1.0, "shortcut": "A"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "lowercase")]
pub enum ModelConfig {
    /// Softmax regression.
    Linear(LinearConfig),
    /// Multi-layer perceptron.
    Mlp(MlpConfig),
    /// Small conv net.
    Cnn(CnnConfig),
    /// CIFAR ResNet.
    Resnet(ResNetConfig),
}

impl ModelConfig {
    /// The family name: `linear`, `mlp`, `cnn` or `resnet`.
    pub fn family(&self) -> &'static str {
        match self {
            ModelConfig::Linear(_) => "linear",
            ModelConfig::Mlp(_) => "mlp",
            ModelConfig::Cnn(_) => "cnn",
            ModelConfig::Resnet(_) => "resnet",
        }
    }

    /// Checks the configuration on its own.
    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Linear(c) => c.validate(),
            ModelConfig::Mlp(c) => c.validate(),
            ModelConfig::Cnn(c) => c.validate(),
            ModelConfig::Resnet(c) => c.validate(),
        }
    }

    /// Checks the configuration against an input shape `(c, h, w)` and class
    /// count.
    pub fn validate_for(&self, input_shape: [usize; 3], num_classes: usize) -> Result<()> {
        if input_shape.contains(&0) {
            return Err(Error::Config(format!(
                "input shape {input_shape:?} has a zero dimension"
            )));
        }
        if num_classes < 2 {
            return Err(Error::Config(format!(
                "a classifier needs at least 2 classes, got {num_classes}"
            )));
        }
        match self {
            ModelConfig::Linear(c) => c.validate_for_input(input_shape),
            ModelConfig::Cnn(c) => c.validate_for_input(input_shape),
            _ => self.validate(),
        }
    }

    /// Dimension of the stage features for `input_shape`.
    pub fn feature_dim(&self, input_shape: [usize; 3]) -> usize {
        match self {
            ModelConfig::Linear(c) => c.feature_dim(input_shape),
            ModelConfig::Mlp(c) => c.feature_dim(),
            ModelConfig::Cnn(c) => c.feature_dim(),
            ModelConfig::Resnet(c) => c.feature_dim(),
        }
    }

    /// The canonical name, which [`FromStr`] parses back to an equal config.
    pub fn name(&self) -> String {
        self.to_string()
    }
}

fn join(v: &[usize]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

impl fmt::Display for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelConfig::Linear(c) if c.pool == 1 => write!(f, "linear"),
            ModelConfig::Linear(c) => write!(f, "linear-pool{}", c.pool),
            ModelConfig::Mlp(c) => write!(f, "mlp-{}", join(&c.hidden)),
            ModelConfig::Cnn(c) => {
                write!(f, "cnn-{}", join(&c.channels))?;
                match c.hidden {
                    Some(128) => {}
                    Some(h) => write!(f, "-fc{h}")?,
                    None => write!(f, "-gap")?,
                }
                if !c.batch_norm {
                    write!(f, "-nobn")?;
                }
                Ok(())
            }
            ModelConfig::Resnet(c) => {
                write!(f, "resnet-{}", c.depth)?;
                if c.width != 1.0 {
                    write!(f, "-w{}", c.width)?;
                }
                if c.shortcut == Shortcut::B {
                    write!(f, "-b")?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for ModelConfig {
    type Err = Error;

    /// Parses a model name (see the module docs for the grammar).
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "model name '{s}': {why} (examples: linear, linear-pool2, mlp-256, mlp-512-256, \
                 cnn-16-32, cnn-16-32-fc64, cnn-8-16-gap, resnet-20, resnet-56-w0.5, resnet-20-b)"
            ))
        };
        let mut parts = s.split('-');
        let family = parts.next().unwrap_or("");
        let rest: Vec<&str> = parts.collect();
        let num = |p: &str| -> Result<usize> {
            p.parse::<usize>()
                .map_err(|_| bad(&format!("'{p}' is not a positive integer")))
        };
        let cfg = match family {
            "linear" => {
                let mut c = LinearConfig::default();
                match rest.as_slice() {
                    [] => {}
                    [p] if p.starts_with("pool") => c.pool = num(&p[4..])?,
                    _ => return Err(bad("linear takes only an optional -poolK")),
                }
                ModelConfig::Linear(c)
            }
            "mlp" => {
                if rest.is_empty() {
                    return Err(bad("mlp needs hidden widths, e.g. mlp-256"));
                }
                let hidden = rest.iter().map(|p| num(p)).collect::<Result<Vec<_>>>()?;
                ModelConfig::Mlp(MlpConfig { hidden })
            }
            "cnn" => {
                let mut c = CnnConfig {
                    channels: vec![],
                    ..Default::default()
                };
                for p in &rest {
                    if *p == "gap" {
                        c.hidden = None;
                    } else if *p == "nobn" {
                        c.batch_norm = false;
                    } else if let Some(h) = p.strip_prefix("fc") {
                        c.hidden = Some(num(h)?);
                    } else {
                        c.channels.push(num(p)?);
                    }
                }
                if c.channels.is_empty() {
                    return Err(bad("cnn needs channel counts, e.g. cnn-16-32"));
                }
                ModelConfig::Cnn(c)
            }
            "resnet" => {
                let Some((depth, opts)) = rest.split_first() else {
                    return Err(bad("resnet needs a depth, e.g. resnet-20"));
                };
                let mut c = ResNetConfig {
                    depth: num(depth)?,
                    ..Default::default()
                };
                for p in opts {
                    if *p == "b" {
                        c.shortcut = Shortcut::B;
                    } else if *p == "a" {
                        c.shortcut = Shortcut::A;
                    } else if let Some(w) = p.strip_prefix('w') {
                        c.width = w
                            .parse::<f64>()
                            .map_err(|_| bad(&format!("bad width '{w}'")))?;
                    } else {
                        return Err(bad(&format!("unknown resnet option '{p}'")));
                    }
                }
                ModelConfig::Resnet(c)
            }
            _ => return Err(bad("unknown family (linear, mlp, cnn, resnet)")),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Images per slice when a convolutional classifier runs inference on a
/// larger batch on the CPU (see [`Classifier::forward_t`]): a ResNet-8
/// batch of 500 ran 30% faster in slices of 128 than whole (`cascade
/// bench --model resnet-8 --batch 500`), 64 as fast, 256 in between.
const EVAL_CHUNK: usize = 128;

/// `f` on slices of `EVAL_CHUNK` images of `x`, outputs concatenated.
fn in_slices(
    x: &Tensor,
    f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let b = x.dim(0)?;
    let parts = (0..b)
        .step_by(EVAL_CHUNK)
        .map(|start| f(&x.narrow(0, start, EVAL_CHUNK.min(b - start))?))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

/// What one stage of the cascade produces for a batch.
#[derive(Debug, Clone)]
pub struct StageOutput {
    /// Stage features `s_t`, `[b, feature_dim]`.
    pub features: Tensor,
    /// Unnormalised class scores, `[b, classes]`.
    pub logits: Tensor,
}

#[derive(Debug)]
enum Net {
    Linear(LinearNet),
    Mlp(MlpNet),
    Cnn(CnnNet),
    Resnet(ResNet),
}

/// A classifier of any family, built from a [`ModelConfig`] for an input
/// shape and class count.
///
/// Not `Clone`: its weights are shared tensor handles, so a clone would
/// change along with the original. [`Model::fork`] makes an independent
/// trainable copy, [`Classifier::fold_batch_norm`] an independent
/// inference-only one.
#[derive(Debug)]
pub struct Classifier {
    config: ModelConfig,
    input_shape: [usize; 3],
    num_classes: usize,
    feature_dim: usize,
    net: Net,
    inference_only: bool,
}

impl Classifier {
    /// Builds the network, taking its parameters from `vb` (fresh ones from a
    /// [`VarMap`], or stored ones from a checkpoint).
    pub fn new(
        config: &ModelConfig,
        input_shape: [usize; 3],
        num_classes: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        config.validate_for(input_shape, num_classes)?;
        let net = match config {
            ModelConfig::Linear(c) => Net::Linear(LinearNet::new(c, input_shape, num_classes, vb)?),
            ModelConfig::Mlp(c) => Net::Mlp(MlpNet::new(c, input_shape, num_classes, vb)?),
            ModelConfig::Cnn(c) => Net::Cnn(CnnNet::new(c, input_shape, num_classes, vb)?),
            ModelConfig::Resnet(c) => Net::Resnet(ResNet::new(c, input_shape, num_classes, vb)?),
        };
        Ok(Self {
            config: config.clone(),
            input_shape,
            num_classes,
            feature_dim: config.feature_dim(input_shape),
            net,
            inference_only: false,
        })
    }

    /// Runs the classifier. `train = true` uses batch statistics in batch
    /// norm and updates the running statistics; `false` uses the running
    /// statistics (evaluation). Models without batch norm ignore it.
    ///
    /// # Shapes
    /// `x: [b, c, h, w]` (the configured input shape) ->
    /// `features: [b, feature_dim]`, `logits: [b, num_classes]`
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<StageOutput> {
        if train && self.inference_only {
            return Err(Error::Config(format!(
                "{}: batch norm is folded into the convolutions; this model is inference-only",
                self.config
            )));
        }
        let dims = x.dims();
        if dims.len() != 4 || dims[1..] != self.input_shape {
            return Err(Error::Config(format!(
                "{}: expected input [batch, {}, {}, {}], got {dims:?}",
                self.config, self.input_shape[0], self.input_shape[1], self.input_shape[2]
            )));
        }
        let b = dims[0];
        let sliced = !train && x.device().is_cpu() && b > EVAL_CHUNK;
        let (features, logits) = match &self.net {
            // Inference of a large batch through the layers that work image
            // by image, a slice of images at a time: a slice's activations
            // stay in cache from one layer to the next, where a whole
            // batch's would not. The layers after them (a matrix product,
            // whose sums `gemm` may order differently for a different
            // number of rows) run on the whole batch, so the outputs are
            // those of the whole batch at once, bit for bit.
            Net::Cnn(n) if sliced => n.head(&in_slices(x, |s| n.trunk_t(s, false))?)?,
            Net::Resnet(n) if sliced => n.head(&in_slices(x, |s| n.trunk_t(s, false))?)?,
            _ => self.forward_net(x, train)?,
        };
        Ok(StageOutput { features, logits })
    }

    fn forward_net(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        Ok(match &self.net {
            Net::Linear(n) => n.forward_t(x, train)?,
            Net::Mlp(n) => n.forward_t(x, train)?,
            Net::Cnn(n) => n.forward_t(x, train)?,
            Net::Resnet(n) => n.forward_t(x, train)?,
        })
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Input shape `(c, h, w)`.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Dimension of the stage features.
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    /// MACs, other operations and parameters of the layers this network
    /// holds, layer by layer, in execution order (see [`crate::flops`]).
    /// After [`Classifier::fold_batch_norm`] the batch norms are gone and
    /// the convolutions have biases; the MACs are the same.
    pub fn flop_report(&self) -> Result<FlopReport> {
        let mut wk = Walker::default();
        match &self.net {
            Net::Linear(n) => n.cost(self.input_shape, &mut wk)?,
            Net::Mlp(n) => n.cost(&mut wk)?,
            Net::Cnn(n) => n.cost(self.input_shape, &mut wk)?,
            Net::Resnet(n) => n.cost(self.input_shape, &mut wk)?,
        }
        Ok(wk.finish(
            self.config.name(),
            self.input_shape,
            self.num_classes,
            self.feature_dim,
        ))
    }

    /// An inference-only copy with every batch norm folded into the
    /// preceding convolution (using the running statistics): the same
    /// outputs as `forward_t(x, false)` up to float rounding, one pass fewer
    /// over each feature map. Models without batch norm are copied as they
    /// are. The copy holds tensors of its own: training this classifier
    /// afterwards leaves it unchanged.
    pub fn fold_batch_norm(&self) -> Result<Classifier> {
        let net = match &self.net {
            Net::Linear(n) => Net::Linear(n.fork()?),
            Net::Mlp(n) => Net::Mlp(n.fork()?),
            Net::Cnn(n) => Net::Cnn(n.fold_batch_norm()?),
            Net::Resnet(n) => Net::Resnet(n.fold_batch_norm()?),
        };
        Ok(Self {
            config: self.config.clone(),
            input_shape: self.input_shape,
            num_classes: self.num_classes,
            feature_dim: self.feature_dim,
            net,
            inference_only: true,
        })
    }
}

/// A [`Classifier`] with the [`VarMap`] holding its weights: what training,
/// fine-tuning and checkpoints work with.
///
/// A `Model` is not `Clone`: its variables live in a shared handle, so a
/// clone would train along with the original. [`Model::fork`] makes an
/// independent copy.
pub struct Model {
    classifier: Classifier,
    varmap: VarMap,
    device: Device,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.classifier.config().name())
            .field("input_shape", &self.classifier.input_shape())
            .field("num_classes", &self.classifier.num_classes())
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// A freshly initialised model; the same `seed` gives the same weights.
    pub fn new(
        config: &ModelConfig,
        input_shape: [usize; 3],
        num_classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = nn::seeded_var_builder(&varmap, seed, DType::F32, device);
        let classifier = Classifier::new(config, input_shape, num_classes, vb)?;
        Ok(Self {
            classifier,
            varmap,
            device: device.clone(),
        })
    }

    /// An independent copy: the same architecture on the same device with
    /// its own variables, holding the current weights and running
    /// statistics. Training either leaves the other unchanged.
    pub fn fork(&self) -> Result<Self> {
        let c = &self.classifier;
        let copy = Model::new(
            c.config(),
            c.input_shape(),
            c.num_classes(),
            0,
            &self.device,
        )?;
        let mine: std::collections::HashMap<String, Var> = self.named_vars()?.into_iter().collect();
        for (name, var) in copy.named_vars()? {
            let src = mine
                .get(&name)
                .ok_or_else(|| Error::Config(format!("fork: variable {name} missing")))?;
            var.set(&src.as_tensor().copy()?)?;
        }
        Ok(copy)
    }

    /// Runs the classifier (see [`Classifier::forward_t`]).
    ///
    /// # Shapes
    /// `x: [b, c, h, w]` -> `features: [b, feature_dim]`, `logits: [b, num_classes]`
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<StageOutput> {
        self.classifier.forward_t(x, train)
    }

    /// The network.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        self.classifier.config()
    }

    /// The variables (weights and batch-norm running statistics). Cloning a
    /// `VarMap` shares the variables.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The trainable variables (batch-norm running statistics excluded),
    /// sorted by name: hand these to an optimiser.
    pub fn trainable_vars(&self) -> Result<Vec<Var>> {
        Ok(nn::trainable_vars(&self.varmap)?)
    }

    /// `(name, variable)` pairs, sorted by name, buffers included.
    pub fn named_vars(&self) -> Result<Vec<(String, Var)>> {
        Ok(nn::named_vars(&self.varmap)?)
    }

    /// Number of trainable parameters and of buffer values (running
    /// statistics) actually held.
    pub fn param_counts(&self) -> Result<(usize, usize)> {
        let mut counts = (0, 0);
        for (name, var) in self.named_vars()? {
            if nn::is_buffer(&name) {
                counts.1 += var.elem_count();
            } else {
                counts.0 += var.elem_count();
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> Device {
        Device::Cpu
    }

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for name in [
            "linear",
            "linear-pool2",
            "mlp-256",
            "mlp-512-256",
            "cnn-16-32",
            "cnn-16-32-fc64",
            "cnn-8-16-gap",
            "cnn-8-nobn",
            "resnet-8",
            "resnet-110",
            "resnet-20-w0.5",
            "resnet-32-b",
        ] {
            let cfg: ModelConfig = name.parse().unwrap();
            assert_eq!(cfg.name(), name);
            let json = serde_json::to_string(&cfg).unwrap();
            let back: ModelConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, cfg, "{json}");
        }
        for bad in [
            "resnet-21",
            "resnet-2",
            "mlp",
            "mlp-0",
            "cnn",
            "vgg-16",
            "linear-x",
            "resnet-20-w0",
        ] {
            let err = bad.parse::<ModelConfig>().unwrap_err().to_string();
            assert!(err.contains("invalid configuration"), "{bad}: {err}");
        }
        let json = r#"{"family":"resnet","depth":56}"#;
        let cfg: ModelConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.name(), "resnet-56");
    }

    #[test]
    fn forward_shapes_for_every_family() {
        let cases: [(&str, [usize; 3], usize); 7] = [
            ("linear", [1, 28, 28], 784),
            ("linear-pool2", [3, 32, 32], 768),
            ("mlp-32-16", [1, 12, 12], 16),
            ("cnn-4-8", [1, 12, 12], 128),
            ("cnn-4-8-gap", [3, 32, 32], 8),
            ("resnet-8-w0.25", [1, 28, 28], 16),
            ("resnet-8-w0.25-b", [3, 15, 17], 16),
        ];
        for (name, shape, fdim) in cases {
            let cfg: ModelConfig = name.parse().unwrap();
            let m = Model::new(&cfg, shape, 10, 0, &cpu()).unwrap();
            let x = Tensor::randn(0f32, 1., (3, shape[0], shape[1], shape[2]), &cpu()).unwrap();
            for train in [true, false] {
                let out = m.forward_t(&x, train).unwrap();
                assert_eq!(out.features.dims(), &[3, fdim], "{name}");
                assert_eq!(out.logits.dims(), &[3, 10], "{name}");
            }
            assert_eq!(m.classifier().feature_dim(), fdim);
        }
    }

    #[test]
    fn pytorch_parameter_names() {
        let cfg: ModelConfig = "resnet-8-b".parse().unwrap();
        let m = Model::new(&cfg, [3, 32, 32], 10, 0, &cpu()).unwrap();
        let names: Vec<String> = m
            .named_vars()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for expect in [
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "layer1.0.conv1.weight",
            "layer1.0.bn2.running_var",
            "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.weight",
            "layer3.0.conv2.weight",
            "fc.weight",
            "fc.bias",
        ] {
            assert!(
                names.iter().any(|n| n == expect),
                "missing {expect} in {names:?}"
            );
        }
        // Option A has no projection parameters.
        let a = Model::new(&"resnet-8".parse().unwrap(), [3, 32, 32], 10, 0, &cpu()).unwrap();
        assert!(a
            .named_vars()
            .unwrap()
            .iter()
            .all(|(n, _)| !n.contains("downsample")));
    }

    #[test]
    fn wrong_input_shape_and_folded_training_are_refused() {
        let cfg: ModelConfig = "cnn-4".parse().unwrap();
        let m = Model::new(&cfg, [1, 12, 12], 4, 0, &cpu()).unwrap();
        let x = Tensor::zeros((2, 1, 10, 12), DType::F32, &cpu()).unwrap();
        let err = m.forward_t(&x, false).unwrap_err().to_string();
        assert!(err.contains("expected input [batch, 1, 12, 12]"), "{err}");
        let folded = m.classifier().fold_batch_norm().unwrap();
        let x = Tensor::zeros((2, 1, 12, 12), DType::F32, &cpu()).unwrap();
        assert!(folded.forward_t(&x, true).is_err());
        assert!(folded.forward_t(&x, false).is_ok());
        assert!(Model::new(
            &"cnn-4-8-16-32-64".parse().unwrap(),
            [1, 12, 12],
            4,
            0,
            &cpu()
        )
        .is_err());
    }

    #[test]
    fn large_inference_batches_run_in_slices_with_the_same_outputs() {
        // A batch over EVAL_CHUNK (and not a multiple of it) in inference
        // mode against the whole batch at once: bit for bit, CNN and
        // ResNet; training mode is never sliced.
        for name in ["resnet-8-w0.5", "cnn-4-8-fc16"] {
            let cfg: ModelConfig = name.parse().unwrap();
            let m = Model::new(&cfg, [1, 12, 12], 4, 1, &cpu()).unwrap();
            let b = 2 * EVAL_CHUNK + 7;
            let x = Tensor::randn(0f32, 1., (b, 1, 12, 12), &cpu()).unwrap();
            m.forward_t(&x.narrow(0, 0, 16).unwrap(), true).unwrap();
            let sliced = m.forward_t(&x, false).unwrap();
            let (features, logits) = m.classifier().forward_net(&x, false).unwrap();
            let bits = |t: &Tensor| {
                let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                v.into_iter().map(f32::to_bits).collect::<Vec<_>>()
            };
            assert_eq!(sliced.logits.dims(), [b, 4], "{name}");
            assert_eq!(bits(&sliced.logits), bits(&logits), "{name}");
            assert_eq!(bits(&sliced.features), bits(&features), "{name}");
        }
    }

    #[test]
    fn folded_resnet_matches_eval_mode() {
        let cfg: ModelConfig = "resnet-8-w0.5-b".parse().unwrap();
        let m = Model::new(&cfg, [1, 12, 12], 4, 1, &cpu()).unwrap();
        let x = Tensor::randn(0f32, 1., (8, 1, 12, 12), &cpu()).unwrap();
        // Move the running statistics away from their initial values.
        for _ in 0..3 {
            m.forward_t(&x, true).unwrap();
        }
        let a = m.forward_t(&x, false).unwrap().logits;
        let b = m
            .classifier()
            .fold_batch_norm()
            .unwrap()
            .forward_t(&x, false)
            .unwrap()
            .logits;
        let diff: f32 = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-4, "{diff}");
    }

    #[test]
    fn a_folded_classifier_keeps_its_weights_when_the_original_changes() {
        // One family per kind of fold: no batch norm (copied), batch norm
        // folded, and a CNN with a hidden layer next to folded convolutions.
        for name in ["linear", "mlp-16", "cnn-4-fc8", "resnet-8-w0.25"] {
            let cfg: ModelConfig = name.parse().unwrap();
            let m = Model::new(&cfg, [1, 12, 12], 4, 2, &cpu()).unwrap();
            let x = Tensor::randn(0f32, 1., (3, 1, 12, 12), &cpu()).unwrap();
            let folded = m.classifier().fold_batch_norm().unwrap();
            let logits = |c: &Classifier| {
                c.forward_t(&x, false)
                    .unwrap()
                    .logits
                    .to_vec2::<f32>()
                    .unwrap()
            };
            let before = logits(&folded);
            for (_, v) in m.named_vars().unwrap() {
                v.set(&v.as_tensor().ones_like().unwrap()).unwrap();
            }
            assert_ne!(logits(m.classifier()), before, "{name}");
            assert_eq!(logits(&folded), before, "{name}: the fold shares weights");
        }
    }

    #[test]
    fn same_seed_same_weights() {
        let cfg: ModelConfig = "cnn-4-8".parse().unwrap();
        let w = |seed| {
            let m = Model::new(&cfg, [1, 12, 12], 4, seed, &cpu()).unwrap();
            m.named_vars()
                .unwrap()
                .into_iter()
                .map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(w(5), w(5));
        assert_ne!(w(5), w(6));
    }
}
