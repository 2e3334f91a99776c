//! Temperature calibration of a cascade's stages: one softmax temperature
//! per stage, fitted on held-out images (Guo et al. 2017).

use candle_core::{DType, Tensor};

use super::Cascade;
use crate::checkpoint::{write_manifest, CalibrationRecord};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::models::Model;

impl Cascade {
    /// Fits one softmax temperature per stage on `held_out` (images the
    /// classifiers never trained on, normalised like the cascade's inputs)
    /// by minimising the mean cross-entropy of `softmax(logits / T)`
    /// (Guo et al. 2017), records them with a [`CalibrationRecord`] naming
    /// `split`, and rewrites `cascade.json` in the cascade's folder.
    pub fn calibrate(&mut self, held_out: &Dataset, split: &str, batch: usize) -> Result<()> {
        self.fit_temperatures(held_out, split, batch)?;
        write_manifest(&self.dir, &self.manifest)
    }

    /// [`Cascade::calibrate`] in memory only: the cascade's folder is not
    /// touched (a cascade being fine-tuned refits its temperatures as its
    /// classifiers change; saving it writes them).
    pub fn fit_temperatures(
        &mut self,
        held_out: &Dataset,
        split: &str,
        batch: usize,
    ) -> Result<()> {
        if held_out.is_empty() || held_out.shape != self.input_shape() {
            return Err(Error::Config(format!(
                "calibration split '{}' ({} images of {:?}) does not fit the cascade ({:?})",
                held_out.name,
                held_out.len(),
                held_out.shape,
                self.input_shape()
            )));
        }
        let c = self.num_classes();
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for t in 0..self.stages.len() {
            let logits = stage_logits(&self.stages[t].model, held_out, batch.max(1))?;
            let nll = |beta: f64| mean_nll(&logits, &held_out.labels, c, beta);
            let beta = minimise_convex(nll, 0.02, 50.0);
            let temperature = 1.0 / beta;
            if !temperature.is_finite() {
                return Err(Error::Training(format!(
                    "stage {}: temperature fit gave {temperature}",
                    t + 1
                )));
            }
            before.push(nll(1.0));
            after.push(nll(beta));
            self.stages[t].record.temperature = temperature;
        }
        self.manifest.calibration = Some(CalibrationRecord {
            split: split.to_string(),
            images: held_out.len(),
            nll_before: before,
            nll_after: after,
        });
        self.manifest.stages = self.stages.iter().map(|s| s.record.clone()).collect();
        Ok(())
    }

    /// Sets the stages' temperatures in memory (one per stage, each
    /// positive and finite), e.g. back to those of a snapshot.
    pub fn set_temperatures(&mut self, temperatures: &[f64]) -> Result<()> {
        if temperatures.len() != self.stages.len()
            || temperatures.iter().any(|t| !(t.is_finite() && *t > 0.0))
        {
            return Err(Error::Config(format!(
                "temperatures {temperatures:?} for {} stages: one positive, finite value per stage",
                self.stages.len()
            )));
        }
        for (s, &t) in self.stages.iter_mut().zip(temperatures) {
            s.record.temperature = t;
        }
        self.manifest.stages = self.stages.iter().map(|s| s.record.clone()).collect();
        Ok(())
    }
}

/// The logits of `model` (eval mode) on every image of `ds`, `[n * C]`.
fn stage_logits(model: &Model, ds: &Dataset, batch: usize) -> Result<Vec<f32>> {
    let [c, h, w] = ds.shape;
    let mut out = Vec::with_capacity(ds.len() * model.classifier().num_classes());
    let idx: Vec<usize> = (0..ds.len()).collect();
    for part in idx.chunks(batch) {
        let mut x = Vec::with_capacity(part.len() * c * h * w);
        for &i in part {
            x.extend_from_slice(ds.image(i));
        }
        let x = Tensor::from_vec(x, (part.len(), c, h, w), model.device())?;
        let logits = model.forward_t(&x, false)?.logits;
        out.extend(
            logits
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    Ok(out)
}

/// Mean cross-entropy of `softmax(beta * logits)` (`[n * c]`) against `labels`.
fn mean_nll(logits: &[f32], labels: &[u32], c: usize, beta: f64) -> f64 {
    let mut total = 0.0;
    for (row, &y) in logits.chunks_exact(c).zip(labels) {
        let m = row
            .iter()
            .fold(f64::NEG_INFINITY, |a, &v| a.max(beta * v as f64));
        let lse = m + row
            .iter()
            .map(|&v| (beta * v as f64 - m).exp())
            .sum::<f64>()
            .ln();
        total += lse - beta * row[y as usize] as f64;
    }
    total / labels.len().max(1) as f64
}

/// The minimiser of a convex function on `[lo, hi]` by golden-section
/// search on a log scale (to 1e-6 relative).
fn minimise_convex(f: impl Fn(f64) -> f64, lo: f64, hi: f64) -> f64 {
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (lo.ln(), hi.ln());
    let mut x1 = b - g * (b - a);
    let mut x2 = a + g * (b - a);
    let (mut f1, mut f2) = (f(x1.exp()), f(x2.exp()));
    while b - a > 1e-6 {
        if f1 <= f2 {
            b = x2;
            x2 = x1;
            f2 = f1;
            x1 = b - g * (b - a);
            f1 = f(x1.exp());
        } else {
            a = x1;
            x1 = x2;
            f1 = f2;
            x2 = a + g * (b - a);
            f2 = f(x2.exp());
        }
    }
    ((a + b) / 2.0).exp()
}
