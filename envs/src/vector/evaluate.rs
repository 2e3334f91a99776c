//! [`VecEnv::evaluate`]: every sample of a split played once with a batch
//! policy, and the outcomes it returns.

use serde::{Deserialize, Serialize};

use super::{AutoReset, BatchObservation, Readiness, VecEnv};
use crate::backend::StageBackend;
use crate::error::{Error, Result};
use crate::reward::Action;
use crate::rng::{splitmix64, EnvRng};

impl<B: StageBackend> VecEnv<B> {
    /// Plays each of `samples` once, to the end, with the batch `policy`,
    /// and returns per-sample outcomes and their means.
    ///
    /// Sub-envs take the next sample as soon as they finish, so the batch
    /// stays full. Sampled predictions for sample s use a stream seeded by
    /// `(seed, s)`, so results do not depend on the number of sub-envs or
    /// the order of `samples`. The policy writes one action per sub-env
    /// (entries of done sub-envs are ignored). The autoreset mode is not
    /// used; afterwards every sub-env is done and the vector env needs a
    /// reset before [`Self::step`].
    ///
    /// # Shapes
    /// `samples: [s]` -> `Evaluation::outcomes: [s]` in the same order.
    pub fn evaluate<F>(&mut self, samples: &[usize], seed: u64, mut policy: F) -> Result<Evaluation>
    where
        F: FnMut(&BatchObservation, &mut [Action]) -> Result<()>,
    {
        self.check_samples(samples)?;
        let saved = self.autoreset;
        self.autoreset = AutoReset::Disabled;
        let result = self.evaluate_inner(samples, seed, &mut policy);
        self.autoreset = saved;
        self.readiness = Readiness::Fresh;
        result
    }

    /// [`Self::evaluate`] over the whole split `0..num_samples`.
    pub fn evaluate_all<F>(&mut self, seed: u64, policy: F) -> Result<Evaluation>
    where
        F: FnMut(&BatchObservation, &mut [Action]) -> Result<()>,
    {
        let all: Vec<usize> = (0..self.num_samples).collect();
        self.evaluate(&all, seed, policy)
    }

    fn evaluate_inner(
        &mut self,
        samples: &[usize],
        seed: u64,
        policy: &mut dyn FnMut(&BatchObservation, &mut [Action]) -> Result<()>,
    ) -> Result<Evaluation> {
        let n = self.num_envs();
        let base = splitmix64(seed);
        let mut outcomes: Vec<Option<SampleOutcome>> = vec![None; samples.len()];
        let mut slot = vec![usize::MAX; n];
        let mut next = 0usize;
        let mut actions = vec![Action::Stop; n];
        let mut starts: Vec<(usize, Option<usize>)> = Vec::with_capacity(n);
        // Every sub-env starts idle; the feed fills them.
        self.rewards.fill(0.0);
        self.terminated.fill(false);
        self.info.done.fill(true);
        self.readiness = Readiness::Ready;
        loop {
            starts.clear();
            for (i, sl) in slot.iter_mut().enumerate() {
                if self.info.done[i] && next < samples.len() {
                    let s = samples[next];
                    self.rngs[i] = EnvRng::new(base.wrapping_add(s as u64));
                    *sl = next;
                    starts.push((i, Some(s)));
                    next += 1;
                }
            }
            if !starts.is_empty() {
                self.restart_some(&starts)?;
            }
            if self.all_done() {
                break;
            }
            policy(&self.obs, &mut actions)?;
            self.step(&actions)?;
            for i in 0..n {
                if self.terminated[i] {
                    let t = self.info.stop_stage[i] as usize;
                    outcomes[slot[i]] = Some(SampleOutcome {
                        sample: self.info.final_sample[i],
                        stop_stage: t,
                        prediction: self.info.prediction[i],
                        label: self.info.label[i],
                        loss: self.info.loss[i],
                        cost: self.info.episode_cost[i],
                        raw_cost: self.model.raw_cost(t),
                        reward: self.rewards[i],
                    });
                }
            }
        }
        // Every started episode ends in Stop (Forward at the last stage is
        // an error), so every sample has an outcome.
        let outcomes = outcomes
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                Error::InvalidArgument("evaluate: an episode did not terminate".into())
            })?;
        Ok(Evaluation::from_outcomes(outcomes, self.num_stages()))
    }
}

/// The outcome of one evaluated sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleOutcome {
    /// The sample index.
    pub sample: usize,
    /// 0-based stage stopped at.
    pub stop_stage: usize,
    /// The prediction.
    pub prediction: u32,
    /// The true label.
    pub label: u32,
    /// `L(yhat, y)` under the spec's loss.
    pub loss: f64,
    /// Normalised `Cost(k)`.
    pub cost: f64,
    /// `Cost(k)` in the backend's raw units.
    pub raw_cost: f64,
    /// The episode's return `-L - alpha * Cost(k)`.
    pub reward: f64,
}

/// Outcomes of [`VecEnv::evaluate`] and their means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// One outcome per evaluated sample, in the order given.
    pub outcomes: Vec<SampleOutcome>,
    /// Mean return.
    pub mean_return: f64,
    /// Fraction of wrong predictions (whatever the spec's loss).
    pub error_rate: f64,
    /// Mean loss under the spec's loss.
    pub mean_loss: f64,
    /// Mean normalised cost (a fraction of the largest stage's cost).
    pub mean_cost: f64,
    /// Mean cost in the backend's raw units.
    pub mean_raw_cost: f64,
    /// Fraction of samples stopped at each stage, `[K]`.
    pub stop_fraction: Vec<f64>,
}

impl Evaluation {
    /// Summarises `outcomes` of a `num_stages`-stage cascade.
    pub fn from_outcomes(outcomes: Vec<SampleOutcome>, num_stages: usize) -> Self {
        let m = outcomes.len().max(1) as f64;
        let mean = |f: &dyn Fn(&SampleOutcome) -> f64| outcomes.iter().map(f).sum::<f64>() / m;
        let mut stop_fraction = vec![0.0; num_stages];
        for o in &outcomes {
            stop_fraction[o.stop_stage] += 1.0 / m;
        }
        Evaluation {
            mean_return: mean(&|o| o.reward),
            error_rate: mean(&|o| (o.prediction != o.label) as u8 as f64),
            mean_loss: mean(&|o| o.loss),
            mean_cost: mean(&|o| o.cost),
            mean_raw_cost: mean(&|o| o.raw_cost),
            stop_fraction,
            outcomes,
        }
    }
}
