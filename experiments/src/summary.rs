//! `summary.md`: the paper's table from a run folder's `results.csv` and
//! `config.json`, and the aggregation over seeds it (and the figures)
//! share.
//!
//! The table: the static stages, then the threshold, frozen and joint
//! agents each at the operating point whose mean VALIDATION error is
//! closest to the largest stage's validation error (ties: the lower
//! validation cost), then the oracle. The test split chooses nothing: its
//! numbers are only reported.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{write_file, Result};
use crate::results::{group_by_point, mean_std, read_results, ResultRow, RESULTS_FILE};
use crate::study::{read_run_record, CascadeInfo, RunRecord};
use cascade_agents::AgentKind;

/// File name of the summary in a run folder.
pub const SUMMARY_FILE: &str = "summary.md";

/// One operating point of one agent, over its seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct PointStats<'a> {
    /// Agent name.
    pub agent: String,
    /// Alpha (trained / calibrated at).
    pub alpha: Option<f64>,
    /// Budget (budget mode).
    pub budget: Option<f64>,
    /// The rows, one per seed, in seed order.
    pub rows: Vec<&'a ResultRow>,
    /// Test error %, mean and standard deviation over seeds.
    pub error: (f64, f64),
    /// Test cost %, mean and standard deviation over seeds.
    pub cost: (f64, f64),
    /// Validation error %, mean over seeds.
    pub val_error: f64,
    /// Validation cost %, mean over seeds.
    pub val_cost: f64,
    /// Exit fraction per stage, mean over seeds.
    pub exit_fraction: Vec<f64>,
}

impl PointStats<'_> {
    /// The sweep value: `budget B` or `alpha A` (empty for alpha-free agents).
    pub fn setting(&self) -> String {
        match (self.budget, self.alpha) {
            (Some(b), _) => format!("budget {b}"),
            (None, Some(a)) => format!("alpha {a}"),
            (None, None) => String::new(),
        }
    }
}

/// Every operating point of `agent` in `rows`, in sweep order.
pub fn points<'a>(rows: &'a [ResultRow], agent: &str) -> Vec<PointStats<'a>> {
    group_by_point(rows, agent)
        .into_iter()
        .map(|g| {
            let err: Vec<f64> = g.iter().map(|r| r.error_pct).collect();
            let cost: Vec<f64> = g.iter().map(|r| r.cost_pct).collect();
            let k = g[0].num_stages();
            let m = g.len() as f64;
            PointStats {
                agent: agent.to_string(),
                alpha: g[0].alpha,
                budget: g[0].budget,
                error: mean_std(&err),
                cost: mean_std(&cost),
                val_error: g.iter().map(|r| r.val_error_pct).sum::<f64>() / m,
                val_cost: g.iter().map(|r| r.val_cost_pct).sum::<f64>() / m,
                exit_fraction: (0..k)
                    .map(|t| g.iter().map(|r| r.exit_fraction[t]).sum::<f64>() / m)
                    .collect(),
                rows: g,
            }
        })
        .collect()
}

/// The point whose mean validation error is closest to `target` (ties:
/// lower validation cost, then the earlier point).
pub fn matched<'a, 'b>(pts: &'b [PointStats<'a>], target: f64) -> Option<&'b PointStats<'a>> {
    pts.iter().min_by(|a, b| {
        let da = (a.val_error - target).abs();
        let db = (b.val_error - target).abs();
        da.total_cmp(&db).then(a.val_cost.total_cmp(&b.val_cost))
    })
}

/// The largest stage's row (`static-K`).
pub fn largest_static(rows: &[ResultRow]) -> Option<&ResultRow> {
    rows.iter()
        .filter_map(|r| {
            r.agent
                .strip_prefix("static-")
                .and_then(|k| k.parse::<usize>().ok())
                .map(|k| (k, r))
        })
        .max_by_key(|(k, _)| *k)
        .map(|(_, r)| r)
}

/// The learned and calibrated agents in display order, with labels
/// (`(name, label)` of every [`AgentKind`]).
pub const POLICY_AGENTS: [(&str, &str); AgentKind::ALL.len()] = {
    let mut out = [("", ""); AgentKind::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = (AgentKind::ALL[i].name(), AgentKind::ALL[i].label());
        i += 1;
    }
    out
};

/// The matched operating point of every policy agent present:
/// `(agent, label, point)`.
pub fn table_points<'a>(
    rows: &'a [ResultRow],
) -> Vec<(&'static str, &'static str, PointStats<'a>)> {
    let target = match largest_static(rows) {
        Some(r) => r.val_error_pct,
        None => return vec![],
    };
    POLICY_AGENTS
        .iter()
        .filter_map(|&(agent, label)| {
            let pts = points(rows, agent);
            matched(&pts, target).cloned().map(|p| (agent, label, p))
        })
        .collect()
}

fn pm(v: (f64, f64), seeds: usize) -> String {
    if seeds > 1 {
        format!("{:.2} ± {:.2}", v.0, v.1)
    } else {
        format!("{:.2}", v.0)
    }
}

/// Stage label: `stage k (model)`.
pub fn stage_label(info: &CascadeInfo, t: usize) -> String {
    match info.stage_names.get(t) {
        Some(n) => format!("stage {} {n}", t + 1),
        None => format!("stage {}", t + 1),
    }
}

/// The summary's Markdown.
pub fn summary_markdown(rec: &RunRecord, rows: &[ResultRow]) -> String {
    let cfg = &rec.config;
    let info = &rec.cascade;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# {}: {}, cascade {} ({})\n",
        cfg.study,
        info.dataset_title(),
        info.preset,
        info.stage_names.join(", ")
    );
    if info.synthetic {
        let _ = writeln!(
            s,
            "> **{}.** The numbers below say nothing about real data.\n",
            info.notice
                .clone()
                .unwrap_or_else(|| cascade_rl::data::SYNTHETIC_NOTICE.into())
        );
    }
    let largest = info.stage_macs.iter().copied().max().unwrap_or(1).max(1) as f64;
    let cost_model = rows.first().map_or("cumulative", |r| r.cost_model.as_str());
    let seeds = cfg.seeds.len();
    let _ = writeln!(
        s,
        "Study preset `{}`; data: {}; splits: {} training images for the classifiers, {} held out \
         for the learned agents, {} validation, {} test. Test error and FLOPs (mean multiply-accumulates per image, in % of the largest \
         stage, {}, {:.0} MACs) on the test images{}.\n",
        cfg.preset,
        info.data_source,
        info.split_sizes[0],
        rec.agent_images,
        info.split_sizes[1],
        info.split_sizes[2],
        info.stage_names.last().map_or("", String::as_str),
        largest,
        if seeds > 1 {
            format!(", mean ± sample standard deviation (n - 1) over {seeds} training seeds")
        } else {
            String::new()
        }
    );

    // -- The table --------------------------------------------------------
    let setting = if cfg.budget_mode() { "budget" } else { "alpha" };
    let _ = writeln!(
        s,
        "| model | {setting} | test error % | FLOPs % | validation error % |\n|---|---:|---:|---:|---:|"
    );
    for t in 0..info.stage_macs.len() {
        if let Some(r) = rows.iter().find(|r| r.agent == format!("static-{}", t + 1)) {
            let _ = writeln!(
                s,
                "| static {} | | {:.2} | {:.2} | {:.2} |",
                stage_label(info, t),
                r.error_pct,
                100.0 * info.stage_macs[t] as f64 / largest,
                r.val_error_pct
            );
        }
    }
    let chosen = table_points(rows);
    for (_, label, p) in &chosen {
        let value = p
            .budget
            .or(p.alpha)
            .map_or(String::new(), |v| v.to_string());
        let _ = writeln!(
            s,
            "| {label} | {value} | {} | {} | {:.2} |",
            pm(p.error, p.rows.len()),
            pm(p.cost, p.rows.len()),
            p.val_error
        );
    }
    if let Some(r) = rows.iter().find(|r| r.agent == "oracle") {
        let _ = writeln!(
            s,
            "| oracle (reads the label: first stage that is right) | | {:.2} | {:.2} | {:.2} |",
            r.error_pct, r.cost_pct, r.val_error_pct
        );
    }
    let target = largest_static(rows).map_or(f64::NAN, |r| r.val_error_pct);
    let _ = writeln!(
        s,
        "\nHow the rows are chosen: each policy is shown at the {setting} of its sweep whose mean \
         validation error is closest to the largest stage's validation error ({target:.2}%), ties \
         going to the lower validation cost. The choice uses the validation split only; test \
         numbers are reported, never used to choose.\n\n\
         FLOPs: static rows give the classifier run alone (F_k / F_K); policy rows give the mean \
         cost under the `{cost_model}` cost model ({}){}. The oracle row is a bound, not a policy.\n",
        if cost_model == "exit" {
            "the cost of reaching the exit"
        } else {
            "every stage run up to the stop is paid for"
        },
        if cfg.count_policy_cost {
            ", including the stopping policy's own MACs"
        } else {
            ""
        }
    );

    // -- Every point --------------------------------------------------------
    let _ = writeln!(
        s,
        "## Every operating point\n\n| agent | {setting} | seeds | test error % | FLOPs % | validation error % | validation FLOPs % | exits per stage (%) |\n|---|---:|---:|---:|---:|---:|---:|---|"
    );
    for (agent, label) in POLICY_AGENTS {
        for p in points(rows, agent) {
            let value = p
                .budget
                .or(p.alpha)
                .map_or(String::new(), |v| v.to_string());
            let exits: Vec<String> = p
                .exit_fraction
                .iter()
                .map(|f| format!("{:.0}", 100.0 * f))
                .collect();
            let _ = writeln!(
                s,
                "| {label} | {value} | {} | {} | {} | {:.2} | {:.2} | {} |",
                p.rows.len(),
                pm(p.error, p.rows.len()),
                pm(p.cost, p.rows.len()),
                p.val_error,
                p.val_cost,
                exits.join(" / ")
            );
        }
    }
    let _ = writeln!(
        s,
        "\nFiles: `results.csv` (one row per agent x {setting} x seed, with per-stage exits and \
         exits per class), `config.json` (the resolved configuration), `figures/` (Pareto front, \
         sample and accuracy distributions, exits per class, training curves), `agents/` \
         (checkpoints and per-epoch logs), `cascade/` (the pretrained cascade)."
    );
    s
}

/// Writes `run_dir/summary.md` from `results.csv` and `config.json`.
pub fn write_summary(run_dir: &Path) -> Result<PathBuf> {
    let rec = read_run_record(run_dir)?;
    let rows = read_results(&run_dir.join(RESULTS_FILE))?;
    let mut md = summary_markdown(&rec, &rows);
    let extra = crate::compare::comparison_markdown(run_dir, &rec, &rows)?;
    match md.find("## Every operating point") {
        Some(i) => md.insert_str(i, &extra),
        None => md.push_str(&extra),
    }
    let path = run_dir.join(SUMMARY_FILE);
    write_file(&path, md.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        agent: &str,
        alpha: Option<f64>,
        seed: Option<u64>,
        val_err: f64,
        err: f64,
    ) -> ResultRow {
        ResultRow {
            agent: agent.into(),
            kind: cascade_agents::Family::Reinforce,
            alpha,
            budget: None,
            seed,
            dataset: "d".into(),
            cascade: "c".into(),
            n: 100,
            error_pct: err,
            cost_pct: 10.0 * alpha.unwrap_or(1.0),
            cost_pct_std: 0.0,
            classifier_cost_pct: 0.0,
            policy_cost_pct: 0.0,
            mean_reward: 0.0,
            val_error_pct: val_err,
            val_cost_pct: 5.0,
            val_mean_reward: 0.0,
            final_alpha: alpha,
            budget_met: None,
            epochs_run: None,
            best_epoch: None,
            train_seconds: 0.0,
            eval_seconds: 0.0,
            agent_dir: String::new(),
            loss: "zero_one".into(),
            cost_model: "cumulative".into(),
            exit_fraction: vec![0.5, 0.5],
            exit_accuracy: vec![None, None],
            exits_per_class: vec![],
        }
    }

    #[test]
    fn matching_uses_validation_error_and_seed_means() {
        let rows = vec![
            row("static-1", None, None, 20.0, 21.0),
            row("static-2", None, None, 10.0, 11.0),
            row("reinforce-joint", Some(0.1), Some(0), 10.5, 1.0),
            row("reinforce-joint", Some(0.1), Some(1), 12.5, 3.0),
            row("reinforce-joint", Some(0.3), Some(0), 12.0, 99.0),
            row("reinforce-joint", Some(0.3), Some(1), 12.0, 99.0),
        ];
        let pts = points(&rows, "reinforce-joint");
        assert_eq!(pts.len(), 2);
        // Mean and sample standard deviation (n - 1) of 1 and 3.
        assert_eq!(pts[0].error, (2.0, 2f64.sqrt()));
        // Means 11.5 and 12.0 against the target 10.0: alpha 0.1 wins,
        // although its seed 1 alone would lose.
        let m = matched(&pts, 10.0).unwrap();
        assert_eq!(m.alpha, Some(0.1));
        let t = table_points(&rows);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0, "reinforce-joint");
    }
}
