//! The study presets (`default`, `quick`, `fmnist`, `cifar10`) and the
//! variants they sweep: the frozen learner's diagnostics and the joint
//! agents' ablations.

use std::path::Path;

use cascade_agents::{
    AgentKind, BackwardConfig, ClassifierObjective, Estimator, ExpectedJointConfig, JointConfig,
    JointImages, PolicyInputs, ReinforceConfig, ThresholdConfig,
};
use cascade_env::RewardSpec;
use cascade_rl::data::{find_data_dir, DatasetKind};

use super::{
    log_grid, ConfigByKind, JointStart, PretrainConfig, StudyConfig, Variant, STUDY_PRESETS,
};
use crate::error::{Error, Result};

impl StudyConfig {
    /// The study preset `name` for the experiment `study`. `data_dir` is
    /// where the data is looked for: the `default` preset uses
    /// Fashion-MNIST when it is found and the synthetic set otherwise.
    pub fn preset(study: &str, name: &str, data_dir: Option<&Path>) -> Result<Self> {
        let base = |cascade: &str, dataset: &str| ConfigByKind {
            study: study.to_string(),
            preset: name.to_string(),
            cascade: cascade.to_string(),
            dataset: dataset.to_string(),
            pretrain: PretrainConfig::default(),
            agents: vec![
                AgentKind::Threshold,
                AgentKind::ReinforceFrozen,
                AgentKind::ReinforceJoint,
            ],
            alphas: vec![0.01, 0.03, 0.1],
            budgets: vec![],
            budget_alpha0: 0.05,
            seeds: vec![0],
            reward: RewardSpec::default(),
            count_policy_cost: true,
            threshold: ThresholdConfig::default(),
            frozen: frozen_learner(10),
            joint: policy(10),
            joint_classifiers: JointConfig::default(),
            expected: expected_policy(),
            expected_classifiers: ExpectedJointConfig::default(),
            backward: BackwardConfig::backward_induction(),
            ann: BackwardConfig::ann(),
            variants: vec![],
            ablation_points: vec![],
            agent_train_samples: None,
            oracle_alphas: log_grid(1e-3, 30.0, 31),
            num_envs: 256,
            eval_batch: 512,
        };
        // The default preset falls back to synthetic data only when no
        // folder was named: an explicit --data-dir without the data set is
        // an error, whatever the preset.
        let fmnist_found = match (name, data_dir) {
            ("default", Some(_)) => {
                find_data_dir(DatasetKind::FashionMnist, data_dir)?;
                true
            }
            _ => find_data_dir(DatasetKind::FashionMnist, data_dir).is_ok(),
        };
        let cfg = match name {
            "quick" => quick(base("synthetic-3", "synthetic")),
            "default" if fmnist_found => {
                let mut c = base("fmnist-4", "fashion-mnist");
                c.pretrain.max_train = Some(20000);
                c.pretrain.max_val = Some(2000);
                c.pretrain.max_test = Some(5000);
                // A fifth of the full set: the ResNet needs more passes.
                c.pretrain.epochs = vec![4, 6, 4, 6];
                c.alphas = vec![0.003, 0.01, 0.03];
                c.frozen = frozen_learner(20);
                c.joint = policy(10);
                c.joint_classifiers.classifier_lr = 3e-4;
                c.expected = ReinforceConfig {
                    epochs: 4,
                    ..expected_policy()
                };
                c.expected_classifiers.classifier_steps = 25;
                c
            }
            "default" => {
                let mut c = base("synthetic-3", "synthetic");
                c.pretrain.synthetic_train = 8000;
                c.pretrain.synthetic_test = 2000;
                c.alphas = vec![0.01, 0.03, 0.1, 0.3];
                c.frozen = frozen_learner(12);
                c.joint = policy(12);
                c.joint_classifiers.classifier_lr = 1e-3;
                c
            }
            "fmnist" => {
                let mut c = base("fmnist-4", "fashion-mnist");
                // Fixed FLOPs budgets (fractions of the ResNet-20's cost),
                // met on validation by dual ascent on alpha; 0.18 is the
                // paper's operating point.
                c.alphas = vec![];
                c.budgets = vec![0.1, 0.18, 0.3, 0.5];
                c.seeds = vec![0, 1, 2];
                // 8100 images for the policies, 45900 for the classifiers.
                c.pretrain.agent_fraction = 0.15;
                c.frozen = frozen_learner(100);
                c.joint = policy(12);
                // The middle of the three classifier learning rates the
                // study sweeps (3e-6, 3e-5, 3e-4); at 3e-4 the cascade's
                // confidences run away within an epoch (docs/results/fmnist).
                c.joint_classifiers.classifier_lr = 3e-5;
                c.expected = ReinforceConfig {
                    epochs: 8,
                    ..expected_policy()
                };
                c.expected_classifiers.classifier_steps = 80;
                c.variants = frozen_diagnostics();
                c.variants.extend(ablations(&c));
                c.ablation_points = vec![0.18];
                c
            }
            "cifar10" => {
                let mut c = base("cifar10-resnet", "cifar10");
                c.alphas = vec![0.003, 0.01, 0.02, 0.05, 0.1, 0.3];
                c.seeds = vec![0, 1, 2];
                c.frozen = frozen_learner(20);
                c.joint = policy(20);
                c.joint_classifiers.classifier_lr = 1e-4;
                c.eval_batch = 256;
                c
            }
            other => {
                return Err(Error::Config(format!(
                    "unknown study preset '{other}' (known: {})",
                    STUDY_PRESETS.join(", ")
                )))
            }
        };
        Ok(cfg.resolve())
    }
}

/// The policy training of the joint agents in the presets: the head of
/// the frozen learner they start from ([`frozen_learner`]), the gentle
/// step a warm start needs (lr 1e-3, no entropy bonus); every epoch runs
/// and the best on validation is kept.
fn policy(epochs: usize) -> ReinforceConfig {
    ReinforceConfig {
        epochs,
        patience: 0,
        lr: 1e-3,
        entropy_coef: 0.0,
        ..linear_head(ReinforceConfig::mlp())
    }
}

/// `c` with a linear head on the confidence inputs, the functional form of
/// `ann`'s rule.
fn linear_head(c: ReinforceConfig) -> ReinforceConfig {
    ReinforceConfig {
        hidden: 0,
        inputs: PolicyInputs::Probs,
        ..c
    }
}

/// The frozen learner of the presets (`reinforce-frozen`): REINFORCE, the
/// slides' estimator on frozen classifiers, on a linear head over the
/// confidence inputs started from `ann`'s rule fitted on the same policy
/// images (under a budget, dual ascent starts from the alpha `ann` chose
/// on validation); lr 1e-3, no entropy bonus, every epoch run and the best
/// on validation kept (the start included). Chosen on validation among
/// the learners of [`frozen_diagnostics`] (docs/results/fmnist).
fn frozen_learner(epochs: usize) -> ReinforceConfig {
    ReinforceConfig::frozen_learner(epochs)
}

/// The previous frozen learner of the presets: REINFORCE on a tanh MLP
/// (hidden 32) over the standardised stage features and the confidence
/// inputs, from fresh weights, lr 1e-2, entropy bonus 0.01 annealed to 0.
fn previous_frozen_learner(epochs: usize) -> ReinforceConfig {
    ReinforceConfig {
        epochs,
        patience: 0,
        ..ReinforceConfig::mlp()
    }
}

/// Frozen learners that diagnose why the previous one fell behind `ann`
/// (one change each: training length, inputs, capacity, entropy bonus,
/// learning rate, start, estimator), swept at the ablation points.
pub fn frozen_diagnostics() -> Vec<Variant> {
    let prev = previous_frozen_learner(30);
    let v = |name: &str, description: &str, policy: ReinforceConfig| Variant {
        name: name.into(),
        base: AgentKind::ReinforceFrozen,
        description: description.into(),
        start: JointStart::Mixed,
        every_point: false,
        twin: None,
        policy: Some(policy),
        joint: None,
        expected: None,
    };
    let linear = linear_head(prev.clone());
    vec![
        v(
            "reinforce-frozen-prev",
            "the previous frozen learner: MLP on features and confidences, fresh, 30 epochs",
            prev.clone(),
        ),
        v(
            "reinforce-frozen-prev-300ep",
            "the previous learner trained for 300 epochs",
            ReinforceConfig {
                epochs: 300,
                ..prev.clone()
            },
        ),
        v(
            "reinforce-frozen-prev-probs",
            "the previous learner on the confidence inputs only (no features)",
            ReinforceConfig {
                inputs: PolicyInputs::Probs,
                ..prev.clone()
            },
        ),
        v(
            "reinforce-frozen-prev-noent",
            "the previous learner without the entropy bonus",
            ReinforceConfig {
                entropy_coef: 0.0,
                ..prev.clone()
            },
        ),
        v(
            "reinforce-frozen-prev-lr1e-3",
            "the previous learner at lr 1e-3",
            ReinforceConfig {
                lr: 1e-3,
                ..prev.clone()
            },
        ),
        v(
            "reinforce-frozen-linear",
            "a linear head on the confidence inputs, fresh, 30 epochs",
            linear.clone(),
        ),
        v(
            "reinforce-frozen-linear-300ep",
            "a linear head on the confidence inputs, fresh, 300 epochs",
            ReinforceConfig {
                epochs: 300,
                ..linear.clone()
            },
        ),
        v(
            "exact-pg-frozen-linear-300ep",
            "the exact policy gradient, linear head on the confidence inputs, fresh, 300 epochs",
            ReinforceConfig {
                epochs: 300,
                estimator: Estimator::Exact,
                ..linear
            },
        ),
        v(
            "exact-pg-frozen",
            "the exact policy gradient from ann's rule (the frozen learner's start and head)",
            ReinforceConfig {
                estimator: Estimator::Exact,
                ..frozen_learner(100)
            },
        ),
    ]
}

/// The arms of the joint comparison beside the two joint agents (both
/// cross-fitted, started "mixed" from the frozen learner): the classifier
/// learning rates the main arm is chosen among (on validation), the other
/// starts, the slides' own setting (every training image for both parts),
/// the routing cross-entropy of `expected-joint`, and every arm's `-lr0`
/// twin (the same policy updates, classifier learning rate 0; arms that
/// differ only in the classifiers' learning rate or loss share one). The
/// cheap and most telling first, so a study stopped early has them; the
/// main arm's twin runs at every point of the sweep.
pub fn ablations(c: &ConfigByKind) -> Vec<Variant> {
    let v = |name: &str, base, description: &str, start| Variant {
        name: name.into(),
        base,
        description: description.into(),
        start,
        every_point: false,
        twin: None,
        policy: None,
        joint: None,
        expected: None,
    };
    let rj = |name: &str, description: &str, start, joint: JointConfig| Variant {
        joint: Some(joint),
        ..v(name, AgentKind::ReinforceJoint, description, start)
    };
    let ej = |name: &str, description: &str, start, expected: ExpectedJointConfig| Variant {
        expected: Some(expected),
        ..v(name, AgentKind::ExpectedJoint, description, start)
    };
    let joint = |lr: f64, images: JointImages| JointConfig {
        classifier_lr: lr,
        images,
        ..c.joint_classifiers.clone()
    };
    let expected = |lr: f64, objective: ClassifierObjective| ExpectedJointConfig {
        classifier_lr: lr,
        classifier_objective: objective,
        ..c.expected_classifiers.clone()
    };
    let (jlr, elr) = (
        c.joint_classifiers.classifier_lr,
        c.expected_classifiers.classifier_lr,
    );
    let cross = JointImages::CrossFitted;
    let exact = ClassifierObjective::ExactJ;
    use JointStart::{Ann, Cold, Mixed};
    vec![
        Variant {
            every_point: true,
            ..rj(
                "reinforce-joint-lr0",
                "reinforce-joint's twin: classifier learning rate 0",
                Mixed,
                joint(0.0, cross),
            )
        },
        Variant {
            twin: Some("reinforce-joint-lr0".into()),
            ..rj(
                "reinforce-joint-clr-low",
                "reinforce-joint, classifier learning rate a tenth of the default",
                Mixed,
                joint(jlr / 10.0, cross),
            )
        },
        Variant {
            twin: Some("reinforce-joint-lr0".into()),
            ..rj(
                "reinforce-joint-clr-high",
                "reinforce-joint, classifier learning rate ten times the default",
                Mixed,
                joint(jlr * 10.0, cross),
            )
        },
        Variant {
            twin: Some("reinforce-joint-lr0".into()),
            ..rj(
                "reinforce-joint-detached",
                "reinforce-joint, classifier gradients through log C_k(yhat|x) only (the policy's inputs detached; twin: reinforce-joint-lr0)",
                Mixed,
                JointConfig {
                    detach_inputs: true,
                    ..joint(jlr, cross)
                },
            )
        },
        Variant {
            twin: Some("reinforce-joint-lr0".into()),
            ..rj(
                "reinforce-joint-recal",
                "reinforce-joint, the stage temperatures refitted on D_P after every epoch (twin: reinforce-joint-lr0)",
                Mixed,
                JointConfig {
                    recalibrate: true,
                    ..joint(jlr, cross)
                },
            )
        },
        Variant {
            every_point: true,
            ..ej(
                "expected-joint-lr0",
                "expected-joint's twin: classifier learning rate 0",
                Mixed,
                expected(0.0, exact),
            )
        },
        rj(
            "reinforce-joint-ann",
            "reinforce-joint started from ann's rule",
            Ann,
            joint(jlr, cross),
        ),
        rj(
            "reinforce-joint-ann-lr0",
            "reinforce-joint-ann's twin",
            Ann,
            joint(0.0, cross),
        ),
        rj(
            "reinforce-joint-cold",
            "reinforce-joint from a fresh policy",
            Cold,
            joint(jlr, cross),
        ),
        rj(
            "reinforce-joint-cold-lr0",
            "reinforce-joint-cold's twin",
            Cold,
            joint(0.0, cross),
        ),
        Variant {
            twin: Some("expected-joint-lr0".into()),
            ..ej(
                "expected-joint-routing-ce",
                "expected-joint, classifiers on the routing-weighted cross-entropy (twin: expected-joint-lr0)",
                Mixed,
                expected(elr, ClassifierObjective::RoutingCe),
            )
        },
        Variant {
            twin: Some("expected-joint-lr0".into()),
            ..ej(
                "expected-joint-clr-low",
                "expected-joint, classifier learning rate a tenth of the default",
                Mixed,
                expected(elr / 10.0, exact),
            )
        },
        Variant {
            twin: Some("expected-joint-lr0".into()),
            ..ej(
                "expected-joint-clr-high",
                "expected-joint, classifier learning rate ten times the default",
                Mixed,
                expected(elr * 10.0, exact),
            )
        },
        rj(
            "reinforce-joint-pooled",
            "the slides' setting: both parts on every training image (D_C and D_P)",
            Mixed,
            joint(jlr, JointImages::Pooled),
        ),
        rj(
            "reinforce-joint-pooled-lr0",
            "reinforce-joint-pooled's twin",
            Mixed,
            joint(0.0, JointImages::Pooled),
        ),
        ej(
            "expected-joint-ann",
            "expected-joint started from ann's rule",
            Ann,
            expected(elr, exact),
        ),
        ej(
            "expected-joint-ann-lr0",
            "expected-joint-ann's twin",
            Ann,
            expected(0.0, exact),
        ),
        ej(
            "expected-joint-cold",
            "expected-joint from a fresh policy",
            Cold,
            expected(elr, exact),
        ),
        ej(
            "expected-joint-cold-lr0",
            "expected-joint-cold's twin",
            Cold,
            expected(0.0, exact),
        ),
    ]
}

/// The policy of `expected-joint`: 10 rounds, all run, the best on
/// validation kept; no entropy bonus (the gradient is exact, nothing to
/// explore).
pub(super) fn expected_policy() -> ReinforceConfig {
    ReinforceConfig {
        epochs: 10,
        patience: 0,
        entropy_coef: 0.0,
        ..linear_head(ReinforceConfig::mlp())
    }
}

/// The `quick` preset: synthetic data, small, well under a minute on two cores.
fn quick(mut c: ConfigByKind) -> ConfigByKind {
    c.pretrain.synthetic_train = 4000;
    c.pretrain.synthetic_test = 1000;
    c.alphas = vec![0.01, 0.05, 0.2];
    c.frozen = frozen_learner(10);
    c.joint = policy(10);
    c.joint_classifiers.classifier_lr = 1e-3;
    c.expected = ReinforceConfig {
        epochs: 4,
        ..expected_policy()
    };
    c.expected_classifiers.classifier_steps = 20;
    c.expected_classifiers.classifier_batch = 64;
    c.variants = ablations(&c);
    c.ablation_points = vec![0.05];
    c
}
