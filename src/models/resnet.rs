//! The CIFAR ResNets of He et al. 2016 ("Deep residual learning for image
//! recognition", section 4.2): depth `N = 6n + 2` (8, 20, 32, 56, 110, ...).
//!
//! A 3x3 conv with 16 channels, then three stages of `n` basic blocks with
//! 16, 32 and 64 channels (times the width multiplier) on maps of size
//! `h`, `h/2`, `h/4`, then global average pooling and a linear layer. A basic
//! block is `conv3x3 -> BN -> ReLU -> conv3x3 -> BN`, added to the shortcut,
//! then ReLU. The first block of stages 2 and 3 halves the resolution with
//! stride 2.
//!
//! Shortcuts where the shape changes:
//! - **A** (the default, the paper's choice for CIFAR): parameter-free;
//!   subsample by 2 (`x[:, :, ::2, ::2]`) and zero-pad the new channels,
//!   half before and half after the old ones (as in the common PyTorch port).
//! - **B**: a 1x1 convolution with stride 2 and batch norm (`downsample.0`,
//!   `downsample.1`, torchvision's names).
//!
//! Any input shape works; the map sizes are `ceil`-halved
//! (`(h - 1) / 2 + 1`). Stage features are the globally pooled output of
//! the last stage, `64 * width` values.
//!
//! Parameter names follow torchvision: `conv1.weight`, `bn1.*`,
//! `layer{1,2,3}.{i}.conv{1,2}.weight`, `layer{s}.{i}.bn{1,2}.*`,
//! `layer{s}.{i}.downsample.{0,1}.*` (B only), `fc.weight`, `fc.bias`.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flops::Walker;
use crate::nn::{global_avg_pool, ConvBn, Linear};
use crate::ops;

/// How a basic block's shortcut matches a change of shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Shortcut {
    /// Subsample and zero-pad the channels; no parameters.
    #[default]
    A,
    /// 1x1 convolution (stride 2) + batch norm.
    B,
}

/// Configuration of the `resnet` family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResNetConfig {
    /// Total depth `6n + 2` (weighted layers: convs plus the output layer).
    pub depth: usize,
    /// Width multiplier on the 16/32/64 channels (1.0 = the paper's).
    pub width: f64,
    /// Shortcut type where the shape changes.
    pub shortcut: Shortcut,
}

impl Default for ResNetConfig {
    fn default() -> Self {
        Self {
            depth: 20,
            width: 1.0,
            shortcut: Shortcut::A,
        }
    }
}

impl ResNetConfig {
    /// Refuses depths not of the form `6n + 2` (n >= 1) and bad widths.
    pub fn validate(&self) -> Result<()> {
        if self.depth < 8 || !(self.depth - 2).is_multiple_of(6) {
            return Err(Error::Config(format!(
                "resnet: depth must be 6n+2 with n >= 1 (8, 20, 32, 56, 110, ...), got {}",
                self.depth
            )));
        }
        if !(self.width.is_finite() && self.width > 0.0) {
            return Err(Error::Config(format!(
                "resnet: width multiplier must be positive, got {}",
                self.width
            )));
        }
        Ok(())
    }

    /// Blocks per stage, `n = (depth - 2) / 6`.
    pub fn blocks_per_stage(&self) -> usize {
        self.depth.saturating_sub(2) / 6
    }

    /// Channels of the three stages, `round(16/32/64 * width)` (at least 1).
    pub fn stage_channels(&self) -> [usize; 3] {
        [16.0, 32.0, 64.0].map(|c: f64| ((c * self.width).round() as usize).max(1))
    }

    /// Feature dimension: the channels of the last stage.
    pub fn feature_dim(&self) -> usize {
        self.stage_channels()[2]
    }
}

#[derive(Debug)]
enum ShortcutLayer {
    Identity,
    /// Option A: subsample (when strided) and pad `(left, right)` channels.
    Pad {
        stride: usize,
        left: usize,
        right: usize,
    },
    /// Option B.
    Projection(ConvBn),
}

/// One basic block.
#[derive(Debug)]
struct BasicBlock {
    /// Parameter prefix (`layer2.0`).
    name: String,
    c1: ConvBn,
    c2: ConvBn,
    shortcut: ShortcutLayer,
}

impl BasicBlock {
    fn new(
        c_in: usize,
        c_out: usize,
        stride: usize,
        kind: Shortcut,
        vb: VarBuilder,
    ) -> Result<Self> {
        let c1 = ConvBn::new(
            c_in,
            c_out,
            3,
            stride,
            1,
            vb.pp("conv1"),
            Some(vb.pp("bn1")),
        )?;
        let c2 = ConvBn::new(c_out, c_out, 3, 1, 1, vb.pp("conv2"), Some(vb.pp("bn2")))?;
        let shortcut = if stride == 1 && c_in == c_out {
            ShortcutLayer::Identity
        } else {
            match kind {
                Shortcut::A => {
                    if c_out < c_in {
                        return Err(Error::Config(format!(
                            "resnet: option-A shortcut cannot shrink {c_in} to {c_out} channels"
                        )));
                    }
                    let extra = c_out - c_in;
                    ShortcutLayer::Pad {
                        stride,
                        left: extra / 2,
                        right: extra - extra / 2,
                    }
                }
                Shortcut::B => {
                    let ds = vb.pp("downsample");
                    ShortcutLayer::Projection(ConvBn::new(
                        c_in,
                        c_out,
                        1,
                        stride,
                        0,
                        ds.pp("0"),
                        Some(ds.pp("1")),
                    )?)
                }
            }
        };
        Ok(Self {
            name: vb.prefix(),
            c1,
            c2,
            shortcut,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.c1.forward_relu_t(x, train)?;
        let y = self.c2.forward_t(&y, train)?;
        let s = match &self.shortcut {
            ShortcutLayer::Identity => x.clone(),
            ShortcutLayer::Pad {
                stride,
                left,
                right,
            } => ops::subsample_pad(x, *stride, *left, *right)?,
            ShortcutLayer::Projection(p) => p.forward_t(x, train)?,
        };
        ops::add_relu(&y, &s)
    }

    /// Walks the layers into `wk` for an input of shape `x`; returns the
    /// output shape.
    fn cost(&self, x: [usize; 3], wk: &mut Walker) -> Result<[usize; 3]> {
        let p = &self.name;
        let y = self.c1.cost(x, wk)?;
        wk.relu(&format!("{p}.relu1"), &y);
        let y = self.c2.cost(y, wk)?;
        if let ShortcutLayer::Projection(proj) = &self.shortcut {
            proj.cost(x, wk)?;
        }
        wk.add(&format!("{p}.add"), &y);
        wk.relu(&format!("{p}.relu2"), &y);
        Ok(y)
    }

    fn fold_batch_norm(&self) -> candle_core::Result<Self> {
        Ok(Self {
            name: self.name.clone(),
            c1: self.c1.fold_batch_norm()?,
            c2: self.c2.fold_batch_norm()?,
            shortcut: match &self.shortcut {
                ShortcutLayer::Projection(p) => ShortcutLayer::Projection(p.fold_batch_norm()?),
                ShortcutLayer::Identity => ShortcutLayer::Identity,
                &ShortcutLayer::Pad {
                    stride,
                    left,
                    right,
                } => ShortcutLayer::Pad {
                    stride,
                    left,
                    right,
                },
            },
        })
    }
}

/// The network.
#[derive(Debug)]
pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<BasicBlock>,
    fc: Linear,
}

impl ResNet {
    /// Builds the layers for `input_shape` and `num_classes`.
    pub fn new(
        cfg: &ResNetConfig,
        input_shape: [usize; 3],
        num_classes: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        cfg.validate()?;
        let ch = cfg.stage_channels();
        let stem = ConvBn::new(
            input_shape[0],
            ch[0],
            3,
            1,
            1,
            vb.pp("conv1"),
            Some(vb.pp("bn1")),
        )?;
        let n = cfg.blocks_per_stage();
        let mut blocks = Vec::with_capacity(3 * n);
        let mut c_in = ch[0];
        for (s, &c_out) in ch.iter().enumerate() {
            let vb_stage = vb.pp(format!("layer{}", s + 1));
            for i in 0..n {
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(
                    c_in,
                    c_out,
                    stride,
                    cfg.shortcut,
                    vb_stage.pp(i),
                )?);
                c_in = c_out;
            }
        }
        let fc = Linear::new(ch[2], num_classes, vb.pp("fc"))?;
        Ok(Self { stem, blocks, fc })
    }

    /// Returns `(features, logits)`; `train` switches batch norm to batch
    /// statistics.
    ///
    /// # Shapes
    /// `x: [b, c, h, w] -> ([b, 64*width], [b, classes])`
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<(Tensor, Tensor)> {
        self.head(&self.trunk_t(x, train)?)
    }

    /// The layers that work image by image, up to the global pooling.
    ///
    /// # Shapes
    /// `x: [b, c, h, w] -> [b, 64*width]`
    pub(crate) fn trunk_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = self.stem.forward_relu_t(x, train)?;
        for block in &self.blocks {
            h = block.forward_t(&h, train)?;
        }
        global_avg_pool(&h)
    }

    /// The output layer on the pooled features of the whole batch.
    pub(crate) fn head(&self, features: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let logits = self.fc.forward(features)?;
        Ok((features.clone(), logits))
    }

    /// Walks the layers into `wk` for an input of shape `[c, h, w]`.
    pub(crate) fn cost(&self, input: [usize; 3], wk: &mut Walker) -> Result<()> {
        let mut shape = self.stem.cost(input, wk)?;
        wk.relu("relu", &shape);
        for block in &self.blocks {
            shape = block.cost(shape, wk)?;
        }
        wk.global_avg_pool("avgpool", shape);
        wk.linear(&self.fc)?;
        Ok(())
    }

    /// The same network with every batch norm folded into its convolution,
    /// on tensors of its own (the other layers forked, [`Linear::fork`]).
    pub fn fold_batch_norm(&self) -> candle_core::Result<Self> {
        Ok(Self {
            stem: self.stem.fold_batch_norm()?,
            blocks: self
                .blocks
                .iter()
                .map(BasicBlock::fold_batch_norm)
                .collect::<candle_core::Result<_>>()?,
            fc: self.fc.fork()?,
        })
    }
}
