//! `cascade train`: train a stopping agent on a pretrained cascade and save
//! it to an agent folder.
//!
//! ```text
//! cascade train --cascade runs/fmnist --agent reinforce --frozen --alpha 0.1 --seed 0 \
//!     --out runs/fmnist/agents/reinforce-frozen-a0.1-s0
//! cascade train --cascade runs/fmnist --agent reinforce --joint --budget 0.3 --out ...
//! cascade train --cascade runs/fmnist --agent threshold --alpha 0.1 --out ...
//! cascade train --cascade runs/fmnist --agent static-2 --out ...
//! ```
//!
//! The data splits are the cascade's own (reloaded from its manifest: same
//! data set, seed and sizes). Stage outputs come from the live candle
//! backend, which runs each stage lazily. Training uses the training split,
//! every choice (early stopping, thresholds, budgets) the validation split;
//! the test split is left to `cascade eval`.
//!
//! The agent folder gets the agent (`agent.json`, `policy.safetensors`, and
//! `cascade/` for a jointly trained agent), `train_log.csv` (per epoch),
//! `train_summary.json` and `train_args.json` (the resolved arguments and
//! the hash of the cascade, which `cascade eval` reads to find and check
//! the cascade). The folder is built beside `--out` and swapped in whole
//! when complete; a folder already holding an agent is refused unless
//! `--overwrite`, one holding other files always.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use cascade_agents::{
    AgentKind, AgentSpec, Confidence, Estimator, ExpectedJointConfig, Family, JointConfig,
    JointImages, JointInputs, JointSpec, JointSplits, JointStart, PolicyInit, PolicyInputs,
    ReinforceAgent, ReinforceConfig, ReinforceMode, ThresholdConfig, TrainData, TrainInputs,
    TrainOptions,
};
use cascade_env::{CostModel, Loss, Prediction, RewardSpec};
use cascade_rl::backend::{cascade_policy_split, cascade_splits, CandleBackend, DEFAULT_BATCH};
use cascade_rl::cascade::Cascade;
use cascade_rl::device::DeviceSpec;
use cascade_rl::folder::{FolderKind, NewFolder, Replace};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

pub use cascade_agents::{TRAIN_ARGS_FILE, TRAIN_SUMMARY_FILE};

/// An agent folder, recognised by its `agent.json`.
pub const AGENT_FOLDER: FolderKind = FolderKind {
    what: "a saved agent",
    marker: cascade_agents::AGENT_FILE,
};

/// `cascade train`.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Folder of a pretrained cascade (holding cascade.json).
    #[arg(
        long,
        required_unless_present = "train_trace",
        conflicts_with = "train_trace"
    )]
    pub cascade: Option<PathBuf>,
    /// Train on this recorded trace instead of a cascade (with
    /// --val-trace): agents that need only recorded outputs.
    #[arg(long, requires = "val_trace")]
    pub train_trace: Option<PathBuf>,
    /// The validation trace of --train-trace (selection, thresholds, budgets).
    #[arg(long, requires = "train_trace")]
    pub val_trace: Option<PathBuf>,
    /// Agent: reinforce, threshold, backward-induction, ann, static-K
    /// (K = 1..number of stages), oracle, or a study's name
    /// (threshold-per-stage, threshold-entropy, reinforce-frozen,
    /// reinforce-joint, expected-joint); the flags below set its settings
    /// (the agent and its settings are stored as its spec in
    /// train_args.json).
    #[arg(long)]
    pub agent: String,
    /// REINFORCE: train the policy and the classifiers together.
    #[arg(long, conflicts_with = "frozen")]
    pub joint: bool,
    /// REINFORCE: train the policy only, the classifiers fixed (the default).
    /// Without flags REINFORCE is the studies' frozen learner: a linear head
    /// on the confidence inputs started from `ann`'s rule, lr 1e-3, no
    /// entropy bonus, 100 epochs, the best on validation kept.
    #[arg(long)]
    pub frozen: bool,
    /// Price of compute alpha, in loss per full-model cost (the starting
    /// value with --budget).
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub alpha: f64,
    /// Cost budget as a fraction of the largest stage's cost (e.g. 0.3):
    /// validation mean cost must stay within it.
    #[arg(long, allow_negative_numbers = true)]
    pub budget: Option<f64>,
    /// Loss in the reward: zero-one or cross-entropy.
    #[arg(long, default_value = "zero-one")]
    pub loss: Loss,
    /// Cost model: cumulative (separate networks) or exit (early exits).
    #[arg(long, default_value = "cumulative")]
    pub cost_model: CostModel,
    /// Prediction on stop: argmax or sample.
    #[arg(long, default_value = "argmax")]
    pub prediction: Prediction,
    /// Run seed (initialisation, shuffling, sampling).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Agent folder to write: a new or empty folder, or one holding an
    /// agent with --overwrite.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the agent already in --out (the new folder is built beside
    /// it and swapped in whole when complete).
    #[arg(long)]
    pub overwrite: bool,
    /// REINFORCE: most epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// REINFORCE: trajectories per step.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// REINFORCE: policy learning rate.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// REINFORCE --joint: classifier learning rate.
    #[arg(long, allow_negative_numbers = true)]
    pub classifier_lr: Option<f64>,
    /// REINFORCE --joint: which images each part learns from
    /// (cross-fitted: the classifiers on their own training images, the
    /// policy on the held-out policy images; policy: both on the policy
    /// images; pooled: both on all of them). Default: cross-fitted when the
    /// cascade records held-out policy images, policy otherwise.
    #[arg(long, value_enum)]
    pub joint_images: Option<JointImages>,
    /// REINFORCE: hidden width of the policy heads.
    #[arg(long)]
    pub hidden: Option<usize>,
    /// REINFORCE: epochs without a better validation score before stopping (0: never).
    #[arg(long)]
    pub patience: Option<usize>,
    /// REINFORCE: what the policy heads read (probs: the confidence inputs
    /// only, as `ann`'s rule).
    #[arg(long, value_enum)]
    pub policy_inputs: Option<PolicyInputs>,
    /// REINFORCE on frozen classifiers: how the policy starts (ann: from
    /// `ann`'s rule fitted on the same images; needs --hidden 0
    /// --policy-inputs probs).
    #[arg(long, value_enum)]
    pub start: Option<PolicyInit>,
    /// REINFORCE on frozen classifiers: the gradient (exact: the exact
    /// gradient of the expected reward over the recorded outputs).
    #[arg(long, value_enum)]
    pub estimator: Option<Estimator>,
    /// REINFORCE: weight of the entropy bonus at the first epoch.
    #[arg(long)]
    pub entropy_coef: Option<f64>,
    /// REINFORCE --joint: start from the policy of this saved reinforce agent.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Threshold: one threshold per stage (coordinate search).
    #[arg(long)]
    pub per_stage: bool,
    /// Threshold: compare one minus the normalised entropy of the label
    /// probabilities (BranchyNet's exit) instead of the top probability.
    #[arg(long)]
    pub entropy: bool,
    /// Do not count the policy's own MACs into the cost.
    #[arg(long)]
    pub no_policy_cost: bool,
    /// Folder holding the data set (overrides discovery).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Samples per forward pass of the classifiers.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// What `train_args.json` holds: the resolved run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    /// The pretrained cascade folder (absolute when it could be resolved).
    pub cascade: PathBuf,
    /// Content hash of that cascade when the agent was trained
    /// ([`crate::provenance::cascade_hash`]); `cascade eval` checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade_hash: Option<String>,
    /// The data folder given, if any.
    pub data_dir: Option<PathBuf>,
    /// The agent argument.
    pub agent: String,
    /// What was trained: the agent and its settings (absent in folders
    /// written before specs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<AgentSpec>,
    /// How a REINFORCE-trained agent was trained.
    pub mode: Option<ReinforceMode>,
    /// The training options (reward spec, budget, seed, ...).
    pub options: TrainOptions,
    /// Device name.
    pub device: String,
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    cascade_rl::fsutil::write_atomic(path, &bytes)
        .map_err(|e| crate::error::Error::io(path, e).into())
}

/// The spec `args` describe: the agent's name (`reinforce` with
/// `--joint` is `reinforce-joint`, without it `reinforce-frozen`) with the
/// settings its flags give. `init`: the agent `--init` names;
/// `policy_images`: whether the cascade records held-out policy images.
fn spec_of(
    args: &TrainArgs,
    init: Option<&ReinforceAgent>,
    policy_images: bool,
    cascade_json: &Path,
) -> anyhow::Result<AgentSpec> {
    let name = args.agent.trim();
    let spec = match name {
        "reinforce" if args.joint => AgentSpec::of_kind(AgentKind::ReinforceJoint),
        "reinforce" => AgentSpec::of_kind(AgentKind::ReinforceFrozen),
        other => AgentSpec::from_name(other).map_err(|e| match other.starts_with("static-") {
            true => anyhow::Error::from(e),
            false => anyhow::anyhow!(
                "unknown agent '{other}': use reinforce, threshold, backward-induction, ann, \
                 oracle, static-K, or a study's name ({})",
                AgentKind::ALL.map(|k| k.name()).join(", ")
            ),
        })?,
    };
    let reinforce = matches!(
        spec,
        AgentSpec::ReinforceFrozen(_) | AgentSpec::ReinforceJoint(_)
    );
    if (args.joint || args.frozen) && !reinforce {
        bail!("--joint and --frozen apply to --agent reinforce only (got --agent {name})");
    }
    match (&spec, args.joint, args.frozen) {
        (AgentSpec::ReinforceJoint(_), _, true) => bail!("--agent {name} contradicts --frozen"),
        (AgentSpec::ReinforceFrozen(_), true, _) => bail!("--agent {name} contradicts --joint"),
        _ => {}
    }
    if args.init.is_some() && !spec.joint() {
        bail!("--init starts joint training from a saved policy; use it with --joint");
    }
    if (args.per_stage || args.entropy) && spec.family() != Family::Threshold {
        bail!("--per-stage and --entropy apply to the threshold agents (got --agent {name})");
    }
    // Settings: the defaults, or those of the agent to start from, with
    // the flags given on top.
    let policy = || {
        let base = init.map_or_else(ReinforceConfig::default, |a| a.config().clone());
        with_reinforce_flags(args, base)
    };
    let start = if init.is_some() {
        JointStart::Mixed
    } else {
        JointStart::Cold
    };
    // What the joint agent's parts learn from (asked of reinforce-joint only).
    let images = || -> anyhow::Result<JointImages> {
        Ok(match (args.joint_images, policy_images) {
            (Some(JointImages::Policy), _) | (None, false) => JointImages::Policy,
            (Some(other), false) => bail!(
                "--joint-images {} needs policy images held out from the classifiers' training \
                 images, and {} records none; use --joint-images policy",
                other
                    .to_possible_value()
                    .map_or_else(String::new, |v| v.get_name().to_string()),
                cascade_json.display()
            ),
            (Some(other), true) => other,
            (None, true) => JointImages::CrossFitted,
        })
    };
    Ok(match spec {
        AgentSpec::Threshold(c) if args.per_stage => {
            AgentSpec::ThresholdPerStage(threshold_flags(args, c))
        }
        AgentSpec::Threshold(c) if args.entropy => {
            AgentSpec::ThresholdEntropy(threshold_flags(args, c))
        }
        AgentSpec::Threshold(c) => AgentSpec::Threshold(threshold_flags(args, c)),
        AgentSpec::ThresholdPerStage(c) => AgentSpec::ThresholdPerStage(threshold_flags(args, c)),
        AgentSpec::ThresholdEntropy(c) => AgentSpec::ThresholdEntropy(threshold_flags(args, c)),
        AgentSpec::ReinforceFrozen(_) => AgentSpec::ReinforceFrozen(policy()),
        AgentSpec::ReinforceJoint(j) => AgentSpec::ReinforceJoint(JointSpec {
            policy: policy(),
            classifiers: JointConfig {
                classifier_lr: args.classifier_lr.unwrap_or(j.classifiers.classifier_lr),
                images: images()?,
                ..j.classifiers
            },
            start,
        }),
        AgentSpec::ExpectedJoint(j) => {
            if !policy_images {
                bail!(
                    "expected-joint trains the classifiers on their own images and the policy \
                     on held-out policy images, and {} records none",
                    cascade_json.display()
                );
            }
            AgentSpec::ExpectedJoint(JointSpec {
                policy: policy(),
                classifiers: ExpectedJointConfig {
                    classifier_lr: args.classifier_lr.unwrap_or(j.classifiers.classifier_lr),
                    ..j.classifiers
                },
                start,
            })
        }
        other => other,
    })
}

/// A threshold config with `--per-stage` and `--entropy` given on top.
fn threshold_flags(args: &TrainArgs, c: ThresholdConfig) -> ThresholdConfig {
    ThresholdConfig {
        per_stage: c.per_stage || args.per_stage,
        confidence: if args.entropy {
            Confidence::Entropy
        } else {
            c.confidence
        },
        ..c
    }
}

/// Runs `cascade train`.
pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    if let (Some(t), Some(v)) = (&args.train_trace, &args.val_trace) {
        return super::traces::train(args, t, v);
    }
    let Some(cascade_dir) = &args.cascade else {
        bail!("give --cascade DIR, or --train-trace T and --val-trace V");
    };
    let started = Instant::now();
    let spec = RewardSpec {
        alpha: args.alpha,
        loss: args.loss,
        cost: args.cost_model,
        prediction: args.prediction,
    };
    spec.validate()?;
    // The folder is checked before anything is loaded or trained, and
    // written beside the old one until complete.
    let folder = NewFolder::begin(
        &args.out,
        AGENT_FOLDER,
        if args.overwrite {
            Replace::SameKind
        } else {
            Replace::Nothing
        },
    )?;
    let out = folder.path().to_path_buf();
    let device = args.device.parse::<DeviceSpec>()?.open()?;
    let cascade = Cascade::load(cascade_dir, &device, None, None)
        .with_context(|| format!("loading the cascade in {}", cascade_dir.display()))?;
    if cascade.is_synthetic() {
        eprintln!("{}", cascade_rl::data::SYNTHETIC_NOTICE);
    }
    let splits = cascade_splits(&cascade, args.data_dir.as_deref())?;
    // The agents learn on the policy images recorded with the cascade (held
    // out from its classifiers, as in the studies), else on the
    // classifiers' own training images.
    let policy_images = cascade_policy_split(&cascade, &splits, args.data_dir.as_deref())?;
    let agent_train = match &policy_images {
        Some(d) => d,
        None => {
            if !args.quiet {
                eprintln!(
                    "note: {} records no held-out policy images; the agent trains on the \
                     classifiers' own training images, whose outputs are over-confident",
                    cascade_dir.join("cascade.json").display()
                );
            }
            &splits.train
        }
    };
    let init = match &args.init {
        Some(dir) => Some(
            ReinforceAgent::load(dir)
                .with_context(|| format!("loading the initial agent in {}", dir.display()))?,
        ),
        None => None,
    };
    let agent_spec = spec_of(
        args,
        init.as_ref(),
        policy_images.is_some(),
        &cascade_dir.join("cascade.json"),
    )?;
    agent_spec.validate()?;
    let cascade_hash = crate::provenance::cascade_hash(cascade_dir)?;
    let opts = TrainOptions {
        spec,
        budget: args.budget,
        seed: args.seed,
        quiet: args.quiet,
        log_csv: agent_spec
            .seeded()
            .then(|| cascade_agents::AgentFolder::new(&out).train_log()),
        count_policy_cost: !args.no_policy_cost,
        ..Default::default()
    };
    opts.validate()?;
    let record = TrainRecord {
        cascade: std::fs::canonicalize(cascade_dir).unwrap_or_else(|_| cascade_dir.clone()),
        cascade_hash: Some(cascade_hash),
        data_dir: args.data_dir.clone(),
        agent: args.agent.clone(),
        spec: Some(agent_spec.clone()),
        mode: match &agent_spec {
            AgentSpec::ReinforceFrozen(_) => Some(ReinforceMode::Frozen),
            AgentSpec::ReinforceJoint(_) => Some(ReinforceMode::Joint),
            AgentSpec::ExpectedJoint(_) => Some(ReinforceMode::ExpectedJoint),
            _ => None,
        },
        options: opts.clone(),
        device: cascade_rl::device::device_name(&device),
    };

    // The agents see the cascade through the lazy live backend; the joint
    // ones also fine-tune a copy of it.
    let mut train = CandleBackend::new(&cascade, agent_train, args.batch)?;
    let mut val = CandleBackend::new(&cascade, &splits.val, args.batch)?;
    let joint = match agent_spec.joint() {
        false => None,
        true => Some(JointInputs {
            cascade: cascade.fork()?,
            splits: JointSplits {
                classifier_train: &splits.train,
                policy_train: agent_train,
                val: &splits.val,
            },
            start: init.map(|a| (a, args.alpha)),
        }),
    };
    let inputs = TrainInputs {
        data: TrainData {
            train: &mut train,
            val: &mut val,
        },
        joint,
    };
    let (agent, summary) = cascade_agents::train(&agent_spec, inputs, &opts)?;
    agent.save(&out)?;
    cascade_agents::record_spec(&out, &agent_spec)?;
    let files = cascade_agents::AgentFolder::new(&out);
    write_json(&files.train_summary(), &summary)?;
    write_json(&files.train_args(), &record)?;
    folder.commit()?;
    println!(
        "{}: validation mean reward {:.4}, error {:.2}%, cost {:.2}% of the largest stage (alpha {:.4}{}), {} epochs (best {})",
        agent.name(),
        summary.val_mean_reward,
        100.0 * summary.val_error,
        100.0 * summary.val_cost,
        summary.alpha,
        match (summary.budget, summary.budget_met) {
            (Some(b), Some(true)) => format!(", budget {b} met"),
            (Some(b), _) => format!(", budget {b} NOT met"),
            _ => String::new(),
        },
        summary.epochs_run,
        summary.best_epoch
    );
    println!(
        "wrote {} in {:.1} s; evaluate with `cascade eval --agent-dir {} --split test`",
        args.out.display(),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// `base` with the REINFORCE flags of `args` given on top.
pub(super) fn with_reinforce_flags(args: &TrainArgs, base: ReinforceConfig) -> ReinforceConfig {
    let base = base.clone().with_head(
        args.hidden.unwrap_or(base.hidden),
        args.policy_inputs.unwrap_or(base.inputs),
        args.start,
    );
    ReinforceConfig {
        epochs: args.epochs.unwrap_or(base.epochs),
        batch_size: args.batch_size.unwrap_or(base.batch_size),
        lr: args.lr.unwrap_or(base.lr),
        patience: args.patience.unwrap_or(base.patience),
        estimator: args.estimator.unwrap_or(base.estimator),
        entropy_coef: args.entropy_coef.unwrap_or(base.entropy_coef),
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_flags_make_one_spec() {
        let parse = |extra: &[&str], policy_images: bool| {
            let mut argv = vec!["cascade", "train", "--cascade", "c", "--out", "o"];
            argv.extend_from_slice(extra);
            match crate::cli::Cli::try_parse_from(argv).unwrap().command {
                crate::cli::Command::Train(a) => {
                    spec_of(&a, None, policy_images, Path::new("c/cascade.json"))
                }
                _ => unreachable!(),
            }
        };
        let per_stage = parse(&["--agent", "threshold-per-stage"], true).unwrap();
        assert_eq!(
            per_stage,
            parse(&["--agent", "threshold", "--per-stage"], true).unwrap()
        );
        assert!(matches!(&per_stage, AgentSpec::ThresholdPerStage(c) if c.per_stage));
        let entropy = parse(&["--agent", "threshold-entropy"], true).unwrap();
        assert!(
            matches!(&entropy, AgentSpec::ThresholdEntropy(c) if c.confidence == Confidence::Entropy)
        );
        let joint = parse(&["--agent", "reinforce-joint"], true).unwrap();
        assert_eq!(
            joint,
            parse(&["--agent", "reinforce", "--joint"], true).unwrap()
        );
        match &joint {
            AgentSpec::ReinforceJoint(j) => {
                assert_eq!(j.classifiers.images, JointImages::CrossFitted);
                assert_eq!(j.start, JointStart::Cold);
            }
            other => panic!("{other:?}"),
        }
        match parse(
            &["--agent", "reinforce-joint", "--classifier-lr", "0.01"],
            false,
        )
        .unwrap()
        {
            AgentSpec::ReinforceJoint(j) => {
                assert_eq!(j.classifiers.images, JointImages::Policy);
                assert_eq!(j.classifiers.classifier_lr, 0.01);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(&["--agent", "reinforce"], true).unwrap(),
            AgentSpec::ReinforceFrozen(ReinforceConfig::default())
        );
        match parse(
            &["--agent", "reinforce", "--hidden", "8", "--epochs", "3"],
            true,
        )
        .unwrap()
        {
            AgentSpec::ReinforceFrozen(c) => {
                assert_eq!((c.hidden, c.epochs, c.init), (8, 3, PolicyInit::Fresh));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(&["--agent", "ann"], true).unwrap().name(), "ann");
        assert_eq!(
            parse(&["--agent", "static-2"], true).unwrap().name(),
            "static-2"
        );
        let e = parse(&["--agent", "reinforce-frozen", "--joint"], true).unwrap_err();
        assert!(e.to_string().contains("contradicts --joint"), "{e}");
        let e = parse(&["--agent", "ann", "--frozen"], true).unwrap_err();
        assert!(e.to_string().contains("--agent reinforce only"), "{e}");
        let e = parse(&["--agent", "ann", "--per-stage"], true).unwrap_err();
        assert!(e.to_string().contains("threshold agents"), "{e}");
        let e = parse(&["--agent", "expected-joint"], false).unwrap_err();
        assert!(e.to_string().contains("records none"), "{e}");
        assert_eq!(
            parse(&["--agent", "expected-joint"], true).unwrap().name(),
            "expected-joint"
        );
        let e = parse(&["--agent", "reinforce-warm"], true).unwrap_err();
        assert!(
            e.to_string().contains("unknown agent 'reinforce-warm'"),
            "{e}"
        );
        let e = parse(
            &["--agent", "reinforce-joint", "--joint-images", "pooled"],
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("records none"), "{e}");
    }
    use crate::cli::Cli;
    use cascade_rl::data::{SplitConfig, SyntheticConfig};
    use cascade_rl::presets::{Preset, StagePreset};
    use cascade_rl::train::{pretrain, OptimizerConfig, PretrainOptions, TrainConfig};
    use clap::Parser;

    /// A two-stage cascade on the built-in synthetic data, pretrained for
    /// one epoch per stage.
    fn tiny_cascade(dir: &Path) {
        let recipe = TrainConfig {
            epochs: 1,
            batch_size: 64,
            optimizer: OptimizerConfig::adamw(3e-3, 0.0),
            ..Default::default()
        };
        let stage = |m: &str| StagePreset {
            model: m.parse().unwrap(),
            train: recipe.clone(),
        };
        let preset = Preset {
            name: "tiny-2".into(),
            dataset: "synthetic".into(),
            description: "two-stage test cascade on synthetic data".into(),
            val_fraction: 0.25,
            stages: vec![stage("linear"), stage("mlp-32")],
        };
        let mut opts = PretrainOptions::new(dir);
        opts.split = SplitConfig {
            synthetic: SyntheticConfig {
                n_train: 800,
                n_test: 200,
                ..Default::default()
            },
            ..Default::default()
        };
        pretrain(&preset, &opts).unwrap();
    }

    fn cli(args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["cascade"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)?.run()
    }

    #[test]
    fn train_then_eval_every_agent_kind() {
        let dir = tempfile::tempdir().unwrap();
        let cascade = dir.path().join("cascade");
        tiny_cascade(&cascade);
        let c = cascade.to_str().unwrap();
        let agents = dir.path().join("agents");
        let out = |name: &str| agents.join(name).to_str().unwrap().to_string();
        let quick = ["--epochs", "2", "--quiet", "--no-policy-cost"];
        let runs: Vec<(&str, Vec<&str>)> = vec![
            ("static-2", vec!["--agent", "static-2"]),
            ("oracle", vec!["--agent", "oracle"]),
            ("threshold", vec!["--agent", "threshold", "--alpha", "0.05"]),
            (
                "backward",
                vec!["--agent", "backward-induction", "--alpha", "0.05"],
            ),
            ("ann", vec!["--agent", "ann", "--budget", "0.5"]),
            (
                "entropy",
                vec!["--agent", "threshold", "--entropy", "--per-stage"],
            ),
            (
                "frozen",
                [&["--agent", "reinforce", "--frozen"][..], &quick[..]].concat(),
            ),
            (
                "joint",
                [
                    &["--agent", "reinforce", "--joint", "--budget", "0.5"][..],
                    &quick[..],
                ]
                .concat(),
            ),
        ];
        for (name, extra) in &runs {
            let o = out(name);
            let mut args = vec!["train", "--cascade", c, "--out", &o, "--seed", "1"];
            args.extend_from_slice(extra);
            cli(&args).unwrap_or_else(|e| panic!("train {name}: {e:#}"));
            cli(&["eval", "--agent-dir", &o, "--split", "test"])
                .unwrap_or_else(|e| panic!("eval {name}: {e:#}"));
            let d = agents.join(name);
            for f in [
                "agent.json",
                TRAIN_ARGS_FILE,
                TRAIN_SUMMARY_FILE,
                "eval_test.json",
                "eval_test.csv",
            ] {
                assert!(d.join(f).is_file(), "{name}: no {f}");
            }
            let r = cascade_agents::EvalReport::read_json(&d.join("eval_test.json")).unwrap();
            assert_eq!(
                (r.split.as_str(), r.n, r.num_stages),
                ("test", 200, 2),
                "{name}"
            );
        }
        // Reports follow the agent: static-2 always exits at stage 2 and the
        // frozen agent's log has one row per epoch run.
        let r =
            cascade_agents::EvalReport::read_json(&agents.join("static-2/eval_test.json")).unwrap();
        assert_eq!(r.exit_fraction, vec![0.0, 1.0]);
        let s: cascade_agents::TrainSummary = serde_json::from_slice(
            &std::fs::read(agents.join("frozen").join(TRAIN_SUMMARY_FILE)).unwrap(),
        )
        .unwrap();
        let log = std::fs::read_to_string(
            cascade_agents::AgentFolder::new(agents.join("frozen")).train_log(),
        )
        .unwrap();
        assert_eq!(log.lines().count(), 1 + s.epochs_run);
        // A budget agent is evaluated at the alpha it was selected at.
        let s: cascade_agents::TrainSummary = serde_json::from_slice(
            &std::fs::read(agents.join("joint").join(TRAIN_SUMMARY_FILE)).unwrap(),
        )
        .unwrap();
        let r =
            cascade_agents::EvalReport::read_json(&agents.join("joint/eval_test.json")).unwrap();
        assert_eq!(r.spec.alpha, s.alpha);
        // The joint agent carries its fine-tuned classifiers.
        assert!(agents.join("joint/cascade/cascade.json").is_file());
        let err = cli(&["eval", "--agent-dir", &out("joint"), "--cascade", c]).unwrap_err();
        assert!(format!("{err:#}").contains("trained jointly"), "{err:#}");

        // Bad arguments are refused with a clear message.
        let o = out("bad");
        for (args, want) in [
            (vec!["--agent", "static-3"], "out of range"),
            (vec!["--agent", "threshold", "--joint"], "reinforce only"),
            (vec!["--agent", "ppo"], "unknown agent"),
            (vec!["--agent", "oracle", "--loss", "hinge"], "unknown loss"),
        ] {
            let mut a = vec!["train", "--cascade", c, "--out", &o];
            a.extend_from_slice(&args);
            let err = format!("{:#}", cli(&a).unwrap_err());
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
