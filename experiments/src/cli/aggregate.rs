//! `cascade aggregate RUN_DIR...`: one table over several runs of the same
//! study that differ only in the cascade's seed (data split, pretraining,
//! temperatures), so the spread covers every source of randomness: the
//! cascade seeds and, inside each run, the agents' seeds.
//!
//! For every agent and operating point present in every run it reports the
//! test error and FLOPs as mean ± standard deviation over all (cascade
//! seed, agent seed) rows, and the standard deviation of the per-cascade
//! means (the part of the spread the cascades alone cause). Runs must agree
//! on everything but the cascade seed; the tables are Markdown, written to
//! `--out` (atomically) and printed. Agents and points that some runs lack
//! are left out of the table and named (a warning and a list under it); the
//! Markdown ends with the hash of every `results.csv` it was made from.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context};
use cascade_agents::Family;
use clap::Args;

use crate::results::{fmt_mean_sd, mean_std, read_results, ResultRow, RESULTS_FILE};

/// A standard deviation with two decimals, `–` where it is not defined.
fn fmt_sd(sd: f64) -> String {
    if sd.is_finite() {
        format!("{sd:.2}")
    } else {
        "–".into()
    }
}
use crate::study::read_run_record;
use crate::summary::points;

/// `cascade aggregate`.
#[derive(Debug, Args)]
pub struct AggregateArgs {
    /// Run folders of the same study with different cascade seeds.
    #[arg(required = true, num_args = 1..)]
    pub run_dirs: Vec<PathBuf>,
    /// Write the Markdown here as well.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The agents of the table, in display order (the rest by name): those
/// in every run; the others are named in `dropped`.
fn agent_order(
    rows: &[Vec<ResultRow>],
    dirs: &[PathBuf],
    dropped: &mut Vec<String>,
) -> Vec<String> {
    let mut names: Vec<String> = rows
        .iter()
        .flatten()
        .filter(|r| r.seed.is_some() || matches!(r.kind, Family::Threshold | Family::Backward))
        .map(|r| r.agent.clone())
        .collect();
    names.sort_by_key(|a| (crate::results::agent_rank(a), a.clone()));
    names.dedup();
    names.retain(|a| {
        let missing: Vec<String> = rows
            .iter()
            .zip(dirs)
            .filter(|(run, _)| !run.iter().any(|r| &r.agent == a))
            .map(|(_, d)| d.display().to_string())
            .collect();
        if !missing.is_empty() {
            dropped.push(format!("agent {a}: not in {}", missing.join(", ")));
        }
        missing.is_empty()
    });
    names
}

/// The Markdown of the aggregate over `run_dirs`. Agents and operating
/// points that some runs lack are left out of the table, and the returned
/// list (also a section of the Markdown) says which.
pub fn aggregate_markdown(run_dirs: &[PathBuf]) -> anyhow::Result<(String, Vec<String>)> {
    let mut runs = Vec::new();
    let mut records = Vec::new();
    let mut hashes = Vec::new();
    let mut dropped = Vec::new();
    for d in run_dirs {
        let rec = read_run_record(d).with_context(|| format!("reading {}", d.display()))?;
        let file = d.join(RESULTS_FILE);
        let rows = read_results(&file)
            .with_context(|| format!("reading the results of {}", d.display()))?;
        hashes.push(format!(
            "`{}` (hash {})",
            file.display(),
            crate::provenance::file_hash(&file)?
        ));
        records.push(rec);
        runs.push(rows);
    }
    let first = &records[0].config;
    let mut seeds = Vec::new();
    for (d, rec) in run_dirs.iter().zip(&records) {
        let mut a = rec.config.identity();
        let mut b = first.identity();
        for v in [&mut a, &mut b] {
            if let Some(p) = v.get_mut("pretrain").and_then(|p| p.as_object_mut()) {
                p.remove("seed");
            }
        }
        let changed = first.changed_agents(&rec.config);
        if a != b || !changed.is_empty() {
            bail!(
                "{} was run with other settings than {} (besides the cascade seed){}",
                d.display(),
                run_dirs[0].display(),
                if changed.is_empty() {
                    String::new()
                } else {
                    format!(": agents {}", changed.join(", "))
                }
            );
        }
        if seeds.contains(&rec.config.pretrain.seed) {
            bail!(
                "two runs share cascade seed {}: {}",
                rec.config.pretrain.seed,
                d.display()
            );
        }
        seeds.push(rec.config.pretrain.seed);
    }
    let setting = if first.budget_mode() {
        "budget"
    } else {
        "alpha"
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# {}: {} runs, cascade seeds {:?}\n\nTest error % and FLOPs % (of the largest stage) as mean ± sample standard deviation (n - 1) over every (cascade seed, agent seed) row (`rows` says how many; a seedless rule has one row per cascade); `between cascades` is the sample standard deviation of the per-cascade means.\n\n| agent | {setting} | rows | test error % | between cascades | FLOPs % |\n|---|---:|---:|---:|---:|---:|",
        first.study,
        runs.len(),
        seeds
    );
    // The static stages first.
    let k = runs
        .iter()
        .map(|rows| {
            rows.iter()
                .filter(|r| r.agent.starts_with("static-"))
                .count()
        })
        .max()
        .unwrap_or(0);
    for t in 1..=k {
        let name = format!("static-{t}");
        let errs: Vec<f64> = runs
            .iter()
            .filter_map(|rows| rows.iter().find(|r| r.agent == name))
            .map(|r| r.error_pct)
            .collect();
        if errs.len() == runs.len() {
            let (m, sd) = mean_std(&errs);
            let _ = writeln!(
                s,
                "| {name} | | {} | {} | {} | |",
                errs.len(),
                fmt_mean_sd(m, sd),
                fmt_sd(sd)
            );
        } else {
            dropped.push(format!(
                "{name}: in {} of the {} runs",
                errs.len(),
                runs.len()
            ));
        }
    }
    for agent in agent_order(&runs, run_dirs, &mut dropped) {
        let per_run: Vec<_> = runs.iter().map(|rows| points(rows, &agent)).collect();
        // Every operating point of any run, in the first run's order.
        let mut settings: Vec<(Option<f64>, Option<f64>)> = Vec::new();
        for p in per_run.iter().flatten() {
            if !settings.contains(&(p.alpha, p.budget)) {
                settings.push((p.alpha, p.budget));
            }
        }
        for (alpha, budget) in settings {
            let same: Vec<_> = per_run
                .iter()
                .filter_map(|pts| pts.iter().find(|p| p.alpha == alpha && p.budget == budget))
                .collect();
            let p0 = same[0];
            if same.len() != runs.len() {
                dropped.push(format!(
                    "{agent} at {setting} {}: in {} of the {} runs",
                    budget.or(alpha).map_or(String::new(), |v| v.to_string()),
                    same.len(),
                    runs.len()
                ));
                continue;
            }
            let all_err: Vec<f64> = same
                .iter()
                .flat_map(|p| p.rows.iter().map(|r| r.error_pct))
                .collect();
            let all_cost: Vec<f64> = same
                .iter()
                .flat_map(|p| p.rows.iter().map(|r| r.cost_pct))
                .collect();
            let means: Vec<f64> = same.iter().map(|p| p.error.0).collect();
            let (e, esd) = mean_std(&all_err);
            let (c, csd) = mean_std(&all_cost);
            let _ = writeln!(
                s,
                "| {agent} | {} | {} | {} | {} | {} |",
                p0.budget
                    .or(p0.alpha)
                    .map_or(String::new(), |v| v.to_string()),
                all_err.len(),
                fmt_mean_sd(e, esd),
                fmt_sd(mean_std(&means).1),
                fmt_mean_sd(c, csd)
            );
        }
    }
    if !dropped.is_empty() {
        let _ = writeln!(
            s,
            "\nLeft out, not in every run (the table compares only what every run has):\n"
        );
        for d in &dropped {
            let _ = writeln!(s, "- {d}");
        }
    }
    let _ = writeln!(s, "\nMade from {}.", hashes.join(", "));
    Ok((s, dropped))
}

/// Runs `cascade aggregate`.
pub fn run(args: &AggregateArgs) -> anyhow::Result<()> {
    if let Some(out) = &args.out {
        cascade_rl::folder::check_utf8(out)?;
        if out.is_dir() {
            bail!(
                "{}: a folder; --out names the Markdown file to write",
                out.display()
            );
        }
    }
    let (md, dropped) = aggregate_markdown(&args.run_dirs)?;
    for d in &dropped {
        eprintln!("warning: left out of the table, not in every run: {d}");
    }
    if let Some(out) = &args.out {
        cascade_rl::fsutil::write_atomic(out, md.as_bytes())
            .map_err(|e| crate::error::Error::io(out, e))?;
    }
    print!("{md}");
    Ok(())
}
