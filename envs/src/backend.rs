//! The [`StageBackend`] trait: what an env needs from a cascade.
//!
//! A backend owns the cascade's classifiers (or their recorded outputs) and
//! a data split. The env asks it to run stage t for exactly the samples that
//! reached stage t, never more: a neural backend therefore does the
//! amortised-inference work the MDP accounts for, and a replay backend
//! copies recorded rows.

use crate::error::{Error, Result};

/// Output of one stage for a batch of n samples.
///
/// # Shapes
/// `features: [n, d_stage]`, `probs: [n, classes]`, both row-major, rows in
/// the order of the requested samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageBatch {
    /// Stage features `s_t(x)`, `[n, d_stage]` row-major.
    pub features: Vec<f32>,
    /// Label probabilities `p_t(x)`, `[n, classes]` row-major.
    pub probs: Vec<f32>,
}

/// Where [`StageBackend::run_stage_into`] writes: sample `samples[j]` goes to
/// row `rows[j]` of `features` and of `probs`.
///
/// # Shapes
/// `features: [m, d_stage]`, `probs: [m, classes]` row-major, any `m` larger
/// than every row index; `rows: [n]` for n requested samples.
#[derive(Debug)]
pub struct StageRows<'a> {
    /// Destination of the features, `[m, d_stage]` row-major.
    pub features: &'a mut [f32],
    /// Destination of the probabilities, `[m, classes]` row-major.
    pub probs: &'a mut [f32],
    /// Destination row of each requested sample.
    pub rows: &'a [u32],
}

/// A cascade of K classifiers over a data split of `num_samples` inputs.
///
/// Implemented by [`crate::ReplayBackend`] (recorded outputs) here and by
/// neural backends elsewhere. Stages are 0-based in code: stage index `t`
/// is `C_{t+1}` of the MDP.
pub trait StageBackend {
    /// Number of stages K (>= 1).
    fn num_stages(&self) -> usize;

    /// Raw cost `F_t` per stage (e.g. MACs of running that stage alone),
    /// `[K]`. The env normalises them; see [`crate::CostModel`].
    fn stage_costs(&self) -> &[f64];

    /// Number of classes.
    fn num_classes(&self) -> usize;

    /// Feature width `d_t` per stage, `[K]`.
    fn feature_dims(&self) -> &[usize];

    /// Number of samples in the split (episodes draw from `0..num_samples`).
    fn num_samples(&self) -> usize;

    /// The true label of `sample`, in `0..num_classes`.
    fn label(&self, sample: usize) -> u32;

    /// The name of 0-based stage `stage` in recorded traces; the default is
    /// `stage{t+1}`.
    fn stage_name(&self, stage: usize) -> String {
        format!("stage{}", stage + 1)
    }

    /// Runs 0-based stage `stage` for `samples`.
    ///
    /// # Shapes
    /// `samples: [n]` -> features `[n, d_stage]`, probs `[n, classes]`,
    /// row-major, rows in the order of `samples`.
    fn run_stage(&mut self, stage: usize, samples: &[usize]) -> Result<StageBatch>;

    /// Runs `stage` for `samples` and writes row j's output to row
    /// `out.rows[j]` of `out.features` and `out.probs`. This is the path the
    /// vector env uses; the default calls [`StageBackend::run_stage`] and
    /// scatters, checking the sizes it returned. Backends that hold their
    /// outputs in memory override it to copy once.
    ///
    /// # Shapes
    /// `samples: [n]`, `out.rows: [n]`, `out.features: [m, d_stage]`,
    /// `out.probs: [m, classes]`.
    fn run_stage_into(
        &mut self,
        stage: usize,
        samples: &[usize],
        out: StageRows<'_>,
    ) -> Result<()> {
        let d = self.feature_dims()[stage];
        let c = self.num_classes();
        check_rows(stage, samples.len(), d, c, &out)?;
        let batch = self.run_stage(stage, samples)?;
        check_batch(stage, samples.len(), d, c, &batch)?;
        for (j, &r) in out.rows.iter().enumerate() {
            let r = r as usize;
            out.features[r * d..(r + 1) * d].copy_from_slice(&batch.features[j * d..(j + 1) * d]);
            out.probs[r * c..(r + 1) * c].copy_from_slice(&batch.probs[j * c..(j + 1) * c]);
        }
        Ok(())
    }
}

/// Checks that a backend's batch has `n` rows of the right widths.
pub(crate) fn check_batch(
    stage: usize,
    n: usize,
    d: usize,
    c: usize,
    batch: &StageBatch,
) -> Result<()> {
    if batch.features.len() != n * d {
        return Err(Error::BackendOutput {
            stage,
            what: "feature",
            expected: n * d,
            found: batch.features.len(),
        });
    }
    if batch.probs.len() != n * c {
        return Err(Error::BackendOutput {
            stage,
            what: "probability",
            expected: n * c,
            found: batch.probs.len(),
        });
    }
    Ok(())
}

/// Checks that `out` can take `n` rows at its row indices.
pub(crate) fn check_rows(
    stage: usize,
    n: usize,
    d: usize,
    c: usize,
    out: &StageRows<'_>,
) -> Result<()> {
    if out.rows.len() != n {
        return Err(Error::InvalidArgument(format!(
            "run_stage_into(stage index {stage}): {} destination rows for {n} samples",
            out.rows.len()
        )));
    }
    let m_f = out.features.len().checked_div(d).unwrap_or(usize::MAX);
    let m_p = out.probs.len().checked_div(c).unwrap_or(usize::MAX);
    let m = m_f.min(m_p);
    if let Some(&r) = out.rows.iter().find(|&&r| r as usize >= m) {
        return Err(Error::InvalidArgument(format!(
            "run_stage_into(stage index {stage}): destination row {r} out of range (buffers hold {m} rows)"
        )));
    }
    Ok(())
}

/// `StageBackend` for a pointer to one: every method forwarded.
macro_rules! forward_stage_backend {
    ($($ptr:ty),*) => {$(
        impl<B: StageBackend + ?Sized> StageBackend for $ptr {
            fn num_stages(&self) -> usize {
                (**self).num_stages()
            }
            fn stage_costs(&self) -> &[f64] {
                (**self).stage_costs()
            }
            fn num_classes(&self) -> usize {
                (**self).num_classes()
            }
            fn feature_dims(&self) -> &[usize] {
                (**self).feature_dims()
            }
            fn num_samples(&self) -> usize {
                (**self).num_samples()
            }
            fn label(&self, sample: usize) -> u32 {
                (**self).label(sample)
            }
            fn stage_name(&self, stage: usize) -> String {
                (**self).stage_name(stage)
            }
            fn run_stage(&mut self, stage: usize, samples: &[usize]) -> Result<StageBatch> {
                (**self).run_stage(stage, samples)
            }
            fn run_stage_into(
                &mut self,
                stage: usize,
                samples: &[usize],
                out: StageRows<'_>,
            ) -> Result<()> {
                (**self).run_stage_into(stage, samples, out)
            }
        }
    )*};
}

forward_stage_backend!(&mut B, Box<B>);

/// Checks a backend's static description (stage count, costs, widths,
/// classes, samples) once, when an env is built around it.
pub(crate) fn validate_backend<B: StageBackend + ?Sized>(b: &B) -> Result<()> {
    let k = b.num_stages();
    if k == 0 {
        return Err(Error::InvalidArgument(
            "the stage backend has no stages (empty cascade)".into(),
        ));
    }
    if b.stage_costs().len() != k {
        return Err(Error::InvalidArgument(format!(
            "the stage backend has {k} stages but {} stage costs",
            b.stage_costs().len()
        )));
    }
    if b.feature_dims().len() != k {
        return Err(Error::InvalidArgument(format!(
            "the stage backend has {k} stages but {} feature widths",
            b.feature_dims().len()
        )));
    }
    if b.num_classes() == 0 {
        return Err(Error::InvalidArgument(
            "the stage backend has 0 classes".into(),
        ));
    }
    if b.num_samples() == 0 {
        return Err(Error::InvalidArgument(
            "the stage backend has no samples".into(),
        ));
    }
    Ok(())
}
