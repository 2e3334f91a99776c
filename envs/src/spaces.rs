//! Spaces as values, in Gymnasium's sense: they say what a valid action or
//! observation is (`contains`) and draw random ones (`sample`).

use crate::env::Observation;
use crate::reward::{Action, ActionMask};
use crate::rng::EnvRng;

/// How far a probability row's sum may be from 1.
pub const PROB_SUM_TOLERANCE: f64 = 1e-3;

/// The action space: `Discrete(2)`, `Stop` = 0, `Forward` = 1, restricted
/// by an [`ActionMask`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActionSpace;

impl ActionSpace {
    /// Number of actions (2).
    pub const N: usize = 2;

    /// Whether `action` is in the space under `mask`.
    pub fn contains(&self, action: Action, mask: ActionMask) -> bool {
        mask.allows(action)
    }

    /// A uniformly random legal action, or `None` if the mask allows none.
    pub fn sample(&self, rng: &mut EnvRng, mask: ActionMask) -> Option<Action> {
        match (mask.stop, mask.forward) {
            (true, true) => Some(if rng.next_u32() & 1 == 0 {
                Action::Stop
            } else {
                Action::Forward
            }),
            (true, false) => Some(Action::Stop),
            (false, true) => Some(Action::Forward),
            (false, false) => None,
        }
    }
}

/// The observation space of a K-stage cascade.
///
/// | field         | type     | shape   | range                              |
/// |---------------|----------|---------|------------------------------------|
/// | `stage`       | `usize`  | scalar  | `0..K`                             |
/// | `features`    | `f32`    | `[d_t]` | finite reals                       |
/// | `probs`       | `f32`    | `[C]`   | `[0, 1]`, sum 1 (within 1e-3)      |
/// | `cost_so_far` | `f32`    | scalar  | `[0, Cost(K)]`, finite             |
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationSpace {
    /// `d_t` per stage, `[K]`.
    pub feature_dims: Vec<usize>,
    /// Number of classes C.
    pub num_classes: usize,
    /// Largest `cost_so_far` (normalised `Cost(K)` under the cost model).
    pub max_cost: f64,
}

impl ObservationSpace {
    /// Number of stages K.
    pub fn num_stages(&self) -> usize {
        self.feature_dims.len()
    }

    /// Why `obs` is not in the space, or `None` if it is.
    pub fn violation(&self, obs: &Observation) -> Option<String> {
        let k = self.num_stages();
        if obs.stage >= k {
            return Some(format!("stage {} not in 0..{k}", obs.stage));
        }
        let d = self.feature_dims[obs.stage];
        if obs.features.len() != d {
            return Some(format!(
                "stage index {} has {} features, expected {d}",
                obs.stage,
                obs.features.len()
            ));
        }
        if let Some(j) = obs.features.iter().position(|x| !x.is_finite()) {
            return Some(format!("feature {j} is {}", obs.features[j]));
        }
        if obs.probs.len() != self.num_classes {
            return Some(format!(
                "{} probabilities, expected {}",
                obs.probs.len(),
                self.num_classes
            ));
        }
        if let Some(j) = obs
            .probs
            .iter()
            .position(|p| !(p.is_finite() && (0.0..=1.0).contains(p)))
        {
            return Some(format!("probability {j} is {}", obs.probs[j]));
        }
        let sum: f64 = obs.probs.iter().map(|&p| p as f64).sum();
        if (sum - 1.0).abs() > PROB_SUM_TOLERANCE {
            return Some(format!("probabilities sum to {sum}, not 1"));
        }
        let c = obs.cost_so_far as f64;
        if !(c.is_finite() && c >= 0.0 && c <= self.max_cost * (1.0 + 1e-6)) {
            return Some(format!("cost_so_far {c} not in [0, {}]", self.max_cost));
        }
        None
    }

    /// Whether `obs` is in the space.
    pub fn contains(&self, obs: &Observation) -> bool {
        self.violation(obs).is_none()
    }

    /// A random observation in the space: uniform stage, standard normal
    /// features, uniform-simplex-ish probabilities, uniform cost.
    pub fn sample(&self, rng: &mut EnvRng) -> Observation {
        let stage = rng.below(self.num_stages());
        let features = (0..self.feature_dims[stage])
            .map(|_| rng.normal() as f32)
            .collect();
        // Normalised exponentials: a uniform draw from the simplex.
        let mut probs: Vec<f64> = (0..self.num_classes)
            .map(|_| -(1.0 - rng.next_f64()).ln())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        Observation {
            stage,
            features,
            probs: probs.into_iter().map(|p| p as f32).collect(),
            cost_so_far: (rng.next_f64() * self.max_cost) as f32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_contained_and_violations_named() {
        let space = ObservationSpace {
            feature_dims: vec![2, 5],
            num_classes: 3,
            max_cost: 1.25,
        };
        let mut rng = EnvRng::new(0);
        for _ in 0..100 {
            let o = space.sample(&mut rng);
            assert!(space.contains(&o), "{:?}", space.violation(&o));
        }
        let mut o = space.sample(&mut rng);
        o.probs = vec![0.5, 0.6, 0.0];
        assert!(space.violation(&o).unwrap().contains("sum"));
        o.probs = vec![0.5, 0.5, 0.0];
        o.features.push(0.0);
        assert!(space.violation(&o).unwrap().contains("features"));
        o.stage = 2;
        assert!(space.violation(&o).unwrap().contains("stage"));
    }

    #[test]
    fn action_sampling_respects_mask() {
        let mut rng = EnvRng::new(1);
        let s = ActionSpace;
        for _ in 0..50 {
            assert_eq!(
                s.sample(&mut rng, ActionMask::at_stage(2, 3)),
                Some(Action::Stop)
            );
        }
        assert_eq!(s.sample(&mut rng, ActionMask::NONE), None);
        let n_fwd = (0..1000)
            .filter(|_| s.sample(&mut rng, ActionMask::at_stage(0, 3)) == Some(Action::Forward))
            .count();
        assert!((400..600).contains(&n_fwd));
    }
}
