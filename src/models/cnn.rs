//! A small convolutional network: blocks of `3x3 conv (pad 1) -> batch norm
//! -> ReLU -> 2x2 max-pool`, then either a hidden fully connected layer on
//! the flattened map (the default) or global average pooling, then the
//! output layer. Stage features are the hidden layer's activations (after
//! ReLU), or the pooled map without a hidden layer.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flops::Walker;
use crate::nn::{global_avg_pool, ConvBn, Linear};
use crate::ops;

/// The max-pooling window (and stride) after each conv block.
const POOL: usize = 2;

/// Configuration of the `cnn` family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CnnConfig {
    /// Output channels of each conv block; each block halves the resolution.
    pub channels: Vec<usize>,
    /// Width of the hidden fully connected layer on the flattened last map;
    /// `None` uses global average pooling instead.
    pub hidden: Option<usize>,
    /// Batch norm after each convolution (otherwise the conv has a bias).
    pub batch_norm: bool,
}

impl Default for CnnConfig {
    fn default() -> Self {
        Self {
            channels: vec![16, 32],
            hidden: Some(128),
            batch_norm: true,
        }
    }
}

impl CnnConfig {
    /// Refuses empty or zero-width layers.
    pub fn validate(&self) -> Result<()> {
        if self.channels.is_empty() {
            return Err(Error::Config("cnn: needs at least one conv block".into()));
        }
        if let Some(i) = self.channels.iter().position(|&c| c == 0) {
            return Err(Error::Config(format!("cnn: conv block {i} has 0 channels")));
        }
        if self.hidden == Some(0) {
            return Err(Error::Config("cnn: hidden width must be positive".into()));
        }
        Ok(())
    }

    /// Checks every block still has at least a 1x1 map after pooling.
    pub fn validate_for_input(&self, [_, h, w]: [usize; 3]) -> Result<()> {
        self.validate()?;
        let k = self.channels.len() as u32;
        if (h >> k) == 0 || (w >> k) == 0 {
            return Err(Error::Config(format!(
                "cnn: {k} pooling blocks need an input of at least {0}x{0}, got {h}x{w}",
                1usize << k
            )));
        }
        Ok(())
    }

    /// Shape `[c, h, w]` of the last conv block's output.
    pub fn last_map(&self, [_, h, w]: [usize; 3]) -> [usize; 3] {
        let k = self.channels.len() as u32;
        [self.channels.last().copied().unwrap_or(0), h >> k, w >> k]
    }

    /// Feature dimension: the hidden width, or the last channel count.
    pub fn feature_dim(&self) -> usize {
        self.hidden
            .unwrap_or_else(|| self.channels.last().copied().unwrap_or(0))
    }
}

/// The network. Parameters: `conv{i}.weight` (`conv{i}.bias` without batch
/// norm), `bn{i}.*` for blocks `i = 1..`, then `fc1.*` (hidden) and `fc.*`.
#[derive(Debug)]
pub struct CnnNet {
    blocks: Vec<ConvBn>,
    hidden: Option<Linear>,
    fc: Linear,
}

impl CnnNet {
    /// Builds the layers for `input_shape` and `num_classes`.
    pub fn new(
        cfg: &CnnConfig,
        input_shape: [usize; 3],
        num_classes: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        cfg.validate_for_input(input_shape)?;
        let mut c_in = input_shape[0];
        let mut blocks = Vec::with_capacity(cfg.channels.len());
        for (i, &c) in cfg.channels.iter().enumerate() {
            let vb_bn = cfg.batch_norm.then(|| vb.pp(format!("bn{}", i + 1)));
            blocks.push(ConvBn::new(
                c_in,
                c,
                3,
                1,
                1,
                vb.pp(format!("conv{}", i + 1)),
                vb_bn,
            )?);
            c_in = c;
        }
        let [c, h, w] = cfg.last_map(input_shape);
        let (hidden, d) = match cfg.hidden {
            Some(hd) => (Some(Linear::new(c * h * w, hd, vb.pp("fc1"))?), hd),
            None => (None, c),
        };
        let fc = Linear::new(d, num_classes, vb.pp("fc"))?;
        Ok(Self { blocks, hidden, fc })
    }

    /// Returns `(features, logits)`; `train` switches batch norm to batch
    /// statistics.
    ///
    /// # Shapes
    /// `x: [b, c, h, w] -> ([b, feature_dim], [b, classes])`
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<(Tensor, Tensor)> {
        self.head(&self.trunk_t(x, train)?)
    }

    /// The layers that work image by image: the convolution blocks, then
    /// the flattening (with a hidden layer) or the global pooling.
    ///
    /// # Shapes
    /// `x: [b, c, h, w] -> [b, d]`
    pub(crate) fn trunk_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for block in &self.blocks {
            h = block.forward_relu_pool_t(&h, train, POOL)?;
        }
        match &self.hidden {
            Some(_) => h.flatten_from(1),
            None => global_avg_pool(&h),
        }
    }

    /// The layers after [`CnnNet::trunk_t`], on the whole batch.
    pub(crate) fn head(&self, h: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let features = match &self.hidden {
            Some(fc1) => ops::relu(&fc1.forward(h)?)?,
            None => h.clone(),
        };
        let logits = self.fc.forward(&features)?;
        Ok((features, logits))
    }

    /// Walks the layers into `wk` for an input of shape `[c, h, w]`.
    pub(crate) fn cost(&self, input: [usize; 3], wk: &mut Walker) -> Result<()> {
        let mut shape = input;
        for (i, block) in self.blocks.iter().enumerate() {
            let k = i + 1;
            shape = block.cost(shape, wk)?;
            wk.relu(&format!("relu{k}"), &shape);
            shape = wk.max_pool(&format!("pool{k}"), shape, POOL);
        }
        match &self.hidden {
            Some(fc1) => {
                let h = wk.linear(fc1)?;
                wk.relu("relu_fc1", &[h]);
            }
            None => {
                wk.global_avg_pool("avgpool", shape);
            }
        }
        wk.linear(&self.fc)?;
        Ok(())
    }

    /// The same network with every batch norm folded into its convolution,
    /// on tensors of its own (the other layers forked, [`Linear::fork`]).
    pub fn fold_batch_norm(&self) -> candle_core::Result<Self> {
        Ok(Self {
            blocks: self
                .blocks
                .iter()
                .map(ConvBn::fold_batch_norm)
                .collect::<candle_core::Result<_>>()?,
            hidden: self.hidden.as_ref().map(Linear::fork).transpose()?,
            fc: self.fc.fork()?,
        })
    }
}
