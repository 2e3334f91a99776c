//! The label-aware `oracle-alpha` curve, computed on a recorded trace and
//! summarised into the evaluator's own report.

use cascade_agents::{ActMode, EvalReport, ReportContext};
use cascade_env::reward::argmax;
use cascade_env::{Evaluation, Prediction, ReplayBackend, RewardSpec, SampleOutcome, StageBackend};

use crate::error::Result;

/// The label-aware optimum at `spec.alpha` on a recorded split: every
/// sample stops at the stage with the highest expected reward
/// `-L - alpha * Cost(k)` knowing its label (earliest on ties;
/// [`ReplayBackend::oracle`]). No stopping policy over the same
/// classifiers gets a higher mean reward at that alpha, so the points over
/// a range of alphas trace the bound of the error-cost plane.
///
/// Error counts a wrong argmax at the chosen stage (with sampled
/// predictions, the expected 0-1 loss `1 - p_k(y)`). The report is named
/// `oracle-alpha`, split `split`; the policy costs nothing.
pub fn oracle_at(trace: &ReplayBackend, spec: &RewardSpec, split: &str) -> Result<EvalReport> {
    let start = std::time::Instant::now();
    let stops = trace.oracle(spec)?;
    let model = spec.compile(trace.stage_costs())?;
    let k = trace.num_stages();
    let c = trace.num_classes();
    let mut outcomes = Vec::with_capacity(stops.len());
    let mut expected_errors = Vec::with_capacity(stops.len());
    for (i, s) in stops.iter().enumerate() {
        let t = s.stage;
        let label = trace.labels()[i];
        let probs = &trace.stage_probs(t)[i * c..(i + 1) * c];
        let prediction = argmax(probs);
        expected_errors.push(1.0 - probs[label as usize] as f64);
        let cost = model.cost(t);
        outcomes.push(SampleOutcome {
            sample: i,
            stop_stage: t,
            prediction,
            label,
            loss: -s.reward - spec.alpha * cost,
            cost,
            raw_cost: model.raw_cost(t),
            reward: s.reward,
        });
    }
    let ev = Evaluation::from_outcomes(outcomes, k);
    Ok(EvalReport::from_evaluation(
        &ev,
        ReportContext {
            agent: "oracle-alpha".into(),
            kind: "oracle".into(),
            params: serde_json::json!({ "alpha": spec.alpha }),
            split: split.into(),
            spec: *spec,
            mode: ActMode::Greedy,
            seed: 0,
            num_classes: c,
            policy_cost_counted: false,
            stage_costs: trace.stage_costs().to_vec(),
            policy_macs: vec![0.0; k],
            classifier_costs: (0..k).map(|t| model.cost(t)).collect(),
            cost_normaliser: model.normaliser(),
            mean_stop_prob: vec![None; k],
            expected_errors: (spec.prediction == Prediction::Sample).then_some(expected_errors),
            wall_seconds: start.elapsed().as_secs_f64(),
        },
    ))
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
        let s = oracle_at(&t, &RewardSpec::with_alpha(0.1), "test").unwrap();
        // Sample 2 forwards (fixing it costs 0.1 * 4/3 < 1); 3 stops at 1.
        assert_eq!(s.exit_fraction, vec![2.0 / 3.0, 1.0 / 3.0]);
        assert!((s.error - 1.0 / 3.0).abs() < 1e-12);
        let want_cost = 100.0 * (1.0 / 3.0 + 4.0 / 3.0 + 1.0 / 3.0) / 3.0;
        assert!(
            (s.cost_pct_mean - want_cost).abs() < 1e-9,
            "{}",
            s.cost_pct_mean
        );
        assert_eq!(s.classifier_cost_pct_mean, s.cost_pct_mean);
        assert_eq!(s.policy_cost_pct_mean, 0.0);
        assert_eq!(s.exits_per_class, vec![vec![2, 0], vec![0, 1]]);
        assert_eq!(s.exit_accuracy, vec![Some(0.5), Some(1.0)]);
        // At alpha 1.5, forwarding costs 1.5 * 1, more than the error it fixes.
        let s = oracle_at(&t, &RewardSpec::with_alpha(1.5), "test").unwrap();
        assert_eq!(s.exit_fraction, vec![1.0, 0.0]);
        assert!((s.error - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn sampled_predictions_count_the_expected_error() {
        let t = trace();
        let spec = RewardSpec {
            prediction: Prediction::Sample,
            ..RewardSpec::with_alpha(1.5)
        };
        let s = oracle_at(&t, &spec, "test").unwrap();
        // Everyone stops at stage 1, where p(y) is 0.9, 0.2, 0.3.
        assert_eq!(s.exit_fraction, vec![1.0, 0.0]);
        let want = (0.1 + 0.8 + 0.7) / 3.0;
        assert!((s.error - want).abs() < 1e-6, "{}", s.error);
        assert!((s.exit_accuracy[0].unwrap() - (1.0 - want)).abs() < 1e-6);
    }
}
