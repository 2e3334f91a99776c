//! `cascade train --train-trace T --val-trace V` and `cascade eval
//! --trace TEST`: agents on recorded outputs, whatever framework wrote the
//! traces (`cascade_env.write_trace` in Python, [`cascade_env::TraceArrays`]
//! in Rust, `cascade export-trace` for this toolkit's cascades).
//!
//! ```text
//! cascade train --train-trace train.safetensors --val-trace val.safetensors \
//!     --agent ann --alpha 0.05 --out agents/ann
//! cascade eval --agent agents/ann --trace test.safetensors
//! ```
//!
//! The agents are those that need only recorded outputs
//! ([`cascade_agents::TRACE_AGENTS`]); they are built and fitted by
//! [`cascade_agents::fit_on_traces`], the function the Python package's
//! `cascade_env.agents.fit` calls, so both give the same agent. The policy's
//! own MACs are counted into the cost only when the traces' cost unit is
//! `MACs` (and not with `--no-policy-cost`).

use std::path::Path;

use anyhow::{bail, Context};
use cascade_agents::{
    counts_policy_cost, fit_on_traces, ActMode, EvalConfig, ReinforceConfig, TraceAgent,
    TrainOptions,
};
use cascade_env::{ReplayBackend, RewardSpec};

use super::eval::EvalArgs;
use super::train::TrainArgs;

fn load(path: &Path, what: &str) -> anyhow::Result<ReplayBackend> {
    ReplayBackend::load(path).with_context(|| format!("loading the {what} trace"))
}

/// The agent name `args` asks for on traces (`threshold` with
/// `--per-stage` is `threshold-per-stage`, ...).
fn trace_agent_name(args: &TrainArgs) -> anyhow::Result<String> {
    if args.joint || args.init.is_some() || args.classifier_lr.is_some() {
        bail!(
            "--joint, --init and --classifier-lr fine-tune the classifiers, which traces do not \
             hold; on traces REINFORCE trains the policy only (--agent reinforce-frozen)"
        );
    }
    if args.data_dir.is_some() {
        bail!("--data-dir does not apply to --train-trace: the traces hold the data");
    }
    let name = match (args.agent.as_str(), args.per_stage, args.entropy) {
        (_, true, true) => {
            bail!("on traces, give threshold-per-stage or threshold-entropy, not both")
        }
        ("threshold", true, false) => "threshold-per-stage".to_string(),
        ("threshold", false, true) => "threshold-entropy".to_string(),
        (other, false, false) => other.to_string(),
        (other, _, _) => bail!("--per-stage and --entropy apply to --agent threshold, not {other}"),
    };
    let reinforce = matches!(name.as_str(), "reinforce" | "reinforce-frozen" | "frozen");
    let reinforce_flags = args.epochs.is_some()
        || args.batch_size.is_some()
        || args.lr.is_some()
        || args.hidden.is_some()
        || args.patience.is_some()
        || args.policy_inputs.is_some()
        || args.start.is_some()
        || args.estimator.is_some()
        || args.entropy_coef.is_some();
    if reinforce_flags && !reinforce {
        bail!("the REINFORCE flags (--epochs, --lr, ...) apply to --agent reinforce-frozen only");
    }
    Ok(name)
}

/// The REINFORCE settings of `args`: the defaults with the flags given on top.
pub fn reinforce_config(args: &TrainArgs) -> ReinforceConfig {
    super::train::with_reinforce_flags(args, ReinforceConfig::frozen_learner(100))
}

/// `cascade train --train-trace T --val-trace V`.
pub fn train(args: &TrainArgs, train_path: &Path, val_path: &Path) -> anyhow::Result<()> {
    let name = trace_agent_name(args)?;
    let mut train = load(train_path, "training")?;
    let mut val = load(val_path, "validation")?;
    let spec = RewardSpec {
        alpha: args.alpha,
        loss: args.loss,
        cost: args.cost_model,
        prediction: args.prediction,
    };
    spec.validate()?;
    let is_reinforce = matches!(name.as_str(), "reinforce" | "reinforce-frozen" | "frozen");
    // Built beside --out until complete, then swapped in whole; a folder
    // holding another result is refused unless --overwrite.
    let folder = cascade_rl::folder::NewFolder::begin(
        &args.out,
        super::train::AGENT_FOLDER,
        if args.overwrite {
            cascade_rl::folder::Replace::SameKind
        } else {
            cascade_rl::folder::Replace::Nothing
        },
    )?;
    let out = folder.path().to_path_buf();
    let opts = TrainOptions {
        spec,
        budget: args.budget,
        seed: args.seed,
        quiet: args.quiet,
        log_csv: is_reinforce.then(|| cascade_agents::AgentFolder::new(&out).train_log()),
        count_policy_cost: !args.no_policy_cost && counts_policy_cost(&train),
        ..Default::default()
    };
    let fitted = fit_on_traces(
        &name,
        &mut train,
        &mut val,
        &opts,
        is_reinforce.then(|| reinforce_config(args)),
        (Some(train_path), Some(val_path)),
    )?;
    fitted.save(&out)?;
    folder.commit()?;
    if let Some(s) = &fitted.summary {
        println!(
            "{}: validation error {:.2}%, cost {:.2}% of the largest stage, mean reward {:.4} (alpha {:.4}{})",
            fitted.agent.name(),
            100.0 * s.val_error,
            100.0 * s.val_cost,
            s.val_mean_reward,
            s.alpha,
            match (s.budget, s.budget_met) {
                (Some(b), Some(true)) => format!(", budget {b} met"),
                (Some(b), _) => format!(", budget {b} NOT met"),
                _ => String::new(),
            },
        );
    }
    println!(
        "wrote {}; evaluate with `cascade eval --agent {} --trace TEST`",
        args.out.display(),
        args.out.display()
    );
    Ok(())
}

/// `cascade eval --agent DIR --trace TEST`: writes `eval_{split}.json` and
/// `.csv` (split: the trace's) into the agent folder, or `--out PREFIX`.
pub fn eval(args: &EvalArgs, trace_path: &Path) -> anyhow::Result<()> {
    if args.cascade.is_some() || args.data_dir.is_some() {
        bail!("--trace holds the data: --cascade and --data-dir do not apply");
    }
    let dir = &args.agent_dir;
    let fitted = TraceAgent::load(dir)?;
    if fitted.agent.classifiers().is_some() {
        bail!(
            "{} was trained jointly: it is evaluated on its own fine-tuned classifiers, not on a trace",
            dir.display()
        );
    }
    let mut trace = load(trace_path, "test")?;
    let base = fitted.trained_spec();
    let spec = RewardSpec {
        alpha: args.alpha.unwrap_or(base.alpha),
        loss: args.loss.unwrap_or(base.loss),
        cost: args.cost_model.unwrap_or(base.cost),
        prediction: args.prediction.unwrap_or(base.prediction),
    };
    spec.validate()?;
    let split = trace.meta().split.clone();
    let cfg = EvalConfig {
        split: split.clone(),
        seed: args.seed,
        num_envs: args.num_envs,
        mode: if args.sample {
            ActMode::Sample
        } else {
            ActMode::Greedy
        },
        count_policy_cost: !args.no_policy_cost && fitted.counts_policy_cost(&trace),
    };
    let report =
        cascade_agents::evaluate(&*fitted.agent, &mut trace, &spec, &cfg).with_context(|| {
            format!(
                "evaluating {} on {}",
                fitted.agent.name(),
                trace_path.display()
            )
        })?;
    let (json, csv) = super::eval::write_report(&report, args.out.as_deref(), dir, &split)?;
    let exits: Vec<String> = report
        .exit_fraction
        .iter()
        .map(|f| format!("{:.1}%", 100.0 * f))
        .collect();
    println!(
        "{} on {} (trace {}, {} samples): error {:.2}%, cost {:.2}% of the largest stage, mean reward {:.4} (alpha {}), exits per stage [{}]",
        report.agent,
        trace_path.display(),
        &trace.content_sha256()[..12],
        report.n,
        100.0 * report.error,
        report.cost_pct_mean,
        report.mean_reward,
        report.spec.alpha,
        exits.join(", "),
    );
    println!("wrote {} and {}", json.display(), csv.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use cascade_agents::{EvalReport, TRACE_RECORD_FILE};
    use cascade_env::{StageBackend, SyntheticTraceConfig, TraceArrays};
    use clap::Parser;

    fn cli(args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["cascade"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)?.run()
    }

    /// A trace written from arrays (the synthetic trace's, passed through
    /// the writer as any framework's arrays would be).
    fn write(path: &Path, seed: u64, split: &str) {
        let src = ReplayBackend::synthetic(&SyntheticTraceConfig {
            num_samples: 240,
            seed,
            feature_dims: vec![4, 6, 8],
            ..Default::default()
        })
        .unwrap();
        let stages = (0..3)
            .map(|t| cascade_env::StageArrays {
                name: format!("m{t}"),
                cost: src.stage_costs()[t],
                features: src.stage_features(t).to_vec(),
                feature_dim: src.feature_dims()[t],
                scores: cascade_env::StageScores::Probs(src.stage_probs(t).to_vec()),
            })
            .collect();
        TraceArrays {
            stages,
            labels: src.labels().iter().map(|&y| y as i64).collect(),
            split: split.into(),
            ..Default::default()
        }
        .write(path)
        .unwrap();
    }

    #[test]
    fn train_and_eval_on_traces_decide_as_fit_on_traces() {
        let dir = tempfile::tempdir().unwrap();
        let p = |s: &str| dir.path().join(format!("{s}.safetensors"));
        for (seed, split) in [(0, "train"), (1, "val"), (2, "test")] {
            write(&p(split), seed, split);
        }
        let (tr, va, te) = (p("train"), p("val"), p("test"));
        let s = |x: &Path| x.to_str().unwrap().to_string();
        let (tr_s, va_s, te_s) = (s(&tr), s(&va), s(&te));
        for (name, extra) in [
            ("static-2", vec![]),
            ("oracle", vec![]),
            ("threshold", vec!["--per-stage"]),
            ("backward-induction", vec![]),
            ("ann", vec!["--budget", "0.5"]),
            ("reinforce-frozen", vec!["--epochs", "2", "--hidden", "8"]),
        ] {
            let out = dir.path().join(name);
            let o = s(&out);
            let mut args = vec![
                "train",
                "--train-trace",
                &tr_s,
                "--val-trace",
                &va_s,
                "--agent",
                name,
                "--alpha",
                "0.05",
                "--seed",
                "3",
                "--quiet",
                "--out",
                &o,
            ];
            args.extend_from_slice(&extra);
            cli(&args).unwrap_or_else(|e| panic!("train {name}: {e:#}"));
            assert!(out.join(TRACE_RECORD_FILE).is_file(), "{name}");
            cli(&["eval", "--agent", &o, "--trace", &te_s])
                .unwrap_or_else(|e| panic!("eval {name}: {e:#}"));
            let cli_report = EvalReport::read_json(&out.join("eval_test.json")).unwrap();
            assert_eq!((cli_report.n, cli_report.split.as_str()), (240, "test"));

            // The library call the Python package makes decides the same.
            let fit_name = if name == "threshold" {
                "threshold-per-stage"
            } else {
                name
            };
            let budget = extra.contains(&"--budget").then_some(0.5);
            let opts = TrainOptions {
                spec: RewardSpec::with_alpha(0.05),
                budget,
                seed: 3,
                quiet: true,
                count_policy_cost: false,
                ..Default::default()
            };
            // The CLI's defaults (the frozen learner) with its flags on top:
            // a hidden layer starts fresh instead of from ann's rule.
            let rc = (name == "reinforce-frozen").then(|| ReinforceConfig {
                epochs: 2,
                hidden: 8,
                init: cascade_agents::PolicyInit::Fresh,
                ..ReinforceConfig::frozen_learner(100)
            });
            let (mut a, mut b, mut c) = (
                load(&tr, "").unwrap(),
                load(&va, "").unwrap(),
                load(&te, "").unwrap(),
            );
            let lib = fit_on_traces(fit_name, &mut a, &mut b, &opts, rc, (None, None)).unwrap();
            let lib_report = lib.evaluate(&mut c, None).unwrap();
            assert_eq!(lib_report.sample_exits, cli_report.sample_exits, "{name}");
            // The same decisions; the mean may differ in its last bit
            // (summed in another order).
            assert!(
                (lib_report.mean_reward - cli_report.mean_reward).abs() < 1e-12,
                "{name}: {} vs {}",
                lib_report.mean_reward,
                cli_report.mean_reward
            );
        }
        // Flags that need the classifiers are refused on traces.
        let o = s(&dir.path().join("bad"));
        let base = [
            "train",
            "--train-trace",
            &tr_s,
            "--val-trace",
            &va_s,
            "--out",
            &o,
        ];
        for (extra, want) in [
            (
                vec!["--agent", "reinforce", "--joint"],
                "fine-tune the classifiers",
            ),
            (
                vec!["--agent", "ann", "--epochs", "3"],
                "reinforce-frozen only",
            ),
            (
                vec!["--agent", "reinforce-joint"],
                "fine-tunes the classifiers",
            ),
        ] {
            let mut a = base.to_vec();
            a.extend_from_slice(&extra);
            let e = format!("{:#}", cli(&a).unwrap_err());
            assert!(e.contains(want), "{extra:?}: {e}");
        }
        let e = format!(
            "{:#}",
            cli(&[
                "train",
                "--train-trace",
                &tr_s,
                "--agent",
                "ann",
                "--out",
                &o
            ])
            .unwrap_err()
        );
        assert!(e.contains("--val-trace"), "{e}");
    }
}
