//! Fixtures shared by the integration tests.
#![allow(dead_code)]

use cascade_env::{
    Error, ReplayBackend, StageBackend, StageBatch, StageRows, SyntheticTraceConfig,
};

/// A small synthetic replay: 3 stages, 5 classes, widths 2/3/4, costs 1/3/9.
pub fn small(seed: u64) -> ReplayBackend {
    ReplayBackend::synthetic(&SyntheticTraceConfig {
        num_samples: 64,
        num_classes: 5,
        feature_dims: vec![2, 3, 4],
        stage_costs: vec![1.0, 3.0, 9.0],
        hopeless_fraction: 0.2,
        seed,
    })
    .unwrap()
}

/// Wraps a backend, records every call and can be told to fail.
pub struct Recording<B> {
    pub inner: B,
    /// `(stage, samples)` of every run_stage / run_stage_into call.
    pub calls: Vec<(usize, Vec<usize>)>,
    /// Fail the call with this index (0-based), if any.
    pub fail_at: Option<usize>,
}

impl<B> Recording<B> {
    pub fn new(inner: B) -> Self {
        Recording {
            inner,
            calls: Vec::new(),
            fail_at: None,
        }
    }

    fn record(&mut self, stage: usize, samples: &[usize]) -> Result<(), Error> {
        let idx = self.calls.len();
        self.calls.push((stage, samples.to_vec()));
        if self.fail_at == Some(idx) {
            return Err(Error::backend(std::io::Error::other("device lost")));
        }
        Ok(())
    }
}

impl<B: StageBackend> StageBackend for Recording<B> {
    fn num_stages(&self) -> usize {
        self.inner.num_stages()
    }
    fn stage_costs(&self) -> &[f64] {
        self.inner.stage_costs()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn feature_dims(&self) -> &[usize] {
        self.inner.feature_dims()
    }
    fn num_samples(&self) -> usize {
        self.inner.num_samples()
    }
    fn label(&self, sample: usize) -> u32 {
        self.inner.label(sample)
    }
    fn run_stage(&mut self, stage: usize, samples: &[usize]) -> Result<StageBatch, Error> {
        self.record(stage, samples)?;
        self.inner.run_stage(stage, samples)
    }
    fn run_stage_into(
        &mut self,
        stage: usize,
        samples: &[usize],
        out: StageRows<'_>,
    ) -> Result<(), Error> {
        self.record(stage, samples)?;
        self.inner.run_stage_into(stage, samples, out)
    }
}

/// A backend that only implements `run_stage` (exercises the default
/// `run_stage_into`), optionally returning rows of the wrong width.
pub struct OnlyRunStage {
    pub inner: ReplayBackend,
    pub truncate_probs: bool,
}

impl StageBackend for OnlyRunStage {
    fn num_stages(&self) -> usize {
        self.inner.num_stages()
    }
    fn stage_costs(&self) -> &[f64] {
        self.inner.stage_costs()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn feature_dims(&self) -> &[usize] {
        self.inner.feature_dims()
    }
    fn num_samples(&self) -> usize {
        self.inner.num_samples()
    }
    fn label(&self, sample: usize) -> u32 {
        self.inner.label(sample)
    }
    fn run_stage(&mut self, stage: usize, samples: &[usize]) -> Result<StageBatch, Error> {
        let mut b = self.inner.run_stage(stage, samples)?;
        if self.truncate_probs {
            b.probs.pop();
        }
        Ok(b)
    }
}
