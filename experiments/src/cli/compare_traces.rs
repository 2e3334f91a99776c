//! `cascade compare-traces`: every stopping agent that needs only recorded
//! outputs, on a trace triple (train, val, test) written by any framework,
//! at a list of alphas or budgets, into one run folder laid out as a
//! study's: `results.csv`, `summary.md`, `config.json`, the agents'
//! folders under `agents/` and the figures (Pareto, sample distribution,
//! ...) under `figures/`. `cascade plot DIR` redraws it.
//!
//! ```text
//! cascade compare-traces --train train.safetensors --val val.safetensors \
//!     --test test.safetensors --alphas 0.01,0.03,0.1 --out runs/mine
//! cascade compare-traces ... --budgets 0.3,0.5 --agents threshold,ann --out runs/mine-budget
//! ```
//!
//! Agents are fitted on the training trace with every choice made on the
//! validation trace ([`cascade_agents::fit_on_traces`], as `cascade train
//! --train-trace` does); both the validation and the test trace are
//! evaluated, the test trace once per agent. The static stages and the
//! oracle are evaluated beside them, as in the studies.

use cascade_agents::AgentFolder;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cascade_agents::{
    counts_policy_cost, evaluate, fit_on_traces, Agent, AgentKind, EvalConfig, EvalReport, Family,
    OracleAgent, ReinforceConfig, StaticAgent, TrainOptions,
};
use cascade_env::{CostModel, Loss, Prediction, ReplayBackend, RewardSpec, StageBackend};
use clap::Args;

use crate::results::{write_results, ResultRow, RowId, RESULTS_FILE};
use crate::study::{CascadeInfo, RunRecord, StudyConfig, AGENTS_DIR, CONFIG_FILE};

/// The agents compared by default (every one that needs only recorded
/// outputs; the static stages and the oracle always come with them).
const DEFAULT_AGENTS: [AgentKind; 6] = [
    AgentKind::Threshold,
    AgentKind::ThresholdPerStage,
    AgentKind::ThresholdEntropy,
    AgentKind::BackwardInduction,
    AgentKind::Ann,
    AgentKind::ReinforceFrozen,
];

/// `cascade compare-traces`.
#[derive(Debug, Clone, Args)]
pub struct CompareTracesArgs {
    /// The training trace (fitting).
    #[arg(long)]
    pub train: PathBuf,
    /// The validation trace (thresholds, early stopping, budgets).
    #[arg(long)]
    pub val: PathBuf,
    /// The test trace (the report).
    #[arg(long)]
    pub test: PathBuf,
    /// The agents (default: threshold, threshold-per-stage,
    /// threshold-entropy, backward-induction, ann, reinforce-frozen).
    #[arg(long, value_delimiter = ',')]
    pub agents: Vec<AgentKind>,
    /// Prices of compute, loss per full-model cost (default 0.003, 0.01,
    /// 0.03, 0.1, 0.3).
    #[arg(long, value_delimiter = ',', conflicts_with = "budgets")]
    pub alphas: Vec<f64>,
    /// Cost budgets as fractions of the largest stage's cost (instead of
    /// alphas).
    #[arg(long, value_delimiter = ',')]
    pub budgets: Vec<f64>,
    /// Training seeds of REINFORCE (the other agents are deterministic).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub seeds: Vec<u64>,
    /// Loss in the reward: zero-one or cross-entropy.
    #[arg(long, default_value = "zero-one")]
    pub loss: Loss,
    /// Cost model: cumulative (separate networks) or exit (early exits).
    #[arg(long, default_value = "cumulative")]
    pub cost_model: CostModel,
    /// Prediction on stop: argmax or sample.
    #[arg(long, default_value = "argmax")]
    pub prediction: Prediction,
    /// REINFORCE: most epochs (default: its own).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Do not count the policy's own MACs into the cost (they are counted
    /// only when the traces' cost unit is MACs).
    #[arg(long)]
    pub no_policy_cost: bool,
    /// The run folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// `agent`'s reports on the validation and the test trace.
fn both(
    agent: &dyn Agent,
    val: &mut ReplayBackend,
    test: &mut ReplayBackend,
    spec: &RewardSpec,
    count_policy_cost: bool,
    seed: u64,
) -> anyhow::Result<(EvalReport, EvalReport)> {
    let cfg = |split: &str| EvalConfig {
        split: split.into(),
        seed,
        count_policy_cost,
        ..Default::default()
    };
    Ok((
        evaluate(agent, val, spec, &cfg("val"))?,
        evaluate(agent, test, spec, &cfg("test"))?,
    ))
}

fn load(path: &Path, what: &str) -> anyhow::Result<ReplayBackend> {
    ReplayBackend::load(path).with_context(|| format!("loading the {what} trace"))
}

fn save_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    cascade_rl::fsutil::write_atomic(path, &bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// The study configuration recorded in `config.json`: what the summary
/// and the figures read (agents, points, reward).
fn record(
    args: &CompareTracesArgs,
    kinds: &[AgentKind],
    alphas: &[f64],
    spec: RewardSpec,
    count_policy_cost: bool,
    test: &ReplayBackend,
    sizes: [usize; 3],
) -> anyhow::Result<RunRecord> {
    let meta = test.meta();
    // The quick preset names no data folder: nothing is looked up.
    let mut config = StudyConfig::preset("alpha_sweep", "quick", None)?;
    config.study = "compare_traces".into();
    config.preset = "traces".into();
    config.cascade = meta.cascade.clone();
    config.dataset = meta.dataset.clone();
    config.agents = kinds.to_vec();
    config.alphas = alphas.to_vec();
    config.budgets = args.budgets.clone();
    config.seeds = args.seeds.clone();
    config.reward = spec;
    config.count_policy_cost = count_policy_cost;
    config.specs.retain(|a| a.is_main());
    config.ablation_points.clear();
    config.oracle_alphas.clear();
    let k = test.num_stages();
    let cascade = CascadeInfo {
        preset: meta.cascade.clone(),
        dataset: meta.dataset.clone(),
        synthetic: meta.dataset == "synthetic",
        notice: None,
        data_source: format!(
            "recorded traces {}, {}, {}",
            args.train.display(),
            args.val.display(),
            args.test.display()
        ),
        stage_names: test.stage_names().to_vec(),
        // Costs in the traces' own unit, rounded (MACs when recorded as such).
        stage_macs: (0..k)
            .map(|t| test.stage_costs()[t].round().max(1.0) as u64)
            .collect(),
        class_names: test
            .class_names()
            .map(<[String]>::to_vec)
            .unwrap_or_else(|| (0..test.num_classes()).map(|c| c.to_string()).collect()),
        split_sizes: sizes,
    };
    Ok(RunRecord {
        config,
        cascade,
        device: "cpu".into(),
        agent_images: sizes[0],
        threads: 0,
    })
}

/// Runs `cascade compare-traces`.
pub fn run(args: &CompareTracesArgs) -> anyhow::Result<()> {
    let mut train = load(&args.train, "training")?;
    let mut val = load(&args.val, "validation")?;
    let mut test = load(&args.test, "test")?;
    let kinds: Vec<AgentKind> = if args.agents.is_empty() {
        DEFAULT_AGENTS.to_vec()
    } else {
        args.agents.clone()
    };
    if let Some(k) = kinds.iter().find(|k| k.joint()) {
        bail!("{k} fine-tunes the classifiers, which traces do not hold");
    }
    let budget_mode = !args.budgets.is_empty();
    let alphas: Vec<f64> = match (budget_mode, args.alphas.is_empty()) {
        (true, _) => Vec::new(),
        (false, true) => vec![0.003, 0.01, 0.03, 0.1, 0.3],
        (false, false) => args.alphas.clone(),
    };
    let spec0 = RewardSpec {
        alpha: 0.0,
        loss: args.loss,
        cost: args.cost_model,
        prediction: args.prediction,
    };
    let count = !args.no_policy_cost && counts_policy_cost(&train);
    let rec = record(
        args,
        &kinds,
        &alphas,
        spec0,
        count,
        &test,
        [train.num_samples(), val.num_samples(), test.num_samples()],
    )?;
    let (dataset, cascade) = (rec.config.dataset.clone(), rec.config.cascade.clone());
    std::fs::create_dir_all(args.out.join(AGENTS_DIR))
        .with_context(|| format!("creating {}", args.out.display()))?;

    let id = |agent: &'static str, kind: Family| RowId {
        agent,
        kind,
        alpha: None,
        budget: None,
        seed: None,
        dataset: "",
        cascade: "",
        agent_dir: "",
    };
    let mut rows = Vec::new();
    let k = test.num_stages();
    for t in 0..k {
        let a = StaticAgent::new(t, k)?;
        let (v, s) = both(&a, &mut val, &mut test, &spec0, count, 0)?;
        let name = a.name();
        let row_id = RowId {
            agent: &name,
            dataset: &dataset,
            cascade: &cascade,
            ..id("", Family::Static)
        };
        rows.push(ResultRow::from_reports(row_id, &v, &s, None));
    }
    let oracle = OracleAgent::new(k)?;
    let (v, s) = both(&oracle, &mut val, &mut test, &spec0, count, 0)?;
    rows.push(ResultRow::from_reports(
        RowId {
            dataset: &dataset,
            cascade: &cascade,
            ..id("oracle", Family::Oracle)
        },
        &v,
        &s,
        None,
    ));

    // (alpha, budget) per point: in budget mode, dual ascent / threshold
    // search starts from the study's starting alpha.
    let points: Vec<(f64, Option<f64>)> = if budget_mode {
        args.budgets
            .iter()
            .map(|&b| (rec.config.budget_alpha0, Some(b)))
            .collect()
    } else {
        alphas.iter().map(|&a| (a, None)).collect()
    };
    for &kind in &kinds {
        let seeds: Vec<Option<u64>> = if kind.seedless() {
            vec![None]
        } else {
            args.seeds.iter().map(|&s| Some(s)).collect()
        };
        for &(alpha, budget) in &points {
            for &seed in &seeds {
                let tag = match budget {
                    Some(b) => format!("b{b}"),
                    None => format!("a{alpha}"),
                };
                let mut folder = format!("{dataset}__{}__{tag}", kind.name());
                if let Some(s) = seed {
                    folder.push_str(&format!("__seed{s}"));
                }
                let rel = format!("{AGENTS_DIR}/{folder}");
                let dir = args.out.join(&rel);
                let s = seed.unwrap_or(0);
                let opts = TrainOptions {
                    spec: RewardSpec { alpha, ..spec0 },
                    budget,
                    seed: s,
                    quiet: true,
                    log_csv: (kind == AgentKind::ReinforceFrozen)
                        .then(|| dir.join(cascade_rl::checkpoint::TRAIN_LOG_FILE)),
                    count_policy_cost: count,
                    ..Default::default()
                };
                // REINFORCE as `cascade train --train-trace` runs it.
                let rc = (kind == AgentKind::ReinforceFrozen).then(|| {
                    let base = ReinforceConfig::frozen_learner(100);
                    ReinforceConfig {
                        epochs: args.epochs.unwrap_or(base.epochs),
                        ..base
                    }
                });
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let fitted = fit_on_traces(
                    kind.name(),
                    &mut train,
                    &mut val,
                    &opts,
                    rc,
                    (Some(&args.train), Some(&args.val)),
                )
                .with_context(|| format!("fitting {} at {tag}", kind.name()))?;
                fitted.save(&dir)?;
                let summary = fitted
                    .summary
                    .clone()
                    .context("fitting returned no training summary")?;
                let spec = RewardSpec {
                    alpha: summary.alpha,
                    ..spec0
                };
                let (v, t) = both(&*fitted.agent, &mut val, &mut test, &spec, count, s)?;
                v.write_json(&AgentFolder::new(&dir).eval_json("val"))?;
                t.write_json(&AgentFolder::new(&dir).eval_json("test"))?;
                let row_id = RowId {
                    agent: kind.name(),
                    kind: kind.family(),
                    alpha: Some(alpha),
                    budget,
                    seed,
                    dataset: &dataset,
                    cascade: &cascade,
                    agent_dir: &rel,
                };
                let row = ResultRow::from_reports(row_id, &v, &t, Some(&summary));
                if !args.quiet {
                    println!(
                        "{} {tag}{}: test error {:.2}%, cost {:.2}%",
                        kind.name(),
                        seed.map_or(String::new(), |s| format!(" seed {s}")),
                        row.error_pct,
                        row.cost_pct
                    );
                }
                rows.push(row);
            }
        }
    }
    write_results(&args.out.join(RESULTS_FILE), &rows)?;
    save_json(&args.out.join(CONFIG_FILE), &rec)?;
    let summary = crate::summary::write_summary(&args.out)?;
    let figures = crate::figures::draw_all(&args.out)?;
    println!(
        "wrote {} and {}",
        args.out.join(RESULTS_FILE).display(),
        summary.display()
    );
    for f in figures {
        println!("wrote {}", f.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use cascade_env::SyntheticTraceConfig;
    use clap::Parser;

    #[test]
    fn compares_every_agent_on_a_trace_triple_and_plot_redraws_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (seed, split) in [(0u64, "train"), (1, "val"), (2, "test")] {
            let t = ReplayBackend::synthetic(&SyntheticTraceConfig {
                num_samples: 200,
                seed,
                feature_dims: vec![3, 4, 5],
                ..Default::default()
            })
            .unwrap();
            let p = dir.path().join(format!("{split}.safetensors"));
            t.save(&p).unwrap();
            paths.push(p.to_str().unwrap().to_string());
        }
        let out = dir.path().join("run");
        let o = out.to_str().unwrap();
        let argv = [
            "cascade",
            "compare-traces",
            "--train",
            &paths[0],
            "--val",
            &paths[1],
            "--test",
            &paths[2],
            "--alphas",
            "0.01,0.1",
            "--epochs",
            "2",
            "--quiet",
            "--out",
            o,
        ];
        Cli::try_parse_from(argv).unwrap().run().unwrap();
        let rows = crate::results::read_results(&out.join(RESULTS_FILE)).unwrap();
        // 3 static + oracle + 6 agents x 2 alphas.
        assert_eq!(rows.len(), 3 + 1 + 6 * 2);
        assert!(rows.iter().all(|r| r.n == 200));
        for f in [
            "summary.md",
            "figures/pareto.png",
            "figures/sample_distribution.png",
        ] {
            assert!(out.join(f).is_file(), "no {f}");
        }
        std::fs::remove_file(out.join("figures/pareto.png")).unwrap();
        Cli::try_parse_from(["cascade", "plot", o])
            .unwrap()
            .run()
            .unwrap();
        assert!(out.join("figures/pareto.png").is_file());
    }
}
