//! `cascade eval`: evaluate a saved agent on a split of its cascade's data
//! and write the report as JSON and CSV.
//!
//! ```text
//! cascade eval --agent-dir runs/fmnist/agents/reinforce-frozen-a0.1-s0 --split test
//! ```
//!
//! The cascade is the one the agent was trained on (from the agent
//! folder's `train_args.json`, or `--cascade`); a jointly trained agent is
//! always evaluated on its own fine-tuned classifiers (`cascade/` in its
//! folder). The reward is the one the agent was trained with unless flags
//! override it; for an agent trained to a budget, alpha is the multiplier
//! it was selected at (`train_summary.json`). The samples run through the env over the live candle
//! backend, which runs each stage only for the samples that reach it.
//! Writes `eval_{split}.json` and `eval_{split}.csv` into the agent folder
//! (or `--out PREFIX` + `.json` / `.csv`). The JSON records what was
//! evaluated: the agent and cascade folders with their content hashes. A
//! cascade whose hash differs from the one recorded at training
//! (`train_args.json`) is refused unless `--other-cascade`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cascade_agents::{
    evaluate, load_agent, read_manifest, ActMode, AgentState, EvalConfig, Evaluated, TrainSummary,
};
use cascade_env::{CostModel, Loss, Prediction, RewardSpec};
use cascade_rl::backend::{cascade_splits, CandleBackend, DEFAULT_BATCH};
use cascade_rl::cascade::Cascade;
use cascade_rl::device::DeviceSpec;
use clap::Args;

use super::train::{TrainRecord, TRAIN_ARGS_FILE};

/// `cascade eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Agent folder written by `cascade train`.
    #[arg(long, visible_alias = "agent")]
    pub agent_dir: PathBuf,
    /// Evaluate on this recorded trace (any framework's) instead of a
    /// split of the cascade's data.
    #[arg(long, conflicts_with_all = ["cascade", "data_dir"])]
    pub trace: Option<PathBuf>,
    /// Split: test, val or train.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Pretrained cascade folder (default: the one in the agent's train_args.json).
    #[arg(long)]
    pub cascade: Option<PathBuf>,
    /// Alpha of the reported reward (default: the one trained with).
    #[arg(long, allow_negative_numbers = true)]
    pub alpha: Option<f64>,
    /// Loss: zero-one or cross-entropy (default: as trained).
    #[arg(long)]
    pub loss: Option<Loss>,
    /// Cost model: cumulative or exit (default: as trained).
    #[arg(long)]
    pub cost_model: Option<CostModel>,
    /// Prediction: argmax or sample (default: as trained).
    #[arg(long)]
    pub prediction: Option<Prediction>,
    /// Sample actions from the stop probabilities instead of acting greedily.
    #[arg(long)]
    pub sample: bool,
    /// Seed of sampled actions and predictions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not count the policy's own MACs into the cost (default: as trained).
    #[arg(long)]
    pub no_policy_cost: bool,
    /// Sub-envs run in lock step.
    #[arg(long, default_value_t = 256)]
    pub num_envs: usize,
    /// Output prefix (default: AGENT_DIR/eval_SPLIT); a folder (an existing
    /// one, or a path ending in `/`) gets FOLDER/eval_SPLIT.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Folder holding the data set (default: as trained, else discovery).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Samples per forward pass of the classifiers.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    /// Evaluate on a cascade other than the one the agent was trained on
    /// (refused otherwise: the content hashes must match).
    #[arg(long)]
    pub other_cascade: bool,
}

/// Runs `cascade eval`.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    if let Some(trace) = &args.trace {
        return super::traces::eval(args, trace);
    }
    let dir = &args.agent_dir;
    if let Some(out) = &args.out {
        cascade_rl::folder::check_utf8(out)?;
    }
    let manifest = read_manifest(dir)?;
    let agent = load_agent(dir)?;
    let record: Option<TrainRecord> =
        match std::fs::read(cascade_agents::AgentFolder::new(dir).train_args()) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "reading {}",
                    cascade_agents::AgentFolder::new(dir).train_args().display()
                )
            })?),
            Err(_) => None,
        };

    // The classifiers: the agent's own when it fine-tuned them.
    let own = match &manifest.state {
        AgentState::Reinforce(s) => s.cascade_dir.as_ref().map(|c| dir.join(c)),
        _ => None,
    };
    let own_classifiers = own.is_some();
    let cascade_dir = match (own, &args.cascade) {
        (Some(_), Some(given)) => bail!(
            "{} was trained jointly: it is evaluated on its own fine-tuned classifiers, not on {}",
            dir.display(),
            given.display()
        ),
        (Some(own), None) => own,
        (None, Some(given)) => given.clone(),
        (None, None) => match &record {
            Some(r) => r.cascade.clone(),
            None => bail!(
                "{} has no {TRAIN_ARGS_FILE}: name the cascade with --cascade",
                dir.display()
            ),
        },
    };
    let device = args.device.parse::<DeviceSpec>()?.open()?;
    let cascade = Cascade::load(&cascade_dir, &device, None, None)
        .with_context(|| format!("loading the cascade in {}", cascade_dir.display()))?;
    // The classifiers must be the ones the agent was trained on: same
    // shape is not enough (another seed, or the folder pretrained again).
    let cascade_hash = crate::provenance::cascade_hash(&cascade_dir)?;
    let trained_on = record.as_ref().and_then(|r| r.cascade_hash.clone());
    match trained_on {
        Some(want) if !own_classifiers && want != cascade_hash && !args.other_cascade => bail!(
            "{} was trained on a cascade with content hash {want}, but {} has hash {cascade_hash} (another cascade, or the folder pretrained again); evaluate it on the cascade it was trained on, or pass --other-cascade to evaluate it on this one anyway",
            dir.display(),
            cascade_dir.display()
        ),
        Some(want) if want != cascade_hash && !own_classifiers => eprintln!(
            "note: evaluating on {} (hash {cascade_hash}), not the cascade the agent was trained on (hash {want})",
            cascade_dir.display()
        ),
        None if !own_classifiers => eprintln!(
            "note: {} records no cascade hash, so {} cannot be checked against the cascade it was trained on",
            dir.display(),
            cascade_dir.display()
        ),
        _ => {}
    }
    let agent_hash = crate::provenance::agent_hash(dir)?;
    if cascade.is_synthetic() {
        eprintln!("{}", cascade_rl::data::SYNTHETIC_NOTICE);
    }
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| record.as_ref().and_then(|r| r.data_dir.clone()));
    let splits = cascade_splits(&cascade, data_dir.as_deref())?;
    let ds = match args.split.as_str() {
        "test" => &splits.test,
        "val" | "validation" => &splits.val,
        "train" => &splits.train,
        other => bail!("unknown split '{other}': use test, val or train"),
    };

    // The reward: as trained (with a budget, at the alpha the kept agent
    // was selected at), flags on top.
    let trained = manifest.trained_with.clone();
    let mut base = trained.as_ref().map(|o| o.spec).unwrap_or_default();
    if trained.as_ref().is_some_and(|o| o.budget.is_some()) {
        if let Ok(bytes) = std::fs::read(cascade_agents::AgentFolder::new(dir).train_summary()) {
            let s: TrainSummary = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "reading {}",
                    cascade_agents::AgentFolder::new(dir)
                        .train_summary()
                        .display()
                )
            })?;
            base.alpha = s.alpha;
        }
    }
    let spec = RewardSpec {
        alpha: args.alpha.unwrap_or(base.alpha),
        loss: args.loss.unwrap_or(base.loss),
        cost: args.cost_model.unwrap_or(base.cost),
        prediction: args.prediction.unwrap_or(base.prediction),
    };
    spec.validate()?;
    let count_policy_cost =
        !args.no_policy_cost && trained.as_ref().is_none_or(|o| o.count_policy_cost);
    let cfg = EvalConfig {
        split: args.split.clone(),
        seed: args.seed,
        num_envs: args.num_envs,
        mode: if args.sample {
            ActMode::Sample
        } else {
            ActMode::Greedy
        },
        count_policy_cost,
    };
    let mut backend = CandleBackend::new(&cascade, ds, args.batch)?;
    let mut report = evaluate(&*agent, &mut backend, &spec, &cfg)
        .with_context(|| format!("evaluating {} on the {} split", agent.name(), args.split))?;
    report.evaluated = Some(Evaluated {
        agent_dir: dir.display().to_string(),
        agent_hash,
        cascade_dir: cascade_dir.display().to_string(),
        cascade_hash,
    });
    let (json, csv) = write_report(&report, args.out.as_deref(), dir, &args.split)?;
    let exits: Vec<String> = report
        .exit_fraction
        .iter()
        .map(|f| format!("{:.1}%", 100.0 * f))
        .collect();
    println!(
        "{} on {} ({} samples): error {:.2}%, cost {:.2}% +- {:.2}% of the largest stage, mean reward {:.4} (alpha {}), exits per stage [{}], {:.1} s",
        report.agent,
        report.split,
        report.n,
        100.0 * report.error,
        report.cost_pct_mean,
        report.cost_pct_std,
        report.mean_reward,
        report.spec.alpha,
        exits.join(", "),
        report.wall_seconds
    );
    println!("wrote {} and {}", json.display(), csv.display());
    Ok(())
}

/// Where `cascade eval` writes: `out` + `.json`/`.csv`, or, when `out` is a
/// folder (an existing one, or a path ending in a separator), the default
/// name `eval_SPLIT` inside it; without `out`, inside the agent folder.
/// Writes `report` as `PREFIX.json` and `PREFIX.csv` (the prefix from
/// [`output_prefix`]); returns the two paths.
pub(super) fn write_report(
    report: &cascade_agents::EvalReport,
    out: Option<&Path>,
    agent_dir: &Path,
    split: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let prefix = output_prefix(out, agent_dir, split);
    let with_ext = |ext: &str| {
        let mut p = prefix.clone().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    };
    let (json, csv) = (with_ext(".json"), with_ext(".csv"));
    report.write_json(&json)?;
    report.write_csv(&csv)?;
    Ok((json, csv))
}

fn output_prefix(out: Option<&Path>, agent_dir: &Path, split: &str) -> PathBuf {
    let name = format!("eval_{split}");
    match out {
        None => agent_dir.join(name),
        Some(p)
            if p.is_dir()
                || p.as_os_str()
                    .to_string_lossy()
                    .ends_with(std::path::MAIN_SEPARATOR) =>
        {
            p.join(name)
        }
        Some(p) => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_folder_gets_the_default_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let agent = Path::new("agent");
        assert_eq!(output_prefix(None, agent, "test"), agent.join("eval_test"));
        let existing = dir.path();
        assert_eq!(
            output_prefix(Some(existing), agent, "val"),
            existing.join("eval_val")
        );
        let fresh = PathBuf::from(format!("{}/new/", existing.display()));
        assert_eq!(
            output_prefix(Some(&fresh), agent, "val"),
            existing.join("new").join("eval_val")
        );
        let file = existing.join("mine");
        assert_eq!(output_prefix(Some(&file), agent, "val"), file);
    }
}
