//! The vector env: equivalence with single envs, layout, batching of stage
//! calls, autoreset modes, evaluation.

mod common;

use cascade_env::checker::{check_vec_env, VecCheckConfig};
use cascade_env::{
    Action, AutoReset, BatchObservation, CostModel, Error, Loss, Prediction, ReplayBackend,
    RewardSpec, StageBackend, SyntheticTraceConfig, VecEnv,
};
use proptest::prelude::*;

const MODES: [AutoReset; 3] = [
    AutoReset::Disabled,
    AutoReset::NextStep,
    AutoReset::SameStep,
];

fn threshold(obs: &BatchObservation, actions: &mut [Action]) {
    let k = obs.num_stages() as u32;
    for (i, a) in actions.iter_mut().enumerate() {
        let p = obs.probs_of(i).iter().cloned().fold(0.0, f32::max);
        *a = if p > 0.9 || obs.stage()[i] + 1 == k {
            Action::Stop
        } else {
            Action::Forward
        };
    }
}

#[test]
fn vec_env_equals_single_envs_in_every_mode() {
    for mode in MODES {
        for prediction in [Prediction::Argmax, Prediction::Sample] {
            let spec = RewardSpec {
                alpha: 0.2,
                prediction,
                loss: Loss::CrossEntropy,
                cost: CostModel::Exit,
            };
            let mut b = common::small(3);
            let cfg = VecCheckConfig {
                num_envs: 7,
                autoreset: mode,
                steps: 30,
                seed: 11,
                tolerance: 0.0,
            };
            check_vec_env(&mut b, spec, &cfg).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        }
    }
}

#[test]
fn default_run_stage_into_path_matches_too() {
    let mut b = common::OnlyRunStage {
        inner: common::small(8),
        truncate_probs: false,
    };
    check_vec_env(&mut b, RewardSpec::default(), &VecCheckConfig::default()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn vec_equals_single_for_random_sizes_and_seeds(
        n in 1usize..12,
        seed in any::<u64>(),
        mode in 0usize..3,
        sample in prop::bool::ANY,
    ) {
        let spec = RewardSpec {
            prediction: if sample { Prediction::Sample } else { Prediction::Argmax },
            ..Default::default()
        };
        let mut b = common::small(seed % 5);
        let cfg = VecCheckConfig { num_envs: n, autoreset: MODES[mode], steps: 12, seed, tolerance: 0.0 };
        let r = check_vec_env(&mut b, spec, &cfg);
        prop_assert!(r.is_ok(), "{:?}", r);
    }
}

#[test]
fn one_stage_call_per_stage_per_step_with_exactly_the_envs_that_need_it() {
    let rec = common::Recording::new(common::small(2));
    let mut venv = VecEnv::new(rec, RewardSpec::default(), 6, AutoReset::SameStep).unwrap();
    venv.reset(Some(0)).unwrap();
    let samples0 = venv.info().sample().to_vec();
    assert_eq!(venv.backend().calls, vec![(0, samples0.clone())]);
    venv.backend_mut().calls.clear();
    use Action::{Forward as F, Stop as S};
    // Envs 0, 2, 3 forward to stage 1; 1, 4, 5 stop and restart at stage 0.
    let step = venv.step(&[F, S, F, F, S, S]).unwrap();
    assert_eq!(step.terminated, &[false, true, false, false, true, true]);
    let new = step.info.sample().to_vec();
    let calls = venv.backend().calls.clone();
    assert_eq!(
        calls,
        vec![
            (0, vec![new[1], new[4], new[5]]),
            (1, vec![samples0[0], samples0[2], samples0[3]]),
        ]
    );
    let obs = venv.obs();
    assert_eq!(obs.stage(), &[1, 0, 1, 1, 0, 0]);
    assert_eq!(obs.envs_at_stage(0), &[1, 4, 5]);
    assert_eq!(obs.envs_at_stage(1), &[0, 2, 3]);
    assert!(obs.envs_at_stage(2).is_empty());
    // An all-Stop step under Disabled runs no stage at all.
    let rec = common::Recording::new(common::small(2));
    let mut venv = VecEnv::new(rec, RewardSpec::default(), 3, AutoReset::Disabled).unwrap();
    venv.reset(Some(0)).unwrap();
    venv.backend_mut().calls.clear();
    venv.step(&[S, S, S]).unwrap();
    assert!(venv.backend().calls.is_empty());
    assert!(venv.all_done());
    // Stepping a finished batch is a no-op.
    let step = venv.step(&[F, F, F]).unwrap();
    assert_eq!(step.rewards, &[0.0; 3]);
    assert!(venv.backend().calls.is_empty());
}

#[test]
fn layout_rows_match_the_trace_and_keep_history() {
    let trace = common::small(4);
    let mut venv =
        VecEnv::new(trace.clone(), RewardSpec::default(), 4, AutoReset::Disabled).unwrap();
    venv.reset_with_samples(Some(0), &[10, 11, 12, 13]).unwrap();
    use Action::{Forward as F, Stop as S};
    venv.step(&[F, F, S, F]).unwrap();
    venv.step(&[F, S, S, S]).unwrap();
    let obs = venv.obs();
    assert_eq!(obs.stage(), &[2, 1, 0, 1]);
    assert_eq!(venv.info().done(), &[false, true, true, true]);
    // Done envs are not listed per stage.
    assert_eq!(obs.envs_at_stage(2), &[0]);
    assert!(obs.envs_at_stage(1).is_empty());
    let dims = trace.feature_dims().to_vec();
    for (i, s) in [10usize, 11, 12, 13].into_iter().enumerate() {
        let t = obs.stage()[i] as usize;
        let d = dims[t];
        assert_eq!(
            obs.features(i),
            &trace.stage_features(t)[s * d..(s + 1) * d]
        );
        assert_eq!(obs.probs_of(i), &trace.stage_probs(t)[s * 5..(s + 1) * 5]);
        // History: the rows of earlier stages hold this episode's features.
        for (h, &d) in dims.iter().enumerate().take(t + 1) {
            assert_eq!(
                &obs.stage_features(h)[i * d..(i + 1) * d],
                &trace.stage_features(h)[s * d..(s + 1) * d]
            );
        }
    }
    assert_eq!(obs.cost_so_far()[0], ((1.0f64 + 3.0 + 9.0) / 9.0) as f32);
    // Gather packs the rows of the live envs at a stage.
    let mut buf = Vec::new();
    obs.gather_features(2, &mut buf);
    assert_eq!(buf, &trace.stage_features(2)[10 * 4..11 * 4]);
    obs.gather_features(0, &mut buf);
    assert!(buf.is_empty());
    // Outcomes of the terminated envs.
    let info = venv.info();
    assert_eq!(info.final_sample()[1], 11);
    assert_eq!(info.stop_stage()[1], 1);
    assert_eq!(info.label()[1], trace.labels()[11]);
    // reset_done restarts exactly the done envs.
    let step = venv.reset_done().unwrap();
    assert_eq!(step.obs.stage(), &[2, 0, 0, 0]);
    assert_eq!(step.info.done(), &[false; 4]);
    assert_eq!(step.info.sample()[0], 10);
}

#[test]
fn next_step_mode_ignores_actions_of_done_envs_and_restarts_them() {
    let mut venv = VecEnv::new(
        common::small(1),
        RewardSpec::default(),
        2,
        AutoReset::NextStep,
    )
    .unwrap();
    venv.reset(Some(5)).unwrap();
    use Action::{Forward as F, Stop as S};
    let step = venv.step(&[S, F]).unwrap();
    assert_eq!(step.terminated, &[true, false]);
    assert_eq!(step.info.done(), &[true, false]);
    let r0 = step.rewards[0];
    assert!(r0 < 0.0);
    // Env 0's Forward is ignored (it would be fine anyway); it restarts.
    let step = venv.step(&[F, S]).unwrap();
    assert_eq!(step.terminated, &[false, true]);
    assert_eq!(step.rewards[0], 0.0);
    assert_eq!(step.obs.stage()[0], 0);
    assert_eq!(step.info.done(), &[false, true]);
}

#[test]
fn illegal_actions_and_misuse_are_refused_before_any_change() {
    let rec = common::Recording::new(common::small(1));
    let mut venv = VecEnv::new(rec, RewardSpec::default(), 3, AutoReset::SameStep).unwrap();
    let e = venv.step(&[Action::Stop; 3]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotReset {
                after_failure: false
            }
        ),
        "{e:?}"
    );
    venv.reset(Some(0)).unwrap();
    let e = venv.step(&[Action::Stop; 2]).unwrap_err();
    assert!(e.to_string().contains("2 actions for 3 sub-envs"), "{e}");
    use Action::{Forward as F, Stop as S};
    venv.step(&[F, F, S]).unwrap();
    venv.step(&[F, F, S]).unwrap();
    let before: Vec<_> = (0..3).map(|i| venv.obs().to_observation(i)).collect();
    let calls = venv.backend().calls.len();
    let e = venv.step(&[S, F, S]).unwrap_err();
    match e {
        Error::IllegalAction { env, stage, .. } => assert_eq!((env, stage), (Some(1), 2)),
        other => panic!("{other:?}"),
    }
    let after: Vec<_> = (0..3).map(|i| venv.obs().to_observation(i)).collect();
    assert_eq!(before, after);
    assert_eq!(venv.backend().calls.len(), calls);
    venv.step(&[S, S, S]).unwrap();
    // A backend failure voids the state until the next reset.
    venv.backend_mut().fail_at = Some(venv.backend().calls.len());
    let e = venv.step(&[S, S, S]).unwrap_err();
    assert!(matches!(e, Error::Backend(_)), "{e:?}");
    let e = venv.step(&[S, S, S]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotReset {
                after_failure: true
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("backend failed"), "{e}");
    venv.reset(None).unwrap();
    venv.step(&[S, S, S]).unwrap();
}

#[test]
fn constructor_and_reset_refuse_bad_arguments() {
    let e = VecEnv::new(
        common::small(0),
        RewardSpec::default(),
        0,
        AutoReset::SameStep,
    )
    .unwrap_err();
    assert!(e.to_string().contains("num_envs"), "{e}");
    let mut venv = VecEnv::new(
        common::small(0),
        RewardSpec::default(),
        2,
        AutoReset::SameStep,
    )
    .unwrap();
    let e = venv.reset_with_samples(None, &[1]).unwrap_err();
    assert!(e.to_string().contains("1 samples for 2 sub-envs"), "{e}");
    let e = venv.reset_with_samples(None, &[1, 64]).unwrap_err();
    assert!(e.to_string().contains("sample 64 out of range"), "{e}");
    let e = venv.reset_done().unwrap_err();
    assert!(matches!(e, Error::NotReset { .. }));
}

#[test]
fn evaluate_the_threshold_policy_on_the_synthetic_trace() {
    let trace = ReplayBackend::synthetic(&SyntheticTraceConfig {
        num_samples: 500,
        ..Default::default()
    })
    .unwrap();
    let spec = RewardSpec::default();
    let oracle = trace.oracle(&spec).unwrap();
    let mut venv = VecEnv::new(trace.clone(), spec, 64, AutoReset::SameStep).unwrap();
    let ev = venv
        .evaluate_all(0, |obs, a| {
            threshold(obs, a);
            Ok(())
        })
        .unwrap();
    assert_eq!(ev.outcomes.len(), 500);
    let mut hopeless = 0;
    for (i, o) in ev.outcomes.iter().enumerate() {
        assert_eq!(o.sample, i);
        assert_eq!(o.label, trace.labels()[i]);
        // The threshold stops at the difficulty for solvable samples, which
        // is the oracle's stop; hopeless samples run to the end (the oracle
        // stops them at stage 0).
        let solvable = o.prediction == o.label;
        if solvable {
            assert_eq!(o.stop_stage, oracle[i].stage, "sample {i}");
            assert!((o.reward - oracle[i].reward).abs() < 1e-12);
        } else {
            hopeless += 1;
            assert_eq!((o.stop_stage, oracle[i].stage), (2, 0), "sample {i}");
        }
    }
    assert!((ev.error_rate - hopeless as f64 / 500.0).abs() < 1e-12);
    assert!((30..80).contains(&hopeless), "{hopeless}");
    let mean: f64 = ev.outcomes.iter().map(|o| o.reward).sum::<f64>() / 500.0;
    assert!((ev.mean_return - mean).abs() < 1e-12);
    assert!((ev.stop_fraction.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    // The env needs a reset after evaluation.
    assert!(matches!(
        venv.step(&[Action::Stop; 64]),
        Err(Error::NotReset { .. })
    ));
}

#[test]
fn evaluation_does_not_depend_on_batch_size_or_order() {
    let spec = RewardSpec {
        prediction: Prediction::Sample,
        ..Default::default()
    };
    let samples: Vec<usize> = (0..64).rev().collect();
    let run = |n: usize, samples: &[usize]| {
        let mut venv = VecEnv::new(common::small(7), spec, n, AutoReset::NextStep).unwrap();
        venv.evaluate(samples, 3, |obs, a| {
            threshold(obs, a);
            Ok(())
        })
        .unwrap()
    };
    let a = run(1, &samples);
    let b = run(5, &samples);
    let c = run(100, &samples);
    assert_eq!(a, b);
    assert_eq!(a, c);
    let mut fwd: Vec<usize> = samples.clone();
    fwd.reverse();
    let d = run(5, &fwd);
    for o in &d.outcomes {
        assert_eq!(Some(o), a.outcomes.iter().find(|x| x.sample == o.sample));
    }
    // A different seed changes some sampled predictions.
    let mut venv = VecEnv::new(common::small(7), spec, 5, AutoReset::NextStep).unwrap();
    let e = venv
        .evaluate(&samples, 4, |obs, a| {
            threshold(obs, a);
            Ok(())
        })
        .unwrap();
    assert_ne!(e.outcomes, a.outcomes);
}

#[test]
fn evaluate_passes_policy_errors_and_illegal_policies_fail() {
    let mut venv = VecEnv::new(
        common::small(0),
        RewardSpec::default(),
        4,
        AutoReset::SameStep,
    )
    .unwrap();
    let e = venv
        .evaluate_all(0, |_, _| Err(Error::policy("policy exploded")))
        .unwrap_err();
    assert_eq!(e.to_string(), "policy failed: policy exploded");
    let e = venv
        .evaluate_all(0, |_, a| {
            a.fill(Action::Forward);
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(e, Error::IllegalAction { .. }), "{e:?}");
    assert_eq!(venv.autoreset(), AutoReset::SameStep);
}

#[test]
fn reset_envs_restarts_exactly_the_masked_envs_like_single_envs() {
    use cascade_env::{OptimalStoppingEnv, ResetOptions};
    let trace = common::small(2);
    let mut venv =
        VecEnv::new(trace.clone(), RewardSpec::default(), 3, AutoReset::Disabled).unwrap();
    let e = venv.reset_envs(&[true; 3], None).unwrap_err();
    assert!(matches!(e, Error::NotReset { .. }), "{e:?}");
    venv.reset(Some(0)).unwrap();
    use Action::{Forward as F, Stop as S};
    let step = venv.step(&[S, F, S]).unwrap();
    assert_eq!(step.info.done(), &[true, false, true]);
    let e = venv.reset_envs(&[true; 2], None).unwrap_err();
    assert!(e.to_string().contains("2 entries for 3 sub-envs"), "{e}");
    // Env 0 (done) and env 1 (running, abandoned) restart with seeds 7 and
    // 8; env 2 stays done.
    let step = venv.reset_envs(&[true, true, false], Some(7)).unwrap();
    assert_eq!(step.info.done(), &[false, false, true]);
    assert_eq!(step.obs.stage()[..2], [0, 0]);
    assert_eq!(step.terminated, &[false, false, true]);
    for i in 0..2 {
        let mut env = OptimalStoppingEnv::new(trace.clone(), RewardSpec::default()).unwrap();
        let (o, info) = env
            .reset(Some(7 + i as u64), ResetOptions::default())
            .unwrap();
        assert_eq!(step.obs.to_observation(i), o);
        assert_eq!(step.info.sample()[i], info.sample);
    }
}
