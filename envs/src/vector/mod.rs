//! [`VecEnv`]: n episodes in lock step, the throughput path.
//!
//! Every step runs each stage at most once, as one batch, for exactly the
//! sub-envs that need it (those that chose `Forward`, and those that start a
//! new episode at stage 0). Observations live in flat buffers that are
//! allocated once; a step allocates nothing.
//!
//! # Observation layout ([`BatchObservation`])
//!
//! Stages have different feature widths `d_t`, so features are kept per
//! stage: stage t has a `[n, d_t]` buffer and sub-env i's stage-t features
//! are row i. The current features of env i are therefore row i of stage
//! `stage[i]`'s buffer, and rows of stages below `stage[i]` hold the
//! earlier stages of the same episode (a free history for policies that
//! want it); rows above `stage[i]` are stale. Probabilities have the same
//! width at every stage and live in one `[n, C]` buffer (current stage
//! only). For per-stage policy heads, [`BatchObservation::envs_at_stage`]
//! lists the live sub-envs at each stage and
//! [`BatchObservation::gather_features`] packs their rows into a
//! contiguous `[m_t, d_t]` block without allocating.

use serde::{Deserialize, Serialize};

use crate::backend::{validate_backend, StageBackend, StageRows};
use crate::error::{Error, Result};
use crate::reward::{Action, ActionMask, RewardModel, RewardSpec};
use crate::rng::EnvRng;

mod batch;
mod evaluate;

pub use batch::{BatchInfo, BatchObservation};
pub use evaluate::{Evaluation, SampleOutcome};

/// What a [`VecEnv`] does with a sub-env whose episode terminated.
///
/// Whatever the mode, the terminating step reports the episode's reward,
/// `terminated[i] = true` and the episode's outcome in [`BatchInfo`]
/// (prediction, label, loss, stop stage, cost, sample).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoReset {
    /// The sub-env stays done (`done[i]`, actions ignored, reward 0, its
    /// observation frozen) until [`VecEnv::reset`] or
    /// [`VecEnv::reset_done`]. For running a fixed batch of samples to the
    /// end, e.g. with [`VecEnv::reset_with_samples`].
    Disabled,
    /// Gymnasium's default: the terminating step returns the final
    /// observation and sets `done[i]`; on the next step the sub-env's
    /// action is ignored and it restarts (reward 0, not terminated).
    NextStep,
    /// The sub-env restarts within the terminating step: the returned
    /// observation is already the new episode's first one. Nothing is lost:
    /// in this MDP the final observation is the one `Stop` was chosen
    /// from, which the caller already has. Every step is a real transition,
    /// so this is the mode for throughput.
    SameStep,
}

/// What [`VecEnv::step`] returns: views into the vector env's buffers.
///
/// # Shapes
/// `rewards`, `terminated`, `truncated`: `[n]`.
#[derive(Debug, Clone, Copy)]
pub struct VecStep<'a> {
    /// The observations after the step.
    pub obs: &'a BatchObservation,
    /// Rewards of this step (0 for `Forward`, ignored and restarting envs).
    pub rewards: &'a [f64],
    /// Sub-envs whose episode terminated in this step.
    pub terminated: &'a [bool],
    /// Always false (episodes end by `Stop` within K steps).
    pub truncated: &'a [bool],
    /// Side information, including the done mask.
    pub info: &'a BatchInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    Fresh,
    Ready,
    Failed,
}

/// n episodes of [`crate::OptimalStoppingEnv`] in lock step over one
/// backend; see the module docs for the layout.
///
/// Sub-env i behaves exactly like a single env seeded with `seed + i`
/// (Gymnasium's convention) that is reset with `reset(None, ..)` whenever
/// its episode restarts: same samples, same sampled predictions, same
/// rewards. Actions of done sub-envs are ignored (any value is accepted).
/// `Forward` for a live sub-env at the last stage is an
/// [`Error::IllegalAction`] naming the sub-env, and the step is refused
/// before anything changes. If the backend fails during a step, the vector
/// env must be reset before the next step.
///
/// ```
/// use cascade_env::{Action, AutoReset, ReplayBackend, RewardSpec, VecEnv};
/// # fn main() -> Result<(), cascade_env::Error> {
/// let backend = ReplayBackend::synthetic(&Default::default())?;
/// let mut venv = VecEnv::new(backend, RewardSpec::default(), 64, AutoReset::SameStep)?;
/// let k = venv.num_stages() as u32;
/// let mut actions = vec![Action::Stop; 64];
/// venv.reset(Some(0))?;
/// let mut episodes = 0;
/// for _ in 0..10 {
///     let obs = venv.obs();
///     for (i, a) in actions.iter_mut().enumerate() {
///         let p_max = obs.probs_of(i).iter().cloned().fold(0.0, f32::max);
///         *a = if p_max > 0.9 || obs.stage()[i] + 1 == k { Action::Stop } else { Action::Forward };
///     }
///     let step = venv.step(&actions)?;
///     episodes += step.terminated.iter().filter(|&&t| t).count();
/// }
/// assert!(episodes > 0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct VecEnv<B: StageBackend> {
    backend: B,
    model: RewardModel,
    autoreset: AutoReset,
    num_samples: usize,
    stage_cost_f32: Vec<f32>,
    rngs: Vec<EnvRng>,
    labels: Vec<u32>,
    obs: BatchObservation,
    info: BatchInfo,
    rewards: Vec<f64>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    readiness: Readiness,
    req_envs: Vec<Vec<u32>>,
    req_samples: Vec<Vec<usize>>,
}

impl<B: StageBackend> VecEnv<B> {
    /// `num_envs` sub-envs over `backend` with reward `spec` and the given
    /// autoreset mode. Refuses `num_envs == 0` (or more than `u32::MAX`) and
    /// whatever [`crate::OptimalStoppingEnv::new`] refuses. Sub-env i's RNG
    /// starts seeded with `i` until a reset gives a seed.
    pub fn new(
        backend: B,
        spec: RewardSpec,
        num_envs: usize,
        autoreset: AutoReset,
    ) -> Result<Self> {
        validate_backend(&backend)?;
        if num_envs == 0 || num_envs > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "num_envs must be in 1..=2^32-1, got {num_envs}"
            )));
        }
        let model = spec.compile(backend.stage_costs())?;
        let k = model.num_stages();
        let n = num_envs;
        Ok(VecEnv {
            num_samples: backend.num_samples(),
            stage_cost_f32: (0..k).map(|t| model.cost(t) as f32).collect(),
            rngs: (0..n).map(|i| EnvRng::new(i as u64)).collect(),
            labels: vec![0; n],
            obs: BatchObservation::new(n, backend.feature_dims(), backend.num_classes()),
            info: BatchInfo::new(n),
            rewards: vec![0.0; n],
            terminated: vec![false; n],
            truncated: vec![false; n],
            readiness: Readiness::Fresh,
            req_envs: (0..k).map(|_| Vec::with_capacity(n)).collect(),
            req_samples: (0..k).map(|_| Vec::with_capacity(n)).collect(),
            backend,
            model,
            autoreset,
        })
    }

    /// Number of sub-envs n.
    pub fn num_envs(&self) -> usize {
        self.rngs.len()
    }

    /// Number of stages K.
    pub fn num_stages(&self) -> usize {
        self.model.num_stages()
    }

    /// The autoreset mode.
    pub fn autoreset(&self) -> AutoReset {
        self.autoreset
    }

    /// The reward model.
    pub fn reward_model(&self) -> &RewardModel {
        &self.model
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Gives the backend back.
    pub fn into_backend(self) -> B {
        self.backend
    }

    /// The current observations.
    pub fn obs(&self) -> &BatchObservation {
        &self.obs
    }

    /// The current side information.
    pub fn info(&self) -> &BatchInfo {
        &self.info
    }

    /// True when no sub-env has a running episode.
    pub fn all_done(&self) -> bool {
        self.info.done.iter().all(|&d| d)
    }

    /// Sub-env `i`'s legal actions ([`ActionMask::NONE`] when done).
    pub fn action_mask(&self, i: usize) -> ActionMask {
        if self.info.done[i] {
            ActionMask::NONE
        } else {
            ActionMask::at_stage(self.obs.stage[i] as usize, self.num_stages())
        }
    }

    fn view(&self) -> VecStep<'_> {
        VecStep {
            obs: &self.obs,
            rewards: &self.rewards,
            terminated: &self.terminated,
            truncated: &self.truncated,
            info: &self.info,
        }
    }

    /// Resets every sub-env. `seed: Some(s)` reseeds sub-env i with
    /// `s + i` (wrapping); each then draws its sample uniformly.
    pub fn reset(&mut self, seed: Option<u64>) -> Result<VecStep<'_>> {
        self.reseed(seed);
        let all: Vec<(usize, Option<usize>)> = (0..self.num_envs()).map(|i| (i, None)).collect();
        self.restart(&all)?;
        Ok(self.view())
    }

    /// Resets every sub-env on the given samples (`samples[i]` for sub-env
    /// i; no random draw). Later autoresets draw uniformly.
    ///
    /// # Shapes
    /// `samples: [n]`.
    pub fn reset_with_samples(
        &mut self,
        seed: Option<u64>,
        samples: &[usize],
    ) -> Result<VecStep<'_>> {
        if samples.len() != self.num_envs() {
            return Err(Error::InvalidArgument(format!(
                "reset_with_samples: {} samples for {} sub-envs",
                samples.len(),
                self.num_envs()
            )));
        }
        self.check_samples(samples)?;
        self.reseed(seed);
        let all: Vec<(usize, Option<usize>)> = samples
            .iter()
            .enumerate()
            .map(|(i, &s)| (i, Some(s)))
            .collect();
        self.restart(&all)?;
        Ok(self.view())
    }

    /// Restarts the sub-envs that are done (drawing samples from their own
    /// streams), leaving the others as they are; their per-step outputs
    /// (reward, terminated) are cleared. For [`AutoReset::Disabled`].
    pub fn reset_done(&mut self) -> Result<VecStep<'_>> {
        if self.readiness != Readiness::Ready {
            return Err(Error::NotReset {
                after_failure: self.readiness == Readiness::Failed,
            });
        }
        let done: Vec<(usize, Option<usize>)> = (0..self.num_envs())
            .filter(|&i| self.info.done[i])
            .map(|i| (i, None))
            .collect();
        self.restart_some(&done)?;
        Ok(self.view())
    }

    /// Restarts the sub-envs where `mask[i]` is true, done or not (a running
    /// episode is abandoned), leaving the others as they are; the restarted
    /// ones' per-step outputs (reward, terminated) are cleared. `seed:
    /// Some(s)` reseeds each restarted sub-env i with `s + i` (wrapping),
    /// as [`Self::reset`] would; each then draws its sample. This is
    /// Gymnasium's `reset(options={"reset_mask": mask})`, the way to restart
    /// sub-envs under [`AutoReset::Disabled`]. Refused before the first
    /// reset ([`Error::NotReset`]) and for a mask of the wrong length.
    ///
    /// # Shapes
    /// `mask: [n]`.
    pub fn reset_envs(&mut self, mask: &[bool], seed: Option<u64>) -> Result<VecStep<'_>> {
        if self.readiness != Readiness::Ready {
            return Err(Error::NotReset {
                after_failure: self.readiness == Readiness::Failed,
            });
        }
        if mask.len() != self.num_envs() {
            return Err(Error::InvalidArgument(format!(
                "reset_envs: a mask of {} entries for {} sub-envs",
                mask.len(),
                self.num_envs()
            )));
        }
        let which: Vec<(usize, Option<usize>)> = mask
            .iter()
            .enumerate()
            .filter(|&(_, &m)| m)
            .map(|(i, _)| (i, None))
            .collect();
        if let Some(s) = seed {
            for &(i, _) in &which {
                self.rngs[i] = EnvRng::new(s.wrapping_add(i as u64));
            }
        }
        self.restart_some(&which)?;
        Ok(self.view())
    }

    fn reseed(&mut self, seed: Option<u64>) {
        if let Some(s) = seed {
            for (i, rng) in self.rngs.iter_mut().enumerate() {
                *rng = EnvRng::new(s.wrapping_add(i as u64));
            }
        }
    }

    fn check_samples(&self, samples: &[usize]) -> Result<()> {
        if let Some(&s) = samples.iter().find(|&&s| s >= self.num_samples) {
            return Err(Error::InvalidArgument(format!(
                "sample {s} out of range: the split has {} samples",
                self.num_samples
            )));
        }
        Ok(())
    }

    /// Restarts all envs listed (every sub-env must be listed by callers
    /// that reset everything): clears per-step outputs of everyone.
    fn restart(&mut self, which: &[(usize, Option<usize>)]) -> Result<()> {
        self.rewards.fill(0.0);
        self.terminated.fill(false);
        self.info.done.fill(true);
        self.readiness = Readiness::Ready;
        self.restart_some(which)
    }

    /// Restarts the listed sub-envs with the given (or drawn) samples,
    /// running stage 0 once for all of them.
    fn restart_some(&mut self, which: &[(usize, Option<usize>)]) -> Result<()> {
        self.clear_requests();
        for &(i, sample) in which {
            self.rewards[i] = 0.0;
            self.terminated[i] = false;
            if let Err(e) = self.start_episode(i, sample) {
                self.readiness = Readiness::Failed;
                return Err(e);
            }
        }
        self.run_requests()
    }

    fn clear_requests(&mut self) {
        for (e, s) in self.req_envs.iter_mut().zip(&mut self.req_samples) {
            e.clear();
            s.clear();
        }
    }

    /// Starts sub-env i's episode on `sample` (or a uniform draw from its
    /// stream) and queues stage 0 for it.
    #[inline]
    fn start_episode(&mut self, i: usize, sample: Option<usize>) -> Result<()> {
        let s = match sample {
            Some(s) => s,
            None => self.rngs[i].below(self.num_samples),
        };
        let label = self.backend.label(s);
        if label as usize >= self.obs.num_classes {
            return Err(Error::InvalidArgument(format!(
                "the backend's label of sample {s} is {label}, not below {} classes",
                self.obs.num_classes
            )));
        }
        self.labels[i] = label;
        self.info.sample[i] = s;
        self.info.done[i] = false;
        self.obs.stage[i] = 0;
        self.obs.cost_so_far[i] = self.stage_cost_f32[0];
        self.req_envs[0].push(i as u32);
        self.req_samples[0].push(s);
        Ok(())
    }

    /// Runs every queued stage once for its sub-envs, then rebuilds the
    /// per-stage index lists.
    fn run_requests(&mut self) -> Result<()> {
        let VecEnv {
            backend,
            obs,
            req_envs,
            req_samples,
            ..
        } = self;
        for t in 0..req_envs.len() {
            if req_envs[t].is_empty() {
                continue;
            }
            let out = StageRows {
                features: &mut obs.features[t],
                probs: &mut obs.probs,
                rows: &req_envs[t],
            };
            if let Err(e) = backend.run_stage_into(t, &req_samples[t], out) {
                self.readiness = Readiness::Failed;
                return Err(e);
            }
        }
        for list in &mut obs.envs_at_stage {
            list.clear();
        }
        for (i, (&t, &done)) in obs.stage.iter().zip(&self.info.done).enumerate() {
            if !done {
                obs.envs_at_stage[t as usize].push(i as u32);
            }
        }
        Ok(())
    }

    /// Takes one action per sub-env (ignored for done sub-envs) and returns
    /// views of the results.
    ///
    /// # Shapes
    /// `actions: [n]`.
    pub fn step(&mut self, actions: &[Action]) -> Result<VecStep<'_>> {
        if self.readiness != Readiness::Ready {
            return Err(Error::NotReset {
                after_failure: self.readiness == Readiness::Failed,
            });
        }
        let n = self.num_envs();
        if actions.len() != n {
            return Err(Error::InvalidArgument(format!(
                "step: {} actions for {n} sub-envs",
                actions.len()
            )));
        }
        let last = self.num_stages() as u32 - 1;
        for (i, &a) in actions.iter().enumerate() {
            if a == Action::Forward && !self.info.done[i] && self.obs.stage[i] == last {
                return Err(Error::IllegalAction {
                    action: a,
                    stage: last as usize,
                    num_stages: last as usize + 1,
                    env: Some(i),
                });
            }
        }
        self.rewards.fill(0.0);
        self.terminated.fill(false);
        self.clear_requests();
        let c = self.obs.num_classes;
        for (i, &action) in actions.iter().enumerate() {
            if self.info.done[i] {
                if self.autoreset == AutoReset::NextStep {
                    if let Err(e) = self.start_episode(i, None) {
                        self.readiness = Readiness::Failed;
                        return Err(e);
                    }
                }
                continue;
            }
            let t = self.obs.stage[i] as usize;
            match action {
                Action::Forward => {
                    let t = t + 1;
                    self.obs.stage[i] = t as u32;
                    self.obs.cost_so_far[i] = self.stage_cost_f32[t];
                    self.req_envs[t].push(i as u32);
                    self.req_samples[t].push(self.info.sample[i]);
                }
                Action::Stop => {
                    let probs = &self.obs.probs[i * c..(i + 1) * c];
                    let label = self.labels[i];
                    let prediction = self.model.predict(probs, &mut self.rngs[i]);
                    let loss = self.model.loss(probs, prediction, label);
                    let cost = self.model.cost(t);
                    self.rewards[i] = -loss - self.model.spec().alpha * cost;
                    self.terminated[i] = true;
                    let info = &mut self.info;
                    info.final_sample[i] = info.sample[i];
                    info.stop_stage[i] = t as u32;
                    info.prediction[i] = prediction;
                    info.label[i] = label;
                    info.loss[i] = loss;
                    info.episode_cost[i] = cost;
                    if self.autoreset == AutoReset::SameStep {
                        if let Err(e) = self.start_episode(i, None) {
                            self.readiness = Readiness::Failed;
                            return Err(e);
                        }
                    } else {
                        info.done[i] = true;
                    }
                }
            }
        }
        self.run_requests()?;
        Ok(self.view())
    }
}
