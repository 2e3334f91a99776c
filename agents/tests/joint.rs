//! Joint training on a tiny two-stage cascade pretrained in the test
//! (built-in synthetic images, softmax regression then an MLP, one epoch
//! each: deliberately under-trained, so fine-tuning has room).

use candle_core::Device;
use cascade_agents::{
    evaluate, load_agent, Agent, ClassifierObjective, EvalConfig, ExpectedJointConfig, JointConfig,
    JointImages, JointSplits, ReinforceAgent, ReinforceConfig, ReinforceMode, TrainData,
    TrainOptions, TrainSummary,
};
use cascade_env::RewardSpec;
use cascade_rl::backend::CandleBackend;
use cascade_rl::cascade::Cascade;
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

/// Each variable's values, flattened.
fn flat(vars: impl IntoIterator<Item = (String, candle_core::Var)>) -> Vec<Vec<f32>> {
    vars.into_iter()
        .map(|(_, v)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

/// Every variable of every stage, flattened.
fn weights(c: &Cascade) -> Vec<Vec<f32>> {
    flat(
        c.stages()
            .iter()
            .flat_map(|s| s.model.named_vars().unwrap()),
    )
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
    let (mut agent, frozen) = train_frozen(&cascade, &splits, 6);
    let mut val_b = CandleBackend::new(&cascade, &splits.val, 256).unwrap();
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

    // Joint, warm-started from the frozen policy, both parts on the same
    // images.
    let joint = JointConfig {
        classifier_lr: 3e-3,
        images: JointImages::Policy,
        ..Default::default()
    };
    let data = JointSplits {
        classifier_train: &splits.train,
        policy_train: &splits.train,
        val: &splits.val,
    };
    let s = agent
        .train_joint(cascade.fork().unwrap(), data, &joint, &opts())
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

/// A REINFORCE agent trained `epochs` epochs on `cascade`'s frozen outputs
/// (live), with its summary.
fn train_frozen(
    cascade: &Cascade,
    splits: &Splits,
    epochs: usize,
) -> (ReinforceAgent, TrainSummary) {
    let mut train_b = CandleBackend::new(cascade, &splits.train, 256).unwrap();
    let mut val_b = CandleBackend::new(cascade, &splits.val, 256).unwrap();
    let cfg = ReinforceConfig {
        epochs,
        ..ReinforceConfig::mlp()
    };
    let mut agent = ReinforceAgent::for_backend(cfg, &train_b).unwrap();
    let summary = agent
        .train(
            TrainData {
                train: &mut train_b,
                val: &mut val_b,
            },
            &opts(),
        )
        .unwrap();
    (agent, summary)
}

/// A frozen-trained agent on `cascade` saved in `dir` (the warm start of
/// the joint runs).
fn frozen_agent(cascade: &Cascade, splits: &Splits, dir: &std::path::Path) {
    train_frozen(cascade, splits, 3).0.save(dir).unwrap();
}

/// A tiny cascade, a frozen agent saved in `start` to warm-start from,
/// and the training images halved into D_C and D_P.
struct Setup {
    dir: tempfile::TempDir,
    cascade: Cascade,
    splits: Splits,
    before: Vec<Vec<f32>>,
    start: std::path::PathBuf,
    d_c: cascade_rl::data::Dataset,
    d_p: cascade_rl::data::Dataset,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (cascade, splits) = tiny_cascade(&dir.path().join("cascade"));
    let before = weights(&cascade);
    let start = dir.path().join("frozen");
    frozen_agent(&cascade, &splits, &start);
    let n = splits.train.len();
    let d_c = splits.train.subset(&(0..n / 2).collect::<Vec<_>>());
    let d_p = splits.train.subset(&(n / 2..n).collect::<Vec<_>>());
    Setup {
        dir,
        cascade,
        splits,
        before,
        start,
        d_c,
        d_p,
    }
}

fn policy_weights(a: &ReinforceAgent) -> Vec<Vec<f32>> {
    flat(cascade_rl::nn::named_vars(a.policy().varmap()).unwrap())
}

#[test]
fn cross_fitted_joint_training_keeps_each_part_on_its_own_images() {
    let Setup {
        dir,
        cascade,
        splits,
        before,
        start,
        d_c,
        d_p,
    } = setup();
    let other = splits.test.clone();
    let run = |classifier_train: &cascade_rl::data::Dataset, joint: &JointConfig| {
        let mut a = ReinforceAgent::load(&start).unwrap();
        let data = JointSplits {
            classifier_train,
            policy_train: &d_p,
            val: &splits.val,
        };
        let cfg = ReinforceConfig {
            epochs: 3,
            patience: 0,
            ..a.config().clone()
        };
        a.set_config(cfg).unwrap();
        let s = a
            .train_joint(cascade.fork().unwrap(), data, joint, &opts())
            .unwrap();
        (a, s)
    };

    // The -lr0 twin: the classifiers' images are never used, and the
    // policy's draws do not depend on how many classifier batches there
    // would be: the same policy from other classifier images.
    let lr0 = JointConfig {
        classifier_lr: 0.0,
        ..Default::default()
    };
    let (a, s) = run(&d_c, &lr0);
    let (b, _) = run(
        &other,
        &JointConfig {
            classifier_batches: 3,
            ..lr0.clone()
        },
    );
    assert_eq!(weights(a.cascade().unwrap()), before);
    assert_eq!(policy_weights(&a), policy_weights(&b));
    assert!(s.history.iter().all(|h| h.classifier_loss == 0.0));

    // With a classifier learning rate the classifiers move, from D_C
    // rollouts, and the policy then differs from its twin's.
    let joint = JointConfig {
        classifier_lr: 3e-3,
        ..Default::default()
    };
    let (c, s) = run(&d_c, &joint);
    assert_ne!(weights(c.cascade().unwrap()), before);
    assert!(s.history.iter().all(|h| h.classifier_loss != 0.0));
    assert!(s.val_mean_reward.is_finite());
    assert_ne!(policy_weights(&c), policy_weights(&a));
    // Other classifier images, other classifiers.
    let (d, _) = run(&other, &joint);
    assert_ne!(weights(d.cascade().unwrap()), weights(c.cascade().unwrap()));
    // Refitting the temperatures as the classifiers change: new ones in
    // the agent's cascade, the given cascade's folder untouched.
    let manifest = std::fs::read(dir.path().join("cascade").join("cascade.json")).unwrap();
    let (r, _) = run(
        &d_c,
        &JointConfig {
            recalibrate: true,
            ..joint.clone()
        },
    );
    let tuned = r.cascade().unwrap();
    assert_ne!(tuned.temperatures(), cascade.temperatures());
    assert_eq!(c.cascade().unwrap().temperatures(), cascade.temperatures());
    assert_eq!(
        std::fs::read(dir.path().join("cascade").join("cascade.json")).unwrap(),
        manifest
    );

    // Pooled (the slides' setting): every training image for both parts;
    // a different run from the policy images alone.
    let pooled = JointConfig {
        images: JointImages::Pooled,
        ..joint.clone()
    };
    let (e, _) = run(&d_c, &pooled);
    let (f, _) = run(
        &d_c,
        &JointConfig {
            images: JointImages::Policy,
            ..joint
        },
    );
    assert_ne!(weights(e.cascade().unwrap()), weights(f.cascade().unwrap()));
}

#[test]
fn expected_joint_takes_the_exact_gradient_of_j_or_the_routing_cross_entropy() {
    let Setup {
        dir: _dir,
        cascade,
        splits,
        before,
        start,
        d_c,
        d_p,
    } = setup();
    let run = |ecfg: &ExpectedJointConfig| {
        let mut a = ReinforceAgent::load(&start).unwrap();
        a.set_config(ReinforceConfig {
            epochs: 2,
            patience: 0,
            entropy_coef: 0.0,
            ..a.config().clone()
        })
        .unwrap();
        let data = JointSplits {
            classifier_train: &d_c,
            policy_train: &d_p,
            val: &splits.val,
        };
        let s = a
            .train_expected_joint(cascade.fork().unwrap(), data, ecfg, &opts())
            .unwrap();
        (weights(a.cascade().unwrap()), s)
    };
    let base = ExpectedJointConfig {
        classifier_lr: 3e-3,
        classifier_steps: 5,
        classifier_batch: 64,
        ..Default::default()
    };
    assert_eq!(base.classifier_objective, ClassifierObjective::ExactJ);
    let (exact, s) = run(&base);
    // -J over a minibatch lies in [0, 1 + alpha * cost] (the 0-1 loss).
    assert!(s
        .history
        .iter()
        .all(|h| h.classifier_loss > 0.0 && h.classifier_loss < 2.0));
    let (ce, s_ce) = run(&ExpectedJointConfig {
        classifier_objective: ClassifierObjective::RoutingCe,
        ..base.clone()
    });
    assert_ne!(exact, before);
    assert_ne!(ce, before);
    assert_ne!(exact, ce);
    assert!(s_ce.history.iter().all(|h| h.classifier_loss > 0.0));
    let (lr0, s0) = run(&ExpectedJointConfig {
        classifier_lr: 0.0,
        ..base
    });
    assert_eq!(lr0, before);
    assert!(s0.history.iter().all(|h| h.classifier_loss == 0.0));
}
