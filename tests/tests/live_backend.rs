//! The live candle backend against the env contract, and against a replay
//! of its own recorded outputs. One small cascade (`synthetic-3`) is
//! pretrained once for the whole file.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use cascade_env::checker::{check_env, check_vec_env, CheckConfig, VecCheckConfig};
use cascade_env::{
    Action, AutoReset, OptimalStoppingEnv, ReplayBackend, RewardSpec, StageBackend, VecEnv,
};
use cascade_rl::backend::CandleBackend;
use cascade_rl::cascade::Cascade;
use cascade_rl::data::{SplitConfig, Splits, SyntheticConfig};
use cascade_rl::presets::Preset;
use cascade_rl::train::{pretrain, PretrainOptions};

fn split_config() -> SplitConfig {
    SplitConfig {
        synthetic: SyntheticConfig {
            n_train: 2000,
            n_test: 400,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Pretrains `synthetic-3` once (a few epochs) and returns its folder.
fn cascade_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cascade-live-{}", std::process::id()));
        let preset = Preset::by_name("synthetic-3").unwrap();
        let mut opts = PretrainOptions::new(&dir);
        opts.epochs = Some(3);
        opts.split = split_config();
        pretrain(&preset, &opts).unwrap();
        dir
    })
}

fn live(split: &str) -> CandleBackend {
    let cascade = Cascade::load(cascade_dir(), &Device::Cpu, Some("synthetic-3"), None).unwrap();
    let splits = Splits::load("synthetic", None, &split_config()).unwrap();
    let ds = if split == "val" {
        &splits.val
    } else {
        &splits.test
    };
    // A small batch so that chunking is exercised.
    CandleBackend::new(&cascade, ds, 37).unwrap()
}

#[test]
fn live_backend_passes_the_env_checker() {
    let spec = RewardSpec {
        alpha: 0.3,
        ..Default::default()
    };
    let mut env = OptimalStoppingEnv::new(live("test"), spec).unwrap();
    let report = check_env(&mut env, &CheckConfig::default()).unwrap();
    assert!(report.stop_counts.iter().all(|&c| c > 0), "{report:?}");
    let mut backend = live("test");
    let cfg = VecCheckConfig {
        tolerance: 1e-5,
        ..Default::default()
    };
    check_vec_env(&mut backend, spec, &cfg).unwrap();
}

#[test]
fn replay_and_live_agree_on_observations_and_rewards() {
    let mut backend = live("val");
    let trace = backend.record_trace("val").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("val.safetensors");
    trace.save(&path).unwrap();
    let replay = ReplayBackend::load(&path).unwrap();
    assert_eq!(replay.stage_costs(), backend.stage_costs());

    let spec = RewardSpec {
        alpha: 0.2,
        ..Default::default()
    };
    let mut a = OptimalStoppingEnv::new(live("val"), spec).unwrap();
    let mut b = OptimalStoppingEnv::new(replay, spec).unwrap();
    for episode in 0..40u64 {
        let (oa, _) = a.reset(Some(episode), Default::default()).unwrap();
        let (ob, _) = b.reset(Some(episode), Default::default()).unwrap();
        assert_eq!(oa.stage, ob.stage);
        // Forward a number of times that depends on the episode, then stop.
        let forwards = (episode % 3) as usize;
        for step in 0..=forwards {
            let action = if step == forwards {
                Action::Stop
            } else {
                Action::Forward
            };
            let sa = a.step(action).unwrap();
            let sb = b.step(action).unwrap();
            assert_eq!(sa.obs.stage, sb.obs.stage);
            for (x, y) in sa.obs.probs.iter().zip(&sb.obs.probs) {
                assert!((x - y).abs() < 1e-5, "probs differ: {x} vs {y}");
            }
            for (x, y) in sa.obs.features.iter().zip(&sb.obs.features) {
                assert!(
                    (x - y).abs() < 1e-4 * (1.0 + x.abs()),
                    "features differ: {x} vs {y}"
                );
            }
            assert_eq!(sa.reward, sb.reward, "episode {episode}");
            assert_eq!(sa.terminated, sb.terminated);
        }
    }
}

#[test]
fn stages_run_only_for_samples_that_went_forward() {
    let backend = live("test");
    let n = backend.num_samples();
    let mut env = VecEnv::new(backend, RewardSpec::default(), 64, AutoReset::Disabled).unwrap();
    let samples: Vec<usize> = (0..n).collect();
    // Stop the even samples at stage 1, send the odd ones to the end.
    let eval = env
        .evaluate(&samples, 0, |obs, actions| {
            for (i, a) in actions.iter_mut().enumerate() {
                let last = obs.stage()[i] as usize + 1 == obs.num_stages();
                *a = if last || i % 2 == 0 {
                    Action::Stop
                } else {
                    Action::Forward
                };
            }
            Ok(())
        })
        .unwrap();
    let runs = env.backend().stage_runs().to_vec();
    let reached = |t: usize| eval.outcomes.iter().filter(|o| o.stop_stage >= t).count() as u64;
    assert_eq!(runs[0], n as u64, "stage 1 runs on every sample");
    assert_eq!(
        runs[1],
        reached(1),
        "stage 2 runs on the forwarded samples only"
    );
    assert_eq!(
        runs[2],
        reached(2),
        "stage 3 runs on the forwarded samples only"
    );
    assert!(runs[1] > 0 && runs[1] < n as u64, "{runs:?}");
}

#[test]
fn non_finite_stage_outputs_are_refused_naming_stage_and_cascade() {
    let cascade = Cascade::load(cascade_dir(), &Device::Cpu, Some("synthetic-3"), None).unwrap();
    let vars = cascade.stages()[1].model.named_vars().unwrap();
    let (_, var) = vars
        .iter()
        .find(|(name, _)| name.ends_with("weight"))
        .unwrap();
    let nan = candle_core::Tensor::full(f32::NAN, var.dims(), &Device::Cpu).unwrap();
    var.set(&nan).unwrap();
    let splits = Splits::load("synthetic", None, &split_config()).unwrap();
    let mut backend = CandleBackend::new(&cascade, &splits.val, 37).unwrap();
    assert!(backend.run_stage(0, &[0, 1, 2]).is_ok());
    let err = backend.run_stage(1, &[0, 1, 2]).unwrap_err().to_string();
    assert!(
        err.contains("stage 2")
            && err.contains("must be finite")
            && err.contains(&cascade_dir().display().to_string()),
        "{err}"
    );
}
