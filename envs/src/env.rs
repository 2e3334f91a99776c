//! The single-episode env [`OptimalStoppingEnv`] and the [`Env`] trait that
//! it and its wrappers implement.

use crate::backend::{check_batch, validate_backend, StageBackend};
use crate::error::{Error, Result};
use crate::reward::{Action, ActionMask, RewardModel, RewardSpec};
use crate::rng::EnvRng;
use crate::spaces::{ActionSpace, ObservationSpace};
use crate::wrappers::EpisodeStats;

/// The env id; the version is bumped whenever behaviour changes (rewards,
/// observations, random streams). See the crate docs' version history.
pub const ENV_ID: &str = "CascadeStopping-v0";

/// What the agent sees after a stage has run: `o_t = (t, s_t, p_t, c_t)`.
///
/// # Shapes
/// `features: [d_t]` (`d_t` = the backend's `feature_dims()[stage]`),
/// `probs: [classes]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// 0-based index of the stage that has run last; the MDP's `t` is
    /// `stage + 1`.
    pub stage: usize,
    /// Stage features `s_t(x)`, `[d_t]`.
    pub features: Vec<f32>,
    /// Label probabilities `p_t(x) = softmax(C_t(x))`, `[classes]`.
    pub probs: Vec<f32>,
    /// Normalised `Cost(t)` spent so far under the cost model (in units of
    /// the largest stage's cost).
    pub cost_so_far: f32,
}

/// Side information of a reset or step.
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    /// Legal actions now (all false once terminated).
    pub action_mask: ActionMask,
    /// Index of the episode's input in the backend's split.
    pub sample: usize,
    /// Normalised cost spent so far (`f64` of `cost_so_far`).
    pub cost: f64,
    /// Cost spent so far in the backend's raw units (e.g. MACs).
    pub raw_cost: f64,
    /// The prediction `yhat`, once terminated.
    pub prediction: Option<u32>,
    /// The true label `y`, once terminated.
    pub label: Option<u32>,
    /// The loss `L(yhat, y)`, once terminated.
    pub loss: Option<f64>,
    /// Episode statistics, filled on the terminating step by
    /// [`crate::RecordEpisodeStatistics`].
    pub episode: Option<EpisodeStats>,
}

/// Options of [`Env::reset`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResetOptions {
    /// Play this sample instead of drawing one uniformly (no random draw is
    /// made then).
    pub sample: Option<usize>,
}

impl ResetOptions {
    /// Options that select `sample`.
    pub fn sample(sample: usize) -> Self {
        ResetOptions {
            sample: Some(sample),
        }
    }
}

/// The result of [`Env::step`].
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The next observation (on `Stop`, the observation stopped at, again:
    /// no stage runs).
    pub obs: Observation,
    /// `0` on `Forward`, `-L(yhat, y) - alpha * Cost(k)` on `Stop`.
    pub reward: f64,
    /// The episode reached its terminal state (after `Stop`).
    pub terminated: bool,
    /// Cut off from outside the MDP; never set by this env (episodes end
    /// by `Stop` within K steps).
    pub truncated: bool,
    /// Side information.
    pub info: Info,
}

/// The Gymnasium env contract, implemented by [`OptimalStoppingEnv`] and its
/// wrappers.
pub trait Env {
    /// Starts an episode. `seed: Some(s)` reseeds the env's RNG first
    /// (`None` continues its stream). Stage 0 runs on the drawn sample.
    fn reset(&mut self, seed: Option<u64>, options: ResetOptions) -> Result<(Observation, Info)>;

    /// Takes `action`. Errors (typed variants): before the first reset
    /// ([`Error::NotReset`]), after termination ([`Error::EpisodeOver`]),
    /// `Forward` at the last stage ([`Error::IllegalAction`]); the env state
    /// is unchanged by an error.
    fn step(&mut self, action: Action) -> Result<Step>;

    /// The observation space.
    fn observation_space(&self) -> &ObservationSpace;

    /// The action space.
    fn action_space(&self) -> ActionSpace {
        ActionSpace
    }

    /// The reward (spec and normalised stage costs).
    fn reward_model(&self) -> &RewardModel;
}

#[derive(Debug, Clone)]
enum State {
    Fresh,
    Running {
        sample: usize,
        label: u32,
        obs: Observation,
    },
    Terminated {
        stage: usize,
    },
}

/// The cascade as an optimal-stopping MDP over one input at a time; see the
/// crate docs for the full description.
///
/// ```
/// use cascade_env::{Action, Env, OptimalStoppingEnv, ReplayBackend, ResetOptions, RewardSpec};
/// # fn main() -> Result<(), cascade_env::Error> {
/// let backend = ReplayBackend::synthetic(&Default::default())?;
/// let mut env = OptimalStoppingEnv::new(backend, RewardSpec::default())?;
/// let (mut obs, mut info) = env.reset(Some(42), ResetOptions::default())?;
/// let mut ret = 0.0;
/// loop {
///     let confident = obs.probs.iter().cloned().fold(0.0, f32::max) > 0.9;
///     let action = if confident || !info.action_mask.forward { Action::Stop } else { Action::Forward };
///     let step = env.step(action)?;
///     ret += step.reward;
///     if step.terminated { break; }
///     (obs, info) = (step.obs, step.info);
/// }
/// assert!(ret <= 0.0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct OptimalStoppingEnv<B: StageBackend> {
    backend: B,
    model: RewardModel,
    space: ObservationSpace,
    rng: EnvRng,
    state: State,
}

impl<B: StageBackend> OptimalStoppingEnv<B> {
    /// An env over `backend` with reward `spec`. Refuses an invalid spec, an
    /// empty cascade, bad stage costs, or a backend whose sizes disagree.
    /// The RNG starts seeded with 0 (never OS entropy), so an env that is
    /// never given a seed is still reproducible (the Python package seeds
    /// an unseeded env from OS entropy, as Gymnasium does).
    pub fn new(backend: B, spec: RewardSpec) -> Result<Self> {
        validate_backend(&backend)?;
        let model = spec.compile(backend.stage_costs())?;
        let space = ObservationSpace {
            feature_dims: backend.feature_dims().to_vec(),
            num_classes: backend.num_classes(),
            max_cost: model.cost(model.num_stages() - 1),
        };
        Ok(OptimalStoppingEnv {
            backend,
            model,
            space,
            rng: EnvRng::new(0),
            state: State::Fresh,
        })
    }

    /// Starts an episode; see [`Env::reset`].
    pub fn reset(
        &mut self,
        seed: Option<u64>,
        options: ResetOptions,
    ) -> Result<(Observation, Info)> {
        if let Some(s) = seed {
            self.rng = EnvRng::new(s);
        }
        let n = self.backend.num_samples();
        let sample = match options.sample {
            Some(s) if s >= n => {
                return Err(Error::InvalidArgument(format!(
                    "reset option sample {s} out of range: the split has {n} samples"
                )))
            }
            Some(s) => s,
            None => self.rng.below(n),
        };
        let label = self.backend.label(sample);
        if label as usize >= self.backend.num_classes() {
            return Err(Error::InvalidArgument(format!(
                "the backend's label of sample {sample} is {label}, not below {} classes",
                self.backend.num_classes()
            )));
        }
        // Reset voids the previous episode even if stage 0 fails below.
        self.state = State::Fresh;
        let obs = self.run(0, sample)?;
        let info = self.info(sample, 0, ActionMask::at_stage(0, self.model.num_stages()));
        self.state = State::Running {
            sample,
            label,
            obs: obs.clone(),
        };
        Ok((obs, info))
    }

    /// The env's random generator (it draws the samples and, with
    /// [`crate::Prediction::Sample`], the predictions).
    pub fn rng(&self) -> &EnvRng {
        &self.rng
    }

    /// Replaces the env's random generator, e.g. with one saved by
    /// [`EnvRng::state`]; the running episode, if any, goes on.
    pub fn set_rng(&mut self, rng: EnvRng) {
        self.rng = rng;
    }

    /// Takes `action`; see [`Env::step`].
    pub fn step(&mut self, action: Action) -> Result<Step> {
        let k = self.model.num_stages();
        let (sample, label, obs) = match &self.state {
            State::Fresh => {
                return Err(Error::NotReset {
                    after_failure: false,
                })
            }
            State::Terminated { stage } => return Err(Error::EpisodeOver { stage: *stage }),
            State::Running { sample, label, obs } => (*sample, *label, obs),
        };
        let stage = obs.stage;
        match action {
            Action::Forward => {
                if stage + 1 >= k {
                    return Err(Error::IllegalAction {
                        action,
                        stage,
                        num_stages: k,
                        env: None,
                    });
                }
                let next = self.run(stage + 1, sample)?;
                let info = self.info(sample, stage + 1, ActionMask::at_stage(stage + 1, k));
                if let State::Running { obs, .. } = &mut self.state {
                    obs.clone_from(&next);
                }
                Ok(Step {
                    obs: next,
                    reward: 0.0,
                    terminated: false,
                    truncated: false,
                    info,
                })
            }
            Action::Stop => {
                let prediction = self.model.predict(&obs.probs, &mut self.rng);
                let loss = self.model.loss(&obs.probs, prediction, label);
                let reward = self.model.stop_reward(stage, &obs.probs, prediction, label);
                let State::Running { obs, .. } =
                    std::mem::replace(&mut self.state, State::Terminated { stage })
                else {
                    unreachable!("state checked above")
                };
                let mut info = self.info(sample, stage, ActionMask::NONE);
                info.prediction = Some(prediction);
                info.label = Some(label);
                info.loss = Some(loss);
                Ok(Step {
                    obs,
                    reward,
                    terminated: true,
                    truncated: false,
                    info,
                })
            }
        }
    }

    fn run(&mut self, stage: usize, sample: usize) -> Result<Observation> {
        let batch = self.backend.run_stage(stage, &[sample])?;
        let d = self.space.feature_dims[stage];
        check_batch(stage, 1, d, self.space.num_classes, &batch)?;
        Ok(Observation {
            stage,
            features: batch.features,
            probs: batch.probs,
            cost_so_far: self.model.cost(stage) as f32,
        })
    }

    fn info(&self, sample: usize, stage: usize, action_mask: ActionMask) -> Info {
        Info {
            action_mask,
            sample,
            cost: self.model.cost(stage),
            raw_cost: self.model.raw_cost(stage),
            prediction: None,
            label: None,
            loss: None,
            episode: None,
        }
    }

    /// The legal actions now.
    pub fn action_mask(&self) -> ActionMask {
        match &self.state {
            State::Running { obs, .. } => ActionMask::at_stage(obs.stage, self.model.num_stages()),
            _ => ActionMask::NONE,
        }
    }

    /// Number of stages K.
    pub fn num_stages(&self) -> usize {
        self.model.num_stages()
    }

    /// The reward model.
    pub fn reward_model(&self) -> &RewardModel {
        &self.model
    }

    /// The observation space.
    pub fn observation_space(&self) -> &ObservationSpace {
        &self.space
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably (e.g. to train the classifiers it holds).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Gives the backend back.
    pub fn into_backend(self) -> B {
        self.backend
    }
}

impl<B: StageBackend> Env for OptimalStoppingEnv<B> {
    fn reset(&mut self, seed: Option<u64>, options: ResetOptions) -> Result<(Observation, Info)> {
        OptimalStoppingEnv::reset(self, seed, options)
    }

    fn step(&mut self, action: Action) -> Result<Step> {
        OptimalStoppingEnv::step(self, action)
    }

    fn observation_space(&self) -> &ObservationSpace {
        &self.space
    }

    fn reward_model(&self) -> &RewardModel {
        &self.model
    }
}
