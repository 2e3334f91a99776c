//! Scores of one agent on one split, from the evaluator's report or, for
//! the label-aware `oracle-alpha` curve, computed on a recorded trace.

use cascade_agents::EvalReport;
use cascade_env::spec::argmax;
use cascade_env::{Prediction, ReplayBackend, RewardSpec, StageBackend};

use crate::error::Result;

/// What a results row needs from one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Samples.
    pub n: usize,
    /// Error, fraction.
    pub error: f64,
    /// Mean cost, % of the largest stage.
    pub cost_pct: f64,
    /// Spread of the cost over samples, %.
    pub cost_pct_std: f64,
    /// Classifiers' share of the cost, %.
    pub classifier_cost_pct: f64,
    /// Policy's share of the cost, %.
    pub policy_cost_pct: f64,
    /// Mean reward.
    pub mean_reward: f64,
    /// Fraction of samples stopping at each stage, `[K]`.
    pub exit_fraction: Vec<f64>,
    /// Accuracy of the samples stopping at each stage, `[K]`.
    pub exit_accuracy: Vec<Option<f64>>,
    /// Samples per true class and stop stage, `[C][K]`.
    pub exits_per_class: Vec<Vec<usize>>,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl From<&EvalReport> for Scores {
    fn from(r: &EvalReport) -> Self {
        Scores {
            n: r.n,
            error: r.error,
            cost_pct: r.cost_pct_mean,
            cost_pct_std: r.cost_pct_std,
            classifier_cost_pct: r.classifier_cost_pct_mean,
            policy_cost_pct: r.policy_cost_pct_mean,
            mean_reward: r.mean_reward,
            exit_fraction: r.exit_fraction.clone(),
            exit_accuracy: r.exit_accuracy.clone(),
            exits_per_class: r.exits_per_class.clone(),
            seconds: r.wall_seconds,
        }
    }
}

/// The label-aware optimum at `spec.alpha` on a recorded split: every
/// sample stops at the stage with the highest expected reward
/// `-L - alpha * Cost(k)` knowing its label (earliest on ties;
/// [`ReplayBackend::oracle`]). No stopping policy over the same
/// classifiers gets a higher mean reward at that alpha, so the points over
/// a range of alphas trace the bound of the error-cost plane.
///
/// Error counts a wrong argmax at the chosen stage (with sampled
/// predictions, the expected 0-1 loss `1 - p_k(y)`).
pub fn oracle_at(trace: &ReplayBackend, spec: &RewardSpec) -> Result<Scores> {
    let start = std::time::Instant::now();
    let stops = trace.oracle(spec)?;
    let model = spec.compile(trace.stage_costs())?;
    let k = trace.num_stages();
    let c = trace.num_classes();
    let n = stops.len();
    let m = n.max(1) as f64;
    let mut exits = vec![0usize; k];
    let mut right = vec![0f64; k];
    let mut per_class = vec![vec![0usize; k]; c];
    let (mut wrong, mut cost, mut reward) = (0.0, 0.0, 0.0);
    let mut costs = Vec::with_capacity(n);
    for (i, s) in stops.iter().enumerate() {
        let t = s.stage;
        let y = trace.labels()[i];
        let probs = &trace.stage_probs(t)[i * c..(i + 1) * c];
        let w = match spec.prediction {
            Prediction::Argmax => (argmax(probs) != y) as u8 as f64,
            Prediction::Sample => 1.0 - probs[y as usize] as f64,
        };
        wrong += w;
        right[t] += 1.0 - w;
        exits[t] += 1;
        if let Some(row) = per_class.get_mut(y as usize) {
            row[t] += 1;
        }
        let ct = model.cost(t);
        cost += ct;
        costs.push(ct);
        reward += s.reward;
    }
    let mean_cost = cost / m;
    let var = costs.iter().map(|x| (x - mean_cost).powi(2)).sum::<f64>() / m;
    Ok(Scores {
        n,
        error: wrong / m,
        cost_pct: 100.0 * mean_cost,
        cost_pct_std: 100.0 * var.sqrt(),
        classifier_cost_pct: 100.0 * mean_cost,
        policy_cost_pct: 0.0,
        mean_reward: reward / m,
        exit_fraction: exits.iter().map(|&e| e as f64 / m).collect(),
        exit_accuracy: exits
            .iter()
            .zip(&right)
            .map(|(&e, &r)| (e > 0).then(|| r / e as f64))
            .collect(),
        exits_per_class: per_class,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_env::{StageTrace, TraceMeta};

    /// Two stages costing 1 and 3 (normalised: 1/3 and 4/3 cumulative),
    /// two classes, three samples: right at stage 1; wrong then right;
    /// wrong at both.
    fn trace() -> ReplayBackend {
        let meta = TraceMeta {
            dataset: "t".into(),
            split: "test".into(),
            cascade: "t".into(),
            cost_unit: "MACs".into(),
            num_classes: 2,
        };
        let st = |cost: f64, probs: Vec<f32>| StageTrace {
            name: "s".into(),
            cost,
            feature_dim: 1,
            features: vec![0.0; 3],
            probs,
        };
        ReplayBackend::new(
            meta,
            vec![
                st(1.0, vec![0.9, 0.1, 0.8, 0.2, 0.3, 0.7]),
                st(3.0, vec![0.9, 0.1, 0.1, 0.9, 0.3, 0.7]),
            ],
            vec![0, 1, 0],
        )
        .unwrap()
    }

    #[test]
    fn small_alpha_fixes_what_can_be_fixed_large_alpha_stops_early() {
        let t = trace();
        let s = oracle_at(&t, &RewardSpec::with_alpha(0.1)).unwrap();
        // Sample 2 forwards (fixing it costs 0.1 * 4/3 < 1); 3 stops at 1.
        assert_eq!(s.exit_fraction, vec![2.0 / 3.0, 1.0 / 3.0]);
        assert!((s.error - 1.0 / 3.0).abs() < 1e-12);
        let want_cost = 100.0 * (1.0 / 3.0 + 4.0 / 3.0 + 1.0 / 3.0) / 3.0;
        assert!((s.cost_pct - want_cost).abs() < 1e-9, "{}", s.cost_pct);
        assert_eq!(s.exits_per_class, vec![vec![2, 0], vec![0, 1]]);
        assert_eq!(s.exit_accuracy, vec![Some(0.5), Some(1.0)]);
        // At alpha 1.5, forwarding costs 1.5 * 1, more than the error it fixes.
        let s = oracle_at(&t, &RewardSpec::with_alpha(1.5)).unwrap();
        assert_eq!(s.exit_fraction, vec![1.0, 0.0]);
        assert!((s.error - 2.0 / 3.0).abs() < 1e-12);
    }
}
