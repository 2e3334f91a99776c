//! Analytic compute and parameter counts, layer by layer.
//!
//! **MACs** (multiply-accumulates) count the convolutions and linear layers
//! only: a convolution costs `c_out * h_out * w_out * c_in * k * k`, a linear
//! layer `d_in * d_out`; bias additions are not counted. This is the usual
//! convention (ResNet-20 on 3x32x32 is 40.55 M MACs) and the cost the cascade
//! uses. One MAC is two FLOPs.
//!
//! Everything else is counted separately as **other ops**, one per
//! elementwise operation, and is *not* part of `macs`: batch norm 2 per
//! element (a scale and a shift once folded), ReLU 1 per element, a residual
//! add 1 per element, max-pool `k*k - 1` comparisons per output, average
//! pooling 1 add per input element. Zero-padding shortcuts and reshapes cost
//! nothing.
//!
//! **Params** are the trainable parameters (weights, biases, batch-norm scale
//! and shift); **buffers** are the batch-norm running statistics, which a
//! checkpoint also stores.
//!
//! There is no second description of the architectures here: [`count`]
//! builds the network (with zero weights) and each network walks the layers
//! it holds into a `Walker`, next to its forward pass in
//! [`crate::models`]; shapes, MACs and parameters come from those layers'
//! tensors. The tests check the parameters against the tensors a
//! [`crate::models::Model`] holds and the MACs against the convolutions and
//! linear layers a forward pass runs.

use serde::{Deserialize, Serialize};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::models::{Classifier, ModelConfig};
use crate::nn::{BatchNorm2d, Conv2d, Conv2dConfig, Linear};

/// The kind of a counted layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// Convolution (MACs).
    Conv,
    /// Fully connected layer (MACs).
    Linear,
    /// Batch norm (other ops).
    BatchNorm,
    /// ReLU (other ops).
    Relu,
    /// Max pooling (other ops).
    MaxPool,
    /// Average pooling, global or windowed (other ops).
    AvgPool,
    /// Residual addition (other ops).
    Add,
}

/// Cost of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerCost {
    /// Name; for layers with parameters, their parameter prefix
    /// (`layer2.0.conv1`).
    pub name: String,
    /// Layer kind.
    pub kind: LayerKind,
    /// Output shape, `[c, h, w]` or `[d]`.
    pub output: Vec<usize>,
    /// Multiply-accumulates (convolutions and linear layers only).
    pub macs: u64,
    /// Elementwise operations (everything else; not part of `macs`).
    pub other_ops: u64,
    /// Trainable parameters.
    pub params: u64,
    /// Buffer values (batch-norm running statistics).
    pub buffers: u64,
}

/// Compute and size of a model for one input shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlopReport {
    /// Canonical model name.
    pub model: String,
    /// Input shape `(c, h, w)`.
    pub input: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// Total multiply-accumulates per image.
    pub macs: u64,
    /// Total trainable parameters.
    pub params: u64,
    /// Total buffer values.
    pub buffers: u64,
    /// Total other (elementwise) operations per image.
    pub other_ops: u64,
    /// Stage feature dimension.
    pub feature_dim: usize,
    /// Per-layer breakdown, in execution order.
    pub layers: Vec<LayerCost>,
}

/// Accumulates the cost of the layers a model holds, in execution order.
/// Each network walks its own layers into it (see
/// [`Classifier::flop_report`]), so an architecture is described once: by
/// the layers it is built from.
#[derive(Debug, Default)]
pub(crate) struct Walker {
    layers: Vec<LayerCost>,
}

/// The counts of one layer, before naming it.
#[derive(Default)]
struct Cost {
    macs: u64,
    other: u64,
    params: u64,
    buffers: u64,
}

impl Walker {
    fn push(&mut self, name: &str, kind: LayerKind, output: Vec<usize>, c: Cost) {
        self.layers.push(LayerCost {
            name: name.into(),
            kind,
            output,
            macs: c.macs,
            other_ops: c.other,
            params: c.params,
            buffers: c.buffers,
        });
    }

    /// A convolution on an input `[c, h, w]`; returns the output shape.
    pub fn conv(&mut self, conv: &Conv2d, input: [usize; 3]) -> candle_core::Result<[usize; 3]> {
        let (c_out, c_in, kh, kw) = conv.weight().dims4()?;
        let Conv2dConfig {
            stride, padding, ..
        } = conv.config();
        let [_, h, w] = input;
        let ho = (h + 2 * padding - kh) / stride + 1;
        let wo = (w + 2 * padding - kw) / stride + 1;
        let cost = Cost {
            macs: (c_out * ho * wo * c_in * kh * kw) as u64,
            params: (conv.weight().elem_count() + conv.bias().map_or(0, Tensor::elem_count)) as u64,
            ..Default::default()
        };
        self.push(conv.name(), LayerKind::Conv, vec![c_out, ho, wo], cost);
        Ok([c_out, ho, wo])
    }

    /// A batch norm on a map of `shape` `[c, h, w]`.
    pub fn batch_norm(&mut self, bn: &BatchNorm2d, shape: [usize; 3]) {
        let n: usize = shape.iter().product();
        let cost = Cost {
            other: 2 * n as u64,
            params: (bn.weight().elem_count() + bn.bias().elem_count()) as u64,
            buffers: (bn.running_mean().elem_count() + bn.running_var().elem_count()) as u64,
            ..Default::default()
        };
        self.push(bn.name(), LayerKind::BatchNorm, shape.to_vec(), cost);
    }

    /// A fully connected layer; returns its output width.
    pub fn linear(&mut self, fc: &Linear) -> candle_core::Result<usize> {
        let (d_out, d_in) = fc.weight().dims2()?;
        let cost = Cost {
            macs: (d_in * d_out) as u64,
            params: (fc.weight().elem_count() + fc.bias().elem_count()) as u64,
            ..Default::default()
        };
        self.push(fc.name(), LayerKind::Linear, vec![d_out], cost);
        Ok(d_out)
    }

    /// A layer with only elementwise work: `other` operations.
    fn elementwise(&mut self, name: &str, kind: LayerKind, output: Vec<usize>, other: u64) {
        let cost = Cost {
            other,
            ..Default::default()
        };
        self.push(name, kind, output, cost);
    }

    /// A ReLU on a tensor of `shape`.
    pub fn relu(&mut self, name: &str, shape: &[usize]) {
        let n: usize = shape.iter().product();
        self.elementwise(name, LayerKind::Relu, shape.to_vec(), n as u64);
    }

    /// A residual addition of two tensors of `shape`.
    pub fn add(&mut self, name: &str, shape: &[usize]) {
        let n: usize = shape.iter().product();
        self.elementwise(name, LayerKind::Add, shape.to_vec(), n as u64);
    }

    /// A `k x k` max-pool with stride `k` on `[c, h, w]`; returns the output
    /// shape.
    pub fn max_pool(&mut self, name: &str, [c, h, w]: [usize; 3], k: usize) -> [usize; 3] {
        let out = [c, h / k, w / k];
        let n_out: usize = out.iter().product();
        // k*k - 1 comparisons per output.
        let other = ((k * k).saturating_sub(1) * n_out) as u64;
        self.elementwise(name, LayerKind::MaxPool, out.to_vec(), other);
        out
    }

    /// A `k x k` average pool with stride `k` on `[c, h, w]` (one add per
    /// input element read); returns the output shape.
    pub fn avg_pool(&mut self, name: &str, [c, h, w]: [usize; 3], k: usize) -> [usize; 3] {
        let out = [c, h / k, w / k];
        let reads = (c * (h / k) * k * (w / k) * k) as u64;
        self.elementwise(name, LayerKind::AvgPool, out.to_vec(), reads);
        out
    }

    /// Global average pooling of `[c, h, w]`; returns `c`.
    pub fn global_avg_pool(&mut self, name: &str, shape: [usize; 3]) -> usize {
        let n: usize = shape.iter().product();
        self.elementwise(name, LayerKind::AvgPool, vec![shape[0]], n as u64);
        shape[0]
    }

    /// The report of the layers walked so far.
    pub fn finish(
        self,
        model: String,
        input: [usize; 3],
        classes: usize,
        feature_dim: usize,
    ) -> FlopReport {
        let sum = |f: fn(&LayerCost) -> u64| self.layers.iter().map(f).sum();
        FlopReport {
            model,
            input,
            classes,
            macs: sum(|l| l.macs),
            params: sum(|l| l.params),
            buffers: sum(|l| l.buffers),
            other_ops: sum(|l| l.other_ops),
            feature_dim,
            layers: self.layers,
        }
    }
}

/// Counts MACs, other ops and parameters of `cfg` on `input` `(c, h, w)`
/// with `classes` outputs, layer by layer: the network is built (with zero
/// weights) and walks the layers it holds. Refuses configurations that do
/// not fit the input.
pub fn count(cfg: &ModelConfig, input: [usize; 3], classes: usize) -> Result<FlopReport> {
    cfg.validate_for(input, classes)?;
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    Classifier::new(cfg, input, classes, vb)?.flop_report()
}

impl FlopReport {
    /// A plain-text per-layer table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} on {}x{}x{}, {} classes\n{:<28} {:<10} {:>14} {:>14} {:>12} {:>12}\n",
            self.model,
            self.input[0],
            self.input[1],
            self.input[2],
            self.classes,
            "layer",
            "kind",
            "output",
            "MACs",
            "other ops",
            "params"
        );
        for l in &self.layers {
            let out = l
                .output
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x");
            s += &format!(
                "{:<28} {:<10} {:>14} {:>14} {:>12} {:>12}\n",
                l.name,
                format!("{:?}", l.kind).to_lowercase(),
                out,
                l.macs,
                l.other_ops,
                l.params
            );
        }
        s += &format!(
            "{:<28} {:<10} {:>14} {:>14} {:>12} {:>12}\n",
            "total", "", "", self.macs, self.other_ops, self.params
        );
        s += &format!(
            "MACs {:.4} M ({:.4} M FLOPs), params {} (+{} buffer values), feature dim {}\n",
            self.macs as f64 / 1e6,
            2.0 * self.macs as f64 / 1e6,
            self.params,
            self.buffers,
            self.feature_dim
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Model;

    fn report(name: &str, input: [usize; 3], classes: usize) -> FlopReport {
        count(&name.parse().unwrap(), input, classes).unwrap()
    }

    #[test]
    fn small_models_match_hand_counts() {
        // 784 * 10 MACs; 7840 weights + 10 biases.
        let r = report("linear", [1, 28, 28], 10);
        assert_eq!((r.macs, r.params, r.feature_dim), (7_840, 7_850, 784));
        // 2x2 pooling: 196 inputs.
        let r = report("linear-pool2", [1, 28, 28], 10);
        assert_eq!((r.macs, r.params, r.other_ops), (1_960, 1_970, 784));
        // 784*256 + 256*10 = 203_264 MACs; + 256 + 10 biases.
        let r = report("mlp-256", [1, 28, 28], 10);
        assert_eq!((r.macs, r.params), (203_264, 203_530));
        // conv1 16*28*28*1*9 = 112_896, conv2 32*14*14*16*9 = 903_168,
        // fc1 1568*128 = 200_704, fc 128*10 = 1_280.
        let r = report("cnn-16-32", [1, 28, 28], 10);
        assert_eq!(r.macs, 112_896 + 903_168 + 200_704 + 1_280);
        // 144 + 32 (bn1) + 4608 + 64 (bn2) + 200_832 + 1_290.
        assert_eq!(r.params, 206_970);
        assert_eq!(r.buffers, 2 * 16 + 2 * 32);
    }

    #[test]
    fn resnets_match_published_counts() {
        // He et al. / the common PyTorch port: ResNet-20 0.27 M params,
        // 40.55 M MACs on CIFAR-10; ResNet-56 0.85 M, ResNet-110 1.73 M params
        // (option A, batch-norm scale and shift included).
        let r = report("resnet-20", [3, 32, 32], 10);
        assert_eq!(r.macs, 40_551_040);
        assert_eq!(r.params, 269_722);
        assert_eq!(report("resnet-56", [3, 32, 32], 10).params, 853_018);
        assert_eq!(report("resnet-110", [3, 32, 32], 10).params, 1_727_962);
        // Option B adds two 1x1 projections: 16*32 + 32*64 weights + BN.
        let b = report("resnet-20-b", [3, 32, 32], 10);
        assert_eq!(b.params - r.params, (16 * 32 + 64 + 32 * 64 + 128) as u64);
        assert_eq!(
            b.macs - r.macs,
            (32 * 16 * 16 * 16 + 64 * 8 * 8 * 32) as u64
        );
    }

    #[test]
    fn counts_match_the_tensors_models_hold() {
        for (name, shape) in [
            ("linear", [1, 12, 12]),
            ("linear-pool2", [3, 32, 32]),
            ("mlp-64-32", [1, 28, 28]),
            ("cnn-8-16", [1, 28, 28]),
            ("cnn-8-16-gap-nobn", [3, 32, 32]),
            ("resnet-8", [1, 28, 28]),
            ("resnet-20-w0.5-b", [3, 32, 32]),
        ] {
            let cfg = name.parse().unwrap();
            let r = count(&cfg, shape, 10).unwrap();
            let m = Model::new(&cfg, shape, 10, 0, &Device::Cpu).unwrap();
            let (params, buffers) = m.param_counts().unwrap();
            assert_eq!(
                (r.params, r.buffers),
                (params as u64, buffers as u64),
                "{name}"
            );
        }
    }

    /// Every family and every stage of the presets, with its input shape
    /// and class count.
    fn zoo() -> Vec<(String, [usize; 3], usize)> {
        let mut zoo: Vec<(String, [usize; 3], usize)> = [
            ("linear", [1, 12, 12]),
            ("linear-pool2", [3, 32, 32]),
            ("mlp-64-32", [1, 28, 28]),
            ("cnn-8-16", [1, 28, 28]),
            ("cnn-8-16-gap-nobn", [3, 32, 32]),
            ("cnn-4-8-16-fc32-nobn", [3, 17, 15]),
            ("resnet-8", [1, 28, 28]),
            ("resnet-14", [3, 32, 32]),
            ("resnet-8-w2", [3, 32, 32]),
            ("resnet-20-w0.5-b", [3, 32, 32]),
            ("resnet-8-w0.25-b", [3, 15, 17]),
        ]
        .into_iter()
        .map(|(name, shape)| (name.to_string(), shape, 10))
        .collect();
        for preset in crate::presets::PRESET_NAMES {
            let p = crate::presets::Preset::by_name(preset).unwrap();
            let (shape, classes) = p.input_spec().unwrap();
            for s in &p.stages {
                zoo.push((s.model.name(), shape, classes));
            }
        }
        zoo
    }

    #[test]
    fn macs_equal_those_a_forward_pass_runs() {
        use crate::ops::trace::traced;
        for (name, shape, classes) in zoo() {
            let cfg = name.parse().unwrap();
            let r = count(&cfg, shape, classes).unwrap();
            let expect: Vec<(Vec<usize>, u64)> = r
                .layers
                .iter()
                .filter(|l| matches!(l.kind, LayerKind::Conv | LayerKind::Linear))
                .map(|l| (l.output.clone(), l.macs))
                .collect();
            let m = Model::new(&cfg, shape, classes, 0, &Device::Cpu).unwrap();
            let folded = m.classifier().fold_batch_norm().unwrap();
            let x =
                Tensor::randn(0f32, 1., (2, shape[0], shape[1], shape[2]), &Device::Cpu).unwrap();
            for (mode, run) in [
                (
                    "train",
                    Box::new(|| m.forward_t(&x, true)) as Box<dyn Fn() -> _>,
                ),
                ("eval", Box::new(|| m.forward_t(&x, false))),
                ("folded", Box::new(|| folded.forward_t(&x, false))),
            ] {
                let (out, ops) = traced(run);
                out.unwrap();
                let seen: Vec<(Vec<usize>, u64)> =
                    ops.iter().map(|o| (o.output.clone(), o.macs)).collect();
                assert_eq!(seen, expect, "{name} on {shape:?}, {mode}");
                assert_eq!(
                    ops.iter().map(|o| o.macs).sum::<u64>(),
                    r.macs,
                    "{name} on {shape:?}, {mode}"
                );
            }
        }
    }

    #[test]
    fn resnet_depth_ladder_grows_linearly() {
        let macs: Vec<u64> = [8, 20, 32, 56, 110]
            .iter()
            .map(|d| report(&format!("resnet-{d}"), [3, 32, 32], 10).macs)
            .collect();
        // Each extra block pair per stage adds the same cost: 6 blocks of
        // 2 convs = 2 * 2_359_296 * 3 per step of n.
        let per_n = 3 * 2 * 2_359_296u64;
        assert_eq!(macs[1] - macs[0], 2 * per_n);
        assert_eq!(macs[4] - macs[3], 9 * per_n);
    }
}
