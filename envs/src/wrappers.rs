//! Wrappers: cross-cutting behaviour around any [`Env`], as in Gymnasium.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::env::{Env, Info, Observation, ResetOptions, Step};
use crate::error::Result;
use crate::reward::{Action, RewardModel};
use crate::spaces::{ActionSpace, ObservationSpace};

/// Statistics of one finished episode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpisodeStats {
    /// Undiscounted return (the stopping reward; `Forward` pays 0).
    pub ret: f64,
    /// Number of steps taken (`stop_stage + 1`).
    pub length: usize,
    /// 0-based stage stopped at.
    pub stop_stage: usize,
    /// Normalised cost spent.
    pub cost: f64,
    /// Whether the prediction was right.
    pub correct: bool,
}

/// Records each episode's return, length, stop stage, cost and
/// correctness: on the terminating step it fills `info.episode`, and it
/// keeps the last `buffer_length` episodes for running means (Gymnasium's
/// `RecordEpisodeStatistics`).
#[derive(Debug)]
pub struct RecordEpisodeStatistics<E: Env> {
    env: E,
    ret: f64,
    length: usize,
    episodes: u64,
    buffer_length: usize,
    recent: VecDeque<EpisodeStats>,
}

impl<E: Env> RecordEpisodeStatistics<E> {
    /// Wraps `env`, keeping the last 100 episodes.
    pub fn new(env: E) -> Self {
        Self::with_buffer_length(env, 100)
    }

    /// Wraps `env`, keeping the last `buffer_length` episodes (at least 1).
    pub fn with_buffer_length(env: E, buffer_length: usize) -> Self {
        let buffer_length = buffer_length.max(1);
        RecordEpisodeStatistics {
            env,
            ret: 0.0,
            length: 0,
            episodes: 0,
            buffer_length,
            recent: VecDeque::with_capacity(buffer_length),
        }
    }

    /// Number of episodes finished since wrapping.
    pub fn episode_count(&self) -> u64 {
        self.episodes
    }

    /// The last (up to `buffer_length`) finished episodes, oldest first.
    pub fn recent(&self) -> &VecDeque<EpisodeStats> {
        &self.recent
    }

    /// Mean return of the recent episodes (`None` before the first).
    pub fn mean_return(&self) -> Option<f64> {
        self.mean(|e| e.ret)
    }

    /// Mean length of the recent episodes.
    pub fn mean_length(&self) -> Option<f64> {
        self.mean(|e| e.length as f64)
    }

    /// Mean normalised cost of the recent episodes.
    pub fn mean_cost(&self) -> Option<f64> {
        self.mean(|e| e.cost)
    }

    /// Accuracy of the recent episodes.
    pub fn accuracy(&self) -> Option<f64> {
        self.mean(|e| e.correct as u8 as f64)
    }

    fn mean(&self, f: impl Fn(&EpisodeStats) -> f64) -> Option<f64> {
        if self.recent.is_empty() {
            None
        } else {
            Some(self.recent.iter().map(f).sum::<f64>() / self.recent.len() as f64)
        }
    }

    /// The wrapped env.
    pub fn inner(&self) -> &E {
        &self.env
    }

    /// The wrapped env, mutably.
    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.env
    }

    /// Unwraps.
    pub fn into_inner(self) -> E {
        self.env
    }
}

impl<E: Env> Env for RecordEpisodeStatistics<E> {
    fn reset(&mut self, seed: Option<u64>, options: ResetOptions) -> Result<(Observation, Info)> {
        let out = self.env.reset(seed, options)?;
        self.ret = 0.0;
        self.length = 0;
        Ok(out)
    }

    fn step(&mut self, action: Action) -> Result<Step> {
        let mut step = self.env.step(action)?;
        self.ret += step.reward;
        self.length += 1;
        if step.terminated || step.truncated {
            let stats = EpisodeStats {
                ret: self.ret,
                length: self.length,
                stop_stage: step.obs.stage,
                cost: step.info.cost,
                correct: step.info.prediction.is_some() && step.info.prediction == step.info.label,
            };
            step.info.episode = Some(stats);
            self.episodes += 1;
            if self.recent.len() == self.buffer_length {
                self.recent.pop_front();
            }
            self.recent.push_back(stats);
        }
        Ok(step)
    }

    fn observation_space(&self) -> &ObservationSpace {
        self.env.observation_space()
    }

    fn action_space(&self) -> ActionSpace {
        self.env.action_space()
    }

    fn reward_model(&self) -> &RewardModel {
        self.env.reward_model()
    }
}
