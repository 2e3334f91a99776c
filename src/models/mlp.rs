//! Multi-layer perceptron on the flattened image: hidden linear layers with
//! ReLU, then a linear output layer. Stage features are the last hidden
//! layer's activations (after ReLU).

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flops::Walker;
use crate::nn::Linear;
use crate::ops;

/// Configuration of the `mlp` family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpConfig {
    /// Widths of the hidden layers, input side first (at least one).
    pub hidden: Vec<usize>,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self { hidden: vec![256] }
    }
}

impl MlpConfig {
    /// Refuses an empty or zero-width hidden stack.
    pub fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() {
            return Err(Error::Config(
                "mlp: needs at least one hidden layer (use the linear family for none)".into(),
            ));
        }
        if let Some(i) = self.hidden.iter().position(|&h| h == 0) {
            return Err(Error::Config(format!("mlp: hidden layer {i} has width 0")));
        }
        Ok(())
    }

    /// Feature dimension: the last hidden width.
    pub fn feature_dim(&self) -> usize {
        self.hidden.last().copied().unwrap_or(0)
    }
}

/// The network (parameters `fc1..fcK` for the hidden layers, `fc` for the output).
#[derive(Debug)]
pub struct MlpNet {
    hidden: Vec<Linear>,
    fc: Linear,
}

impl MlpNet {
    /// Builds the layers for `input_shape` and `num_classes`.
    pub fn new(
        cfg: &MlpConfig,
        input_shape: [usize; 3],
        num_classes: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut d = input_shape.iter().product::<usize>();
        let mut hidden = Vec::with_capacity(cfg.hidden.len());
        for (i, &h) in cfg.hidden.iter().enumerate() {
            hidden.push(Linear::new(d, h, vb.pp(format!("fc{}", i + 1)))?);
            d = h;
        }
        let fc = Linear::new(d, num_classes, vb.pp("fc"))?;
        Ok(Self { hidden, fc })
    }

    /// Returns `(features, logits)`; `train` is unused (no batch norm).
    ///
    /// # Shapes
    /// `x: [b, c, h, w] -> ([b, hidden_last], [b, classes])`
    pub fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<(Tensor, Tensor)> {
        let mut h = x.flatten_from(1)?;
        for layer in &self.hidden {
            h = ops::relu(&layer.forward(&h)?)?;
        }
        let logits = self.fc.forward(&h)?;
        Ok((h, logits))
    }

    /// Walks the layers into `wk` (the input shape does not matter).
    pub(crate) fn cost(&self, wk: &mut Walker) -> Result<()> {
        for (i, layer) in self.hidden.iter().enumerate() {
            let h = wk.linear(layer)?;
            wk.relu(&format!("relu{}", i + 1), &[h]);
        }
        wk.linear(&self.fc)?;
        Ok(())
    }

    /// An independent copy on plain tensors (see [`Linear::fork`]).
    pub fn fork(&self) -> candle_core::Result<Self> {
        Ok(Self {
            hidden: self
                .hidden
                .iter()
                .map(Linear::fork)
                .collect::<candle_core::Result<_>>()?,
            fc: self.fc.fork()?,
        })
    }
}
