//! Evaluation of a model on a data set: error rate and mean cross-entropy.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::models::Model;

/// Error rate and mean cross-entropy of a model on a data set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Share of misclassified images.
    pub error: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Images evaluated.
    pub n: usize,
}

/// Evaluates `model` in eval mode (running batch-norm statistics) on `ds`.
pub fn evaluate(model: &Model, ds: &Dataset, batch_size: usize) -> Result<EvalResult> {
    let [c, h, w] = ds.shape;
    let d = c * h * w;
    let n = ds.len();
    if n == 0 {
        return Err(Error::Config(format!(
            "cannot evaluate on the empty set '{}'",
            ds.name
        )));
    }
    let (mut wrong, mut loss) = (0usize, 0f64);
    let mut start = 0;
    while start < n {
        let end = (start + batch_size.max(1)).min(n);
        let b = end - start;
        let x = Tensor::from_slice(&ds.images[start * d..end * d], (b, c, h, w), model.device())?;
        let y = Tensor::from_slice(&ds.labels[start..end], b, model.device())?;
        let out = model.forward_t(&x, false)?;
        let l = candle_nn::loss::cross_entropy(&out.logits, &y)?.to_scalar::<f32>()?;
        loss += l as f64 * b as f64;
        wrong += count_wrong(&out.logits, &y)?;
        start = end;
    }
    Ok(EvalResult {
        error: wrong as f64 / n as f64,
        loss: loss / n as f64,
        n,
    })
}

/// How many rows of `logits` do not have their largest score at the label
/// in `y`.
///
/// # Shapes
/// `logits: [b, classes]`, `y: [b]` (u32)
pub(super) fn count_wrong(logits: &Tensor, y: &Tensor) -> Result<usize> {
    let right = logits.argmax(1)?.eq(y)?.to_dtype(DType::F32)?.sum_all()?;
    Ok(y.elem_count() - right.to_scalar::<f32>()? as usize)
}
