//! GPU check of joint training (`--features cuda`, run with `--ignored`):
//! the classifiers and the policy live on the GPU, decisions and rewards
//! on the CPU. A tiny cascade is pretrained on the CPU, loaded onto the
//! GPU and trained jointly; the saved agent, reloaded on the CPU, must
//! give the validation numbers the GPU run reported.
#![cfg(feature = "cuda")]

use candle_core::Device;
use cascade_agents::{
    evaluate, load_agent, EvalConfig, JointConfig, JointSplits, ReinforceAgent, ReinforceConfig,
    TrainOptions,
};
use cascade_env::RewardSpec;
use cascade_rl::backend::CandleBackend;
use cascade_rl::cascade::Cascade;
use cascade_rl::data::{SplitConfig, Splits, SyntheticConfig};
use cascade_rl::presets::{Preset, StagePreset};
use cascade_rl::train::{pretrain, OptimizerConfig, PretrainOptions, TrainConfig};

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_joint_training_on_cuda() {
    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("cascade");
    let recipe = TrainConfig {
        epochs: 1,
        batch_size: 64,
        optimizer: OptimizerConfig::adamw(3e-3, 0.0),
        ..Default::default()
    };
    let preset = Preset {
        name: "tiny-2".into(),
        dataset: "synthetic".into(),
        description: "two-stage test cascade on synthetic data".into(),
        val_fraction: 0.25,
        stages: vec![
            StagePreset {
                model: "cnn-8-16-fc32".parse().unwrap(),
                train: recipe.clone(),
            },
            StagePreset {
                model: "resnet-8-w0.25".parse().unwrap(),
                train: recipe,
            },
        ],
    };
    let split = SplitConfig {
        val_fraction: 0.25,
        synthetic: SyntheticConfig {
            n_train: 1600,
            n_test: 400,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut popts = PretrainOptions::new(&cdir);
    popts.split = split;
    pretrain(&preset, &popts).unwrap();
    let splits = Splits::load("synthetic", None, &split).unwrap();

    let gpu = Device::new_cuda(0).unwrap();
    let cascade = Cascade::load(&cdir, &gpu, None, None).unwrap();
    let opts = TrainOptions {
        spec: RewardSpec::with_alpha(0.05),
        seed: 1,
        quiet: true,
        ..Default::default()
    };
    let mut agent = ReinforceAgent::new(
        ReinforceConfig {
            epochs: 3,
            patience: 0,
            ..ReinforceConfig::mlp()
        },
        &cascade.feature_dims(),
        cascade.num_classes(),
    )
    .unwrap();
    let s = agent
        .train_joint(
            cascade,
            JointSplits {
                classifier_train: &splits.train,
                policy_train: &splits.train,
                val: &splits.val,
            },
            &JointConfig::default(),
            &opts,
        )
        .unwrap();
    assert_eq!(s.epochs_run, 3);
    assert!(s.history.iter().all(|h| h.policy_loss.is_finite()));
    assert!(agent.policy().device().is_cuda());

    // Reloaded on the CPU: the same validation numbers, up to float
    // differences between the devices.
    let adir = dir.path().join("agent");
    agent.save(&adir).unwrap();
    let back = load_agent(&adir).unwrap();
    let tuned = Cascade::load(&adir.join("cascade"), &Device::Cpu, None, None).unwrap();
    let mut vb = CandleBackend::new(&tuned, &splits.val, 256).unwrap();
    let r = evaluate(&*back, &mut vb, &opts.spec, &EvalConfig::for_split("val")).unwrap();
    eprintln!(
        "joint on cuda: val reward {:.4} (gpu) vs {:.4} (cpu reload), error {:.3}",
        s.val_mean_reward, r.mean_reward, r.error
    );
    assert!((r.mean_reward - s.val_mean_reward).abs() < 0.02);
}
