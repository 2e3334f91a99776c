//! The figures of a study, drawn from the run folder's files alone
//! (`results.csv`, `config.json` and the agents' `train_log.csv`), so
//! `cascade plot RUN_DIR` redraws them without training anything.
//!
//! | file (under `figures/`, `.svg` and `.png`) | what |
//! |---|---|
//! | `pareto` | test error % against mean cost % of the largest stage: static stages (labelled points), the threshold, frozen and joint curves (mean over seeds, one standard deviation as bars), the oracle curve (dashed) |
//! | `sample_distribution` | fraction of test samples stopping at each stage, per agent at its table operating point |
//! | `accuracy_distribution` | accuracy of the samples stopping at each stage, same agents |
//! | `exits_per_class` | per class, the fraction of its test samples stopping at each stage, for the joint agent (or the swept agent) at its table point |
//! | `training_curves` | per-epoch metrics of the frozen and joint agents at their table points, every seed |
//!
//! Titles name the data set, the cascade and the agents, and say SYNTHETIC
//! when the data is the built-in set.

use std::path::{Path, PathBuf};

use cascade_plots::{
    AccuracyDistributionPlot, ExitAccuracies, ExitFractions, ExitsPerClassPlot, MetricPanel,
    MetricSeries, ParetoCurve, ParetoPlot, ParetoPoint, SampleDistributionPlot, StagePoint,
    TrainingCurvesPlot,
};

use crate::error::{Error, Result};
use crate::results::{read_results, ResultRow, RESULTS_FILE};
use crate::study::{read_run_record, CascadeInfo, RunRecord};
use crate::summary::{points, stage_label, table_points, PointStats, POLICY_AGENTS};

/// Folder of the figures in a run folder.
pub const FIGURES_DIR: &str = "figures";

/// Draws every figure of the run folder; returns the PNG paths written.
pub fn draw_all(run_dir: &Path) -> Result<Vec<PathBuf>> {
    draw_all_with(run_dir, None)
}

/// [`draw_all`], the exit gallery of the agent and point `gallery` names
/// (`AGENT` or `AGENT@X`, see [`crate::gallery::parse_choice`]) instead
/// of the default one.
pub fn draw_all_with(run_dir: &Path, gallery: Option<&str>) -> Result<Vec<PathBuf>> {
    let rec = read_run_record(run_dir)?;
    let rows = read_results(&run_dir.join(RESULTS_FILE))?;
    let dir = run_dir.join(FIGURES_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut out = Vec::new();
    out.push(pareto(&rec, &rows).write(dir.join("pareto"))?.png);
    let chosen = table_points(&rows);
    if let Some(p) = sample_distribution(&rec, &rows, &chosen) {
        out.push(p.write(dir.join("sample_distribution"))?.png);
    }
    if let Some(p) = accuracy_distribution(&rec, &rows, &chosen) {
        out.push(p.write(dir.join("accuracy_distribution"))?.png);
    }
    if let Some(p) = exits_per_class(&rec, &chosen) {
        out.push(p.write(dir.join("exits_per_class"))?.png);
    }
    if let Some(p) = training_curves(run_dir, &rec, &chosen)? {
        out.push(p.write(dir.join("training_curves"))?.png);
    }
    if let Some(p) = joint_curves(run_dir, &rec, &rows)? {
        out.push(p.write(dir.join("joint_curves"))?.png);
    }
    let row = match gallery {
        Some(choice) => Some(crate::gallery::parse_choice(choice, &rows)?),
        None => crate::gallery::choose(&rec, &rows),
    };
    if let Some(row) = row {
        if let Some(p) = crate::gallery::draw(run_dir, &rec, row, &dir)? {
            out.push(p);
        }
    }
    Ok(out)
}

/// `Fashion-MNIST, cascade fmnist-4` (with SYNTHETIC for the built-in set).
fn title_head(info: &CascadeInfo) -> String {
    format!("{}, cascade {}", info.dataset_title(), info.preset)
}

fn stage_labels(info: &CascadeInfo, k: usize) -> Vec<String> {
    (0..k).map(|t| stage_label(info, t)).collect()
}

fn agent_list(chosen: &[(&str, &str, PointStats<'_>)]) -> String {
    chosen
        .iter()
        .map(|(_, l, _)| *l)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Pareto plot.
pub fn pareto(rec: &RunRecord, rows: &[ResultRow]) -> ParetoPlot {
    let info = &rec.cascade;
    let present: Vec<&str> = POLICY_AGENTS
        .iter()
        .filter(|(a, _)| rows.iter().any(|r| r.agent == *a))
        .map(|(_, l)| *l)
        .collect();
    let mut plot = ParetoPlot::new(format!(
        "{}: test error vs FLOPs - {}",
        title_head(info),
        if present.is_empty() {
            "static stages and oracle".to_string()
        } else {
            present.join(", ")
        }
    ));
    let largest = info.stage_macs.iter().copied().max().unwrap_or(1).max(1) as f64;
    for (t, &macs) in info.stage_macs.iter().enumerate() {
        if let Some(r) = rows.iter().find(|r| r.agent == format!("static-{}", t + 1)) {
            plot.stages.push(StagePoint {
                label: stage_label(info, t),
                cost: 100.0 * macs as f64 / largest,
                error: r.error_pct,
            });
        }
    }
    for (agent, label) in POLICY_AGENTS {
        let pts: Vec<ParetoPoint> = points(rows, agent)
            .iter()
            .map(|p| {
                let pt = ParetoPoint::new(p.cost.0, p.error.0);
                if p.rows.len() > 1 {
                    pt.with_spread(p.cost.1, p.error.1)
                } else {
                    pt
                }
            })
            .collect();
        if !pts.is_empty() {
            plot.curves.push(ParetoCurve::new(label, pts));
        }
    }
    let mut oracle: Vec<ParetoPoint> = Vec::new();
    for p in points(rows, "oracle-alpha") {
        let pt = ParetoPoint::new(p.cost.0, p.error.0);
        if oracle.last() != Some(&pt) {
            oracle.push(pt);
        }
    }
    if !oracle.is_empty() {
        plot.curves.push(ParetoCurve::reference(
            "oracle (label-aware optimum per alpha)",
            oracle,
        ));
    }
    if let Some(r) = rows.iter().find(|r| r.agent == "oracle") {
        plot.curves.push(ParetoCurve::reference(
            "oracle (first right stage)",
            vec![ParetoPoint::new(r.cost_pct, r.error_pct)],
        ));
    }
    plot
}

fn with_oracle(rows: &[ResultRow]) -> Option<&ResultRow> {
    rows.iter().find(|r| r.agent == "oracle")
}

/// Where test samples stop, per agent at its table operating point.
pub fn sample_distribution(
    rec: &RunRecord,
    rows: &[ResultRow],
    chosen: &[(&str, &str, PointStats<'_>)],
) -> Option<SampleDistributionPlot> {
    let k = rows.first()?.num_stages();
    let mut agents: Vec<ExitFractions> = chosen
        .iter()
        .map(|(_, label, p)| ExitFractions {
            agent: format!("{label} ({})", p.setting()),
            fractions: p.exit_fraction.clone(),
        })
        .collect();
    if let Some(o) = with_oracle(rows) {
        agents.push(ExitFractions {
            agent: "oracle (first right stage)".into(),
            fractions: o.exit_fraction.clone(),
        });
    }
    if agents.is_empty() {
        return None;
    }
    Some(SampleDistributionPlot {
        title: format!(
            "{}: where test samples stop - {}",
            title_head(&rec.cascade),
            agent_list(chosen)
        ),
        stages: stage_labels(&rec.cascade, k),
        agents,
    })
}

/// Accuracy of the samples stopping at each stage, same agents.
pub fn accuracy_distribution(
    rec: &RunRecord,
    rows: &[ResultRow],
    chosen: &[(&str, &str, PointStats<'_>)],
) -> Option<AccuracyDistributionPlot> {
    let k = rows.first()?.num_stages();
    let mean_acc = |rs: &[&ResultRow]| -> Vec<Option<f64>> {
        (0..k)
            .map(|t| {
                let v: Vec<f64> = rs.iter().filter_map(|r| r.exit_accuracy[t]).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            })
            .collect()
    };
    let agents: Vec<ExitAccuracies> = chosen
        .iter()
        .map(|(_, label, p)| ExitAccuracies {
            agent: format!("{label} ({})", p.setting()),
            accuracies: mean_acc(&p.rows),
        })
        .collect();
    if chosen.is_empty() {
        return None;
    }
    Some(AccuracyDistributionPlot {
        title: format!(
            "{}: accuracy of the samples stopping at each stage - {}",
            title_head(&rec.cascade),
            agent_list(chosen)
        ),
        stages: stage_labels(&rec.cascade, k),
        agents,
    })
}

/// Exits per class for the joint agent (else the last policy agent present).
pub fn exits_per_class(
    rec: &RunRecord,
    chosen: &[(&str, &str, PointStats<'_>)],
) -> Option<ExitsPerClassPlot> {
    let (_, label, p) = chosen
        .iter()
        .find(|(a, _, _)| *a == cascade_agents::AgentKind::ReinforceJoint.name())
        .or(chosen.last())?;
    let r = p.rows.first()?;
    let k = r.num_stages();
    let mut classes = Vec::new();
    let mut fractions = Vec::new();
    for (c, counts) in r.exits_per_class.iter().enumerate() {
        let total: usize = counts.iter().sum();
        if total == 0 {
            continue;
        }
        classes.push(
            rec.cascade
                .class_names
                .get(c)
                .cloned()
                .unwrap_or_else(|| format!("class {c}")),
        );
        fractions.push(counts.iter().map(|&x| x as f64 / total as f64).collect());
    }
    if classes.is_empty() {
        return None;
    }
    let seed = r.seed.map_or(String::new(), |s| format!(", seed {s}"));
    Some(ExitsPerClassPlot {
        title: format!(
            "{}: exits per class - {label} ({}{seed})",
            title_head(&rec.cascade),
            p.setting()
        ),
        classes,
        stages: stage_labels(&rec.cascade, k),
        fractions,
    })
}

/// One agent's per-epoch log: `(epoch, column -> value)` rows.
fn read_log(path: &Path) -> Result<Vec<(f64, std::collections::HashMap<String, f64>)>> {
    let mut rdr = csv::Reader::from_path(path).map_err(|e| Error::csv(path, e))?;
    let head: Vec<String> = rdr
        .headers()
        .map_err(|e| Error::csv(path, e))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| Error::csv(path, e))?;
        let mut m = std::collections::HashMap::new();
        for (h, v) in head.iter().zip(rec.iter()) {
            if let Ok(x) = v.parse::<f64>() {
                m.insert(h.clone(), x);
            }
        }
        if let Some(&e) = m.get("epoch") {
            out.push((e, m));
        }
    }
    Ok(out)
}

/// The panels of the training-curves figure: `(column, caption, unit, scale)`.
const CURVE_METRICS: [(&str, &str, Option<&str>, f64); 6] = [
    ("charts/mean_reward", "charts/mean_reward", None, 1.0),
    ("val/error", "val/error", Some("%"), 100.0),
    ("val/cost", "val/cost", Some("% of largest stage"), 100.0),
    ("losses/policy", "losses/policy", None, 1.0),
    ("losses/classifier", "losses/classifier", None, 1.0),
    ("charts/sps", "charts/sps", Some("episodes/s"), 1.0),
];

/// The joint agents and their `-lr0` twins (the same policy updates,
/// classifiers fixed) per epoch at the first ablation point, every seed:
/// whether training ran to convergence, and where the classifiers' updates
/// take the validation error.
pub fn joint_curves(
    run_dir: &Path,
    rec: &RunRecord,
    rows: &[ResultRow],
) -> Result<Option<TrainingCurvesPlot>> {
    let Some(&x) = rec.config.ablation_points.first() else {
        return Ok(None);
    };
    let mut chosen = Vec::new();
    for (agent, label) in [
        ("reinforce-joint", "reinforce-joint"),
        ("reinforce-joint-lr0", "reinforce-joint-lr0"),
        ("expected-joint", "expected-joint"),
        ("expected-joint-lr0", "expected-joint-lr0"),
    ] {
        if let Some(p) = crate::summary::points(rows, agent)
            .into_iter()
            .find(|p| p.budget.or(p.alpha) == Some(x))
        {
            chosen.push((agent, label, p));
        }
    }
    if chosen.len() < 2 {
        return Ok(None);
    }
    training_curves(run_dir, rec, &chosen)
}

/// Per-epoch curves of the frozen and joint agents at their table points.
pub fn training_curves(
    run_dir: &Path,
    rec: &RunRecord,
    chosen: &[(&str, &str, PointStats<'_>)],
) -> Result<Option<TrainingCurvesPlot>> {
    let mut logs = Vec::new();
    for (agent, label, p) in chosen {
        if !(agent.starts_with("reinforce") || agent.starts_with("expected")) {
            continue;
        }
        for r in &p.rows {
            let path = cascade_agents::AgentFolder::new(run_dir.join(&r.agent_dir)).train_log();
            if r.agent_dir.is_empty() || !path.exists() {
                continue;
            }
            let log = read_log(&path)?;
            if log.is_empty() {
                continue;
            }
            let seed = r.seed.map_or(String::new(), |s| format!(" seed {s}"));
            let group = format!("{label} ({})", p.setting());
            logs.push((format!("{group}{seed}"), group, log));
        }
    }
    if logs.is_empty() {
        return Ok(None);
    }
    let mut plot = TrainingCurvesPlot::new(format!(
        "{}: training curves - {}",
        title_head(&rec.cascade),
        logs.iter()
            .map(|(n, _, _)| n.split(" (").next().unwrap_or(""))
            .fold(Vec::<&str>::new(), |mut v, n| {
                if !v.contains(&n) {
                    v.push(n);
                }
                v
            })
            .join(", ")
    ));
    for (col, caption, unit, scale) in CURVE_METRICS {
        let series: Vec<MetricSeries> = logs
            .iter()
            .filter_map(|(run, group, log)| {
                let pts: Vec<(f64, f64)> = log
                    .iter()
                    .filter_map(|(e, m)| m.get(col).map(|v| (*e, v * scale)))
                    .filter(|(_, v)| v.is_finite())
                    .collect();
                (!pts.is_empty()).then(|| MetricSeries {
                    run: run.clone(),
                    points: pts,
                    // An agent's seeds share a colour.
                    group: Some(group.clone()),
                })
            })
            .collect();
        if !series.is_empty() {
            plot.panels.push(MetricPanel {
                metric: caption.to_string(),
                unit: unit.map(str::to_string),
                series,
            });
        }
    }
    Ok((!plot.panels.is_empty()).then_some(plot))
}
