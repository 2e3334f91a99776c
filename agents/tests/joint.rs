//! Joint training on a tiny two-stage cascade pretrained in the test
//! (built-in synthetic images, softmax regression then an MLP, one epoch
//! each: deliberately under-trained, so fine-tuning has room).

use candle_core::Device;
use cascade_agents::{
    evaluate, load_agent, Agent, EvalConfig, JointConfig, ReinforceAgent, ReinforceConfig,
    ReinforceMode, TrainData, TrainOptions,
};
use cascade_env::RewardSpec;
use cascade_rl::backend::CandleBackend;
use cascade_rl::checkpoint::Cascade;
use cascade_rl::data::{SplitConfig, Splits, SyntheticConfig};
use cascade_rl::presets::{Preset, StagePreset};
use cascade_rl::train::{pretrain, OptimizerConfig, PretrainOptions, TrainConfig};

fn split_config() -> SplitConfig {
    SplitConfig {
        val_fraction: 0.25,
        seed: 0,
        synthetic: SyntheticConfig {
            n_train: 1600,
            n_test: 400,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn tiny_cascade(dir: &std::path::Path) -> (Cascade, Splits) {
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
                model: "linear".parse().unwrap(),
                train: recipe.clone(),
            },
            StagePreset {
                model: "mlp-32".parse().unwrap(),
                train: recipe,
            },
        ],
    };
    let mut opts = PretrainOptions::new(dir);
    opts.split = split_config();
    pretrain(&preset, &opts).unwrap();
    let cascade = Cascade::load(dir, &Device::Cpu, Some("tiny-2"), Some("synthetic")).unwrap();
    let splits = Splits::load("synthetic", None, &split_config()).unwrap();
    (cascade, splits)
}

/// Every variable of every stage, flattened.
fn weights(c: &Cascade) -> Vec<Vec<f32>> {
    c.stages()
        .iter()
        .flat_map(|s| s.model.named_vars().unwrap())
        .map(|(_, v)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

fn opts() -> TrainOptions {
    TrainOptions {
        spec: RewardSpec::with_alpha(0.05),
        seed: 3,
        quiet: true,
        // A policy head is not small next to these toy stages (a few
        // thousand MACs); the trade-off under test is the classifiers'.
        count_policy_cost: false,
        ..Default::default()
    }
}

#[test]
fn joint_training_changes_the_classifiers_and_beats_the_frozen_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cascade, splits) = tiny_cascade(&dir.path().join("cascade"));
    let before = weights(&cascade);

    // Frozen: policy only, from the live backend; classifiers untouched.
    let mut train_b = CandleBackend::new(&cascade, &splits.train, 256).unwrap();
    let mut val_b = CandleBackend::new(&cascade, &splits.val, 256).unwrap();
    let cfg = ReinforceConfig {
        epochs: 6,
        ..Default::default()
    };
    let mut agent = ReinforceAgent::for_backend(cfg.clone(), &train_b).unwrap();
    let frozen = agent
        .train(
            TrainData {
                train: &mut train_b,
                val: &mut val_b,
            },
            &opts(),
        )
        .unwrap();
    assert_eq!(
        weights(&cascade),
        before,
        "frozen training changed the classifiers"
    );
    let frozen_val = evaluate(
        &agent,
        &mut val_b,
        &opts().spec,
        &EvalConfig {
            count_policy_cost: false,
            ..EvalConfig::for_split("val")
        },
    )
    .unwrap();
    assert_eq!(frozen_val.mean_reward, frozen.val_mean_reward);

    // Joint, warm-started from the frozen policy.
    let joint = JointConfig {
        classifier_lr: 3e-3,
        ..Default::default()
    };
    let s = agent
        .train_joint(
            cascade.fork().unwrap(),
            &splits.train,
            &splits.val,
            &joint,
            &opts(),
        )
        .unwrap();
    eprintln!(
        "frozen val reward {:.4} (error {:.3}); joint {:.4} (error {:.3}) at epoch {}",
        frozen.val_mean_reward, frozen.val_error, s.val_mean_reward, s.val_error, s.best_epoch
    );
    assert_eq!(agent.mode(), ReinforceMode::Joint);
    // The agent fine-tuned its own copy; the caller's cascade is untouched.
    assert_eq!(
        weights(&cascade),
        before,
        "joint training changed the cascade it was given a copy of"
    );
    assert_ne!(
        weights(agent.cascade().unwrap()),
        before,
        "joint training left the classifiers as they were"
    );
    assert!(s.best_epoch > 0);
    assert!(s.val_mean_reward > frozen.val_mean_reward);
    assert!(s.history.iter().all(|h| h.classifier_loss != 0.0));

    // The agent's numbers on its own fine-tuned cascade match the summary.
    let tuned = agent.cascade().unwrap();
    let mut val_t = CandleBackend::new(tuned, &splits.val, 256).unwrap();
    let cfg = EvalConfig {
        count_policy_cost: false,
        ..EvalConfig::for_split("val")
    };
    let r = evaluate(&agent, &mut val_t, &opts().spec, &cfg).unwrap();
    assert_eq!(r.mean_reward, s.val_mean_reward);

    // Saved with its classifiers; loads back to the same numbers.
    let adir = dir.path().join("agent");
    agent.save(&adir).unwrap();
    let back = load_agent(&adir).unwrap();
    let reloaded = Cascade::load(&adir.join("cascade"), &Device::Cpu, None, None).unwrap();
    assert_eq!(weights(&reloaded), weights(tuned));
    let mut val_r = CandleBackend::new(&reloaded, &splits.val, 256).unwrap();
    let r2 = evaluate(&*back, &mut val_r, &opts().spec, &cfg).unwrap();
    assert_eq!(r2.mean_reward, r.mean_reward);
}
