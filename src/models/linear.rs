//! Softmax regression: one linear layer on the (optionally average-pooled)
//! input.
//!
//! Its stage features are the regression's input, the flattened (pooled)
//! image: they are the model's penultimate activations and cost nothing to
//! produce. With `pool = 1` (the default) that is the raw image, `c*h*w`
//! values; `pool = k` averages `k x k` windows first, which shrinks both the
//! model and its features by `k^2` (useful for 3x32x32 inputs).

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flops::Walker;
use crate::nn::{avg_pool2d, Linear};

/// Configuration of the `linear` family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinearConfig {
    /// Average-pool the input with non-overlapping `pool x pool` windows
    /// before the regression; 1 keeps the raw pixels.
    pub pool: usize,
}

impl Default for LinearConfig {
    fn default() -> Self {
        Self { pool: 1 }
    }
}

impl LinearConfig {
    /// Refuses a zero pooling window.
    pub fn validate(&self) -> Result<()> {
        if self.pool == 0 {
            return Err(Error::Config("linear: pool must be at least 1".into()));
        }
        Ok(())
    }

    /// Checks the input is at least one pooling window in size.
    pub fn validate_for_input(&self, [_, h, w]: [usize; 3]) -> Result<()> {
        self.validate()?;
        if h < self.pool || w < self.pool {
            return Err(Error::Config(format!(
                "linear: pool {} is larger than the {h}x{w} input",
                self.pool
            )));
        }
        Ok(())
    }

    /// Feature dimension `c * (h / pool) * (w / pool)`.
    pub fn feature_dim(&self, [c, h, w]: [usize; 3]) -> usize {
        c * (h / self.pool.max(1)) * (w / self.pool.max(1))
    }
}

/// Softmax regression (parameters `fc.weight`, `fc.bias`).
#[derive(Debug)]
pub struct LinearNet {
    pool: usize,
    fc: Linear,
}

impl LinearNet {
    /// Builds the layer for `input_shape` and `num_classes`.
    pub fn new(
        cfg: &LinearConfig,
        input_shape: [usize; 3],
        num_classes: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        cfg.validate_for_input(input_shape)?;
        let fc = Linear::new(cfg.feature_dim(input_shape), num_classes, vb.pp("fc"))?;
        Ok(Self { pool: cfg.pool, fc })
    }

    /// Returns `(features, logits)`; `train` is unused (no batch norm).
    ///
    /// # Shapes
    /// `x: [b, c, h, w] -> ([b, c*(h/pool)*(w/pool)], [b, classes])`
    pub fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<(Tensor, Tensor)> {
        let features = avg_pool2d(x, self.pool)?.flatten_from(1)?;
        let logits = self.fc.forward(&features)?;
        Ok((features, logits))
    }

    /// Walks the layers into `wk` for an input of shape `[c, h, w]`.
    pub(crate) fn cost(&self, input: [usize; 3], wk: &mut Walker) -> Result<()> {
        if self.pool > 1 {
            wk.avg_pool("pool", input, self.pool);
        }
        wk.linear(&self.fc)?;
        Ok(())
    }

    /// An independent copy on plain tensors (see [`Linear::fork`]).
    pub fn fork(&self) -> candle_core::Result<Self> {
        Ok(Self {
            pool: self.pool,
            fc: self.fc.fork()?,
        })
    }
}
