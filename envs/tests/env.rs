//! The single env: contract checks, reward accounting (property tests),
//! misuse errors, wrappers.

mod common;

use cascade_env::checker::{check_env, CheckConfig};
use cascade_env::{
    Action, ActionMask, CostModel, Env, Error, Loss, OptimalStoppingEnv, Prediction,
    RecordEpisodeStatistics, ReplayBackend, ResetOptions, RewardSpec, StageBackend,
    SyntheticTraceConfig,
};
use proptest::prelude::*;

fn all_specs(alpha: f64) -> Vec<RewardSpec> {
    let mut v = Vec::new();
    for loss in [Loss::ZeroOne, Loss::CrossEntropy] {
        for cost in [CostModel::Cumulative, CostModel::Exit] {
            for prediction in [Prediction::Argmax, Prediction::Sample] {
                v.push(RewardSpec {
                    alpha,
                    loss,
                    cost,
                    prediction,
                });
            }
        }
    }
    v
}

#[test]
fn checker_passes_on_replay_for_every_spec() {
    for spec in all_specs(0.3) {
        let mut env = OptimalStoppingEnv::new(common::small(1), spec).unwrap();
        let report = check_env(&mut env, &CheckConfig::default())
            .unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        assert_eq!(report.episodes, 30);
        // Every stage gets stopped at, and some episodes reach the end.
        assert!(report.stop_counts.iter().all(|&c| c > 0), "{report:?}");
        // Wrapped envs must pass too.
        let mut wrapped =
            RecordEpisodeStatistics::new(OptimalStoppingEnv::new(common::small(1), spec).unwrap());
        check_env(&mut wrapped, &CheckConfig::default()).unwrap();
    }
}

#[test]
fn checker_passes_on_single_stage_and_default_synthetic() {
    let one = ReplayBackend::synthetic(&SyntheticTraceConfig {
        feature_dims: vec![3],
        stage_costs: vec![5.0],
        num_samples: 10,
        ..Default::default()
    })
    .unwrap();
    let mut env = OptimalStoppingEnv::new(one, RewardSpec::default()).unwrap();
    let r = check_env(&mut env, &CheckConfig::default()).unwrap();
    assert_eq!(r.stop_counts, vec![30]);
    assert_eq!(r.steps, 30);
    let def = ReplayBackend::synthetic(&SyntheticTraceConfig::default()).unwrap();
    let mut env = OptimalStoppingEnv::new(def, RewardSpec::default()).unwrap();
    check_env(&mut env, &CheckConfig::default()).unwrap();
}

#[test]
fn misuse_gives_typed_errors_and_leaves_state_unchanged() {
    let mut env = OptimalStoppingEnv::new(common::small(2), RewardSpec::default()).unwrap();
    let e = env.step(Action::Forward).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotReset {
                after_failure: false
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("before reset"), "{e}");

    let (o0, info) = env.reset(Some(3), ResetOptions::default()).unwrap();
    assert_eq!(info.action_mask, ActionMask::at_stage(0, 3));
    env.step(Action::Forward).unwrap();
    let s2 = env.step(Action::Forward).unwrap();
    assert_eq!(s2.obs.stage, 2);
    assert_eq!(s2.info.action_mask.to_array(), [true, false]);
    let e = env.step(Action::Forward).unwrap_err();
    match &e {
        Error::IllegalAction {
            action,
            stage,
            num_stages,
            env,
        } => {
            assert_eq!(
                (*action, *stage, *num_stages, *env),
                (Action::Forward, 2, 3, None)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("only Stop is legal"), "{e}");
    // Refused, not clamped: the episode is still at the last stage.
    assert_eq!(env.action_mask(), ActionMask::at_stage(2, 3));
    let stop = env.step(Action::Stop).unwrap();
    assert!(stop.terminated && !stop.truncated);
    assert_eq!(stop.obs, s2.obs);
    assert_eq!(stop.info.action_mask, ActionMask::NONE);
    let e = env.step(Action::Stop).unwrap_err();
    assert!(matches!(e, Error::EpisodeOver { stage: 2 }), "{e:?}");
    assert!(e.to_string().contains("terminated"), "{e}");
    // Reset with the same seed replays the same start.
    let (again, _) = env.reset(Some(3), ResetOptions::default()).unwrap();
    assert_eq!(again, o0);
}

#[test]
fn reset_options_pick_the_sample_and_refuse_out_of_range() {
    let backend = common::small(4);
    let want_label = backend.label(17);
    let want_probs = backend.stage_probs(0)[17 * 5..18 * 5].to_vec();
    let mut env = OptimalStoppingEnv::new(backend, RewardSpec::default()).unwrap();
    let (obs, info) = env.reset(None, ResetOptions::sample(17)).unwrap();
    assert_eq!(info.sample, 17);
    assert_eq!(obs.probs, want_probs);
    let stop = env.step(Action::Stop).unwrap();
    assert_eq!(stop.info.label, Some(want_label));
    let e = env.reset(None, ResetOptions::sample(64)).unwrap_err();
    assert!(e.to_string().contains("sample 64 out of range"), "{e}");
}

#[test]
fn unseeded_env_is_reproducible_and_seeds_differ() {
    let run = |seed: Option<u64>| {
        let mut env = OptimalStoppingEnv::new(common::small(5), RewardSpec::default()).unwrap();
        (0..10)
            .map(|j| {
                env.reset(if j == 0 { seed } else { None }, ResetOptions::default())
                    .unwrap()
                    .1
                    .sample
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(None), run(Some(0)));
    assert_ne!(run(Some(0)), run(Some(1)));
}

#[test]
fn constructor_refuses_bad_spec() {
    let e = OptimalStoppingEnv::new(common::small(0), RewardSpec::with_alpha(-1.0)).unwrap_err();
    assert!(e.to_string().contains("alpha"), "{e}");
}

#[test]
fn backend_errors_pass_through_and_wrong_sizes_are_named() {
    let mut rec = common::Recording::new(common::small(0));
    rec.fail_at = Some(1);
    let mut env = OptimalStoppingEnv::new(rec, RewardSpec::default()).unwrap();
    env.reset(Some(0), ResetOptions::default()).unwrap();
    let e = env.step(Action::Forward).unwrap_err();
    assert!(matches!(e, Error::Backend(_)), "{e:?}");
    assert!(e.to_string().contains("device lost"), "{e}");
    // The failed Forward left the episode at stage 0.
    assert_eq!(env.action_mask(), ActionMask::at_stage(0, 3));
    env.step(Action::Forward).unwrap();

    let bad = common::OnlyRunStage {
        inner: common::small(0),
        truncate_probs: true,
    };
    let mut env = OptimalStoppingEnv::new(bad, RewardSpec::default()).unwrap();
    let e = env.reset(Some(0), ResetOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "stage backend returned 4 probability values for stage index 0, expected 5"
    );
}

#[test]
fn env_runs_only_the_stages_it_needs() {
    let rec = common::Recording::new(common::small(0));
    let mut env = OptimalStoppingEnv::new(rec, RewardSpec::default()).unwrap();
    let (_, info) = env.reset(Some(9), ResetOptions::default()).unwrap();
    env.step(Action::Forward).unwrap();
    env.step(Action::Stop).unwrap();
    let calls = &env.backend().calls;
    assert_eq!(calls, &vec![(0, vec![info.sample]), (1, vec![info.sample])]);
}

#[test]
fn record_episode_statistics() {
    let env = OptimalStoppingEnv::new(common::small(6), RewardSpec::with_alpha(0.5)).unwrap();
    let mut env = RecordEpisodeStatistics::with_buffer_length(env, 2);
    assert_eq!(env.mean_return(), None);
    let mut rets = Vec::new();
    for e in 0..3u64 {
        env.reset(Some(e), ResetOptions::default()).unwrap();
        let forwards = e as usize; // episode e stops at stage e
        for _ in 0..forwards {
            let s = env.step(Action::Forward).unwrap();
            assert!(s.info.episode.is_none());
        }
        let s = env.step(Action::Stop).unwrap();
        let ep = s.info.episode.unwrap();
        assert_eq!(ep.length, forwards + 1);
        assert_eq!(ep.stop_stage, forwards);
        assert_eq!(ep.ret, s.reward);
        assert_eq!(ep.correct, s.info.prediction == s.info.label);
        assert_eq!(ep.cost, s.info.cost);
        rets.push(ep.ret);
    }
    assert_eq!(env.episode_count(), 3);
    assert_eq!(env.recent().len(), 2);
    assert_eq!(env.mean_return(), Some((rets[1] + rets[2]) / 2.0));
    assert_eq!(env.mean_length(), Some(2.5));
}

fn spec_strategy() -> impl Strategy<Value = RewardSpec> {
    (
        0.0f64..5.0,
        prop::bool::ANY,
        prop::bool::ANY,
        prop::bool::ANY,
    )
        .prop_map(|(alpha, ce, exit, sample)| RewardSpec {
            alpha,
            loss: if ce {
                Loss::CrossEntropy
            } else {
                Loss::ZeroOne
            },
            cost: if exit {
                CostModel::Exit
            } else {
                CostModel::Cumulative
            },
            prediction: if sample {
                Prediction::Sample
            } else {
                Prediction::Argmax
            },
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For any action sequence, the return is -L(yhat, y) - alpha*Cost(k),
    /// computed here from the trace and raw costs; the length never exceeds K.
    #[test]
    fn return_is_minus_loss_minus_alpha_cost(
        spec in spec_strategy(),
        costs in prop::collection::vec(0.01f64..100.0, 1..5),
        forwards in prop::collection::vec(prop::bool::ANY, 0..8),
        seed in any::<u64>(),
        data_seed in 0u64..4,
    ) {
        let k = costs.len();
        let backend = ReplayBackend::synthetic(&SyntheticTraceConfig {
            num_samples: 16,
            num_classes: 4,
            feature_dims: vec![2; k],
            stage_costs: costs.clone(),
            hopeless_fraction: 0.2,
            seed: data_seed,
        }).unwrap();
        let trace = backend.clone();
        let mut env = OptimalStoppingEnv::new(backend, spec).unwrap();
        let (mut obs, info) = env.reset(Some(seed), ResetOptions::default()).unwrap();
        let sample = info.sample;
        let mut ret = 0.0;
        let mut len = 0;
        let mut j = 0;
        let last = loop {
            let fwd = forwards.get(j).copied().unwrap_or(false) && obs.stage + 1 < k;
            j += 1;
            let s = env.step(if fwd { Action::Forward } else { Action::Stop }).unwrap();
            len += 1;
            ret += s.reward;
            prop_assert!(len <= k);
            if s.terminated { break s; }
            prop_assert_eq!(s.reward, 0.0);
            obs = s.obs;
        };
        let stop = last.obs.stage;
        // The stop stage is the first "no" in `forwards` (or K-1).
        let want_stop = forwards.iter().take(k - 1).take_while(|&&f| f).count();
        prop_assert_eq!(stop, want_stop);
        let max = costs.iter().cloned().fold(0.0, f64::max);
        let cost = match spec.cost {
            CostModel::Cumulative => costs[..=stop].iter().sum::<f64>() / max,
            CostModel::Exit => costs[stop] / max,
        };
        let label = trace.labels()[sample];
        prop_assert_eq!(last.info.label, Some(label));
        let pred = last.info.prediction.unwrap();
        let probs = &trace.stage_probs(stop)[sample * 4..(sample + 1) * 4];
        let loss = match spec.loss {
            Loss::ZeroOne => if pred == label { 0.0 } else { 1.0 },
            Loss::CrossEntropy => -(probs[label as usize] as f64).max(1e-12).ln(),
        };
        if spec.prediction == Prediction::Argmax {
            let best = probs.iter().cloned().fold(f32::MIN, f32::max);
            prop_assert_eq!(probs[pred as usize], best);
        }
        let want = -loss - spec.alpha * cost;
        prop_assert!((ret - want).abs() <= 1e-12 * want.abs().max(1.0), "ret {} want {}", ret, want);
        prop_assert!((last.info.cost - cost).abs() <= 1e-12 * cost);
        prop_assert!((last.obs.cost_so_far as f64 - cost).abs() <= 1e-6 * cost);
        prop_assert_eq!(last.info.loss, Some(loss));
        // And the episode cannot go on.
        let over = matches!(env.step(Action::Stop), Err(Error::EpisodeOver { .. }));
        prop_assert!(over);
    }
}
