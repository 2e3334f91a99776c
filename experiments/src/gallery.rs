//! The exit gallery: test images grouped by the stage at which an agent
//! stopped them, each captioned with its prediction, wrong ones framed in
//! red, so a reader sees which inputs are easy and which go to the end.
//!
//! Drawn from a run folder's files: the agent's `eval_test.json` (per-image
//! exits and predictions), the cascade's record (to reload the test images
//! it was evaluated on) and `results.csv` (which agent and point).

use cascade_agents::AgentFolder;
use std::path::{Path, PathBuf};

use cascade_agents::{AgentKind, EvalReport};
use cascade_rl::cascade::Cascade;

use crate::error::{Error, Result};
use crate::results::ResultRow;
use crate::study::{RunRecord, CASCADE_DIR};

/// Images shown per stage.
pub const PER_STAGE: usize = 12;

/// The agents the gallery prefers, best first (the first one present is
/// drawn): fitted on the frozen classifiers, so the recorded test images
/// are the ones it saw.
const PREFERRED: [AgentKind; 6] = [
    AgentKind::Ann,
    AgentKind::BackwardInduction,
    AgentKind::Threshold,
    AgentKind::ThresholdPerStage,
    AgentKind::ThresholdEntropy,
    AgentKind::ReinforceFrozen,
];

/// The point of a row: its budget, else its alpha.
fn point(r: &ResultRow) -> Option<f64> {
    r.budget.or(r.alpha)
}

/// The rows of `agent`, by point, then seed.
fn agent_rows<'a>(rows: &'a [ResultRow], agent: &str) -> Vec<&'a ResultRow> {
    let mut mine: Vec<&ResultRow> = rows.iter().filter(|r| r.agent == agent).collect();
    mine.sort_by(|a, b| {
        let x = |r: &ResultRow| point(r).unwrap_or(0.0);
        x(a).total_cmp(&x(b)).then(a.seed.cmp(&b.seed))
    });
    mine
}

/// The first (lowest-seed) row at point `x`.
fn at<'a>(mine: &[&'a ResultRow], x: f64) -> Option<&'a ResultRow> {
    mine.iter().copied().find(|r| point(r) == Some(x))
}

/// The first row at the middle one of the points.
fn middle<'a>(mine: &[&'a ResultRow]) -> Option<&'a ResultRow> {
    let mut points: Vec<f64> = mine.iter().filter_map(|r| point(r)).collect();
    points.dedup();
    points
        .get(points.len() / 2)
        .and_then(|&x| at(mine, x))
        .or_else(|| mine.first().copied())
}

/// The row the gallery shows: the first preferred agent present, at the
/// study's ablation point when it has one, else at its middle point (the
/// lowest seed).
pub fn choose<'a>(rec: &RunRecord, rows: &'a [ResultRow]) -> Option<&'a ResultRow> {
    let agent = PREFERRED
        .iter()
        .find(|a| rows.iter().any(|r| r.agent == a.name()))?;
    let mine = agent_rows(rows, agent.name());
    rec.config
        .ablation_points
        .first()
        .and_then(|&x| at(&mine, x))
        .or_else(|| middle(&mine))
}

/// The row named by `AGENT` or `AGENT@X` (X the budget or alpha as
/// written in results.csv; without it the agent's middle point, lowest
/// seed).
pub fn parse_choice<'a>(choice: &str, rows: &'a [ResultRow]) -> Result<&'a ResultRow> {
    let (agent, x) = match choice.split_once('@') {
        Some((a, x)) => {
            let x: f64 = x.trim().parse().map_err(|_| {
                Error::Config(format!(
                    "--gallery {choice}: '{x}' is not a number (AGENT@BUDGET or AGENT@ALPHA)"
                ))
            })?;
            (a.trim(), Some(x))
        }
        None => (choice.trim(), None),
    };
    let mine = agent_rows(rows, agent);
    if mine.is_empty() {
        let mut names: Vec<&str> = rows.iter().map(|r| r.agent.as_str()).collect();
        names.sort();
        names.dedup();
        return Err(Error::Config(format!(
            "--gallery {choice}: no rows of agent '{agent}' (present: {})",
            names.join(", ")
        )));
    }
    let found = match x {
        Some(x) => at(&mine, x),
        None => middle(&mine),
    };
    found.ok_or_else(|| {
        let pts: Vec<String> = mine
            .iter()
            .filter_map(|r| point(r))
            .map(|v| v.to_string())
            .collect();
        Error::Config(format!(
            "--gallery {choice}: {agent} has no point {} (its points: {})",
            x.unwrap_or(f64::NAN),
            pts.join(", ")
        ))
    })
}

/// Draws the gallery of `row` into `figures/exit_gallery.{png,svg}`.
/// Returns `Ok(None)` with a note on stderr when the agent's evaluation
/// holds no per-image predictions (an older run) or the test images cannot
/// be reloaded on this machine (the data set is missing): the other
/// figures do not need them.
pub fn draw(
    run_dir: &Path,
    rec: &RunRecord,
    row: &ResultRow,
    figures: &Path,
) -> Result<Option<PathBuf>> {
    let eval_path = AgentFolder::new(run_dir.join(&row.agent_dir)).eval_json("test");
    let report = EvalReport::read_json(&eval_path)?;
    let n = report.sample_exits.len();
    if n == 0 || report.sample_predictions.len() != n {
        eprintln!(
            "note: no exit gallery: {} holds no per-image predictions (written by an older \
             build); rerun that point to draw it",
            eval_path.display()
        );
        return Ok(None);
    }
    if !run_dir.join(CASCADE_DIR).is_dir() {
        // A comparison on recorded traces (`cascade compare-traces`) has
        // no images to show.
        return Ok(None);
    }
    let cascade = Cascade::load(
        &run_dir.join(CASCADE_DIR),
        &candle_core::Device::Cpu,
        None,
        None,
    )?;
    let splits = match cascade_rl::backend::cascade_splits(&cascade, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("note: no exit gallery: the test images cannot be reloaded ({e})");
            return Ok(None);
        }
    };
    let test = &splits.test;
    if test.len() != n {
        return Err(Error::run_file(
            &eval_path,
            format!(
                "has {n} test images, the reloaded test split {}",
                test.len()
            ),
        ));
    }
    let k = rec.cascade.stage_names.len();
    let [c, h, w] = test.shape;
    let per_image = c * h * w;
    let norm = cascade.normalization();

    // Up to PER_STAGE images per stage, in split order.
    let mut picked: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &e) in report.sample_exits.iter().enumerate() {
        if let Some(row) = picked.get_mut(e as usize) {
            if row.len() < PER_STAGE {
                row.push(i);
            }
        }
    }
    let (mut images, mut labels, mut captions, mut flagged) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (t, idx) in picked.iter().enumerate() {
        for &i in idx {
            let x = &test.images[i * per_image..(i + 1) * per_image];
            for ch in 0..c {
                let (m, s) = (norm.mean[ch], norm.std[ch]);
                images.extend(x[ch * h * w..(ch + 1) * h * w].iter().map(|v| v * s + m));
            }
            labels.push(t);
            let p = report.sample_predictions[i] as usize;
            captions.push(
                rec.cascade
                    .class_names
                    .get(p)
                    .cloned()
                    .unwrap_or_else(|| p.to_string()),
            );
            flagged.push(report.sample_correct.get(i) == Some(&0));
        }
    }
    // Real data comes back in [0, 1]; stretch anything else (synthetic).
    let (lo, hi) = images
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if lo < -1e-3 || hi > 1.0 + 1e-3 {
        let span = (hi - lo).max(1e-6);
        images.iter_mut().for_each(|v| *v = (*v - lo) / span);
    }
    images.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
    let row_names: Vec<String> = (0..k)
        .map(|t| {
            format!(
                "{} ({:.0}% stop)",
                crate::summary::stage_label(&rec.cascade, t),
                100.0 * report.exit_fraction.get(t).copied().unwrap_or(0.0)
            )
        })
        .collect();
    let point = match (row.budget, row.alpha) {
        (Some(b), _) => format!("budget {b}"),
        (None, Some(a)) => format!("alpha {a}"),
        _ => String::new(),
    };
    let title = format!(
        "{}: where {} at {point} stops test images (prediction below, wrong in red)",
        rec.cascade.dataset_title(),
        row.agent
    );
    let scale = (84 / h.max(w).max(1)).clamp(1, 8) as u32;
    let grid = cascade_plots::ImageGridPlot {
        title: &title,
        images: &images,
        shape: [labels.len(), c, h, w],
        labels: &labels,
        class_names: &row_names,
        per_class: PER_STAGE,
        scale,
        captions: &captions,
        flagged: &flagged,
    };
    Ok(Some(grid.write(figures.join("exit_gallery"))?.png))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(agent: &str, budget: f64, seed: Option<u64>) -> ResultRow {
        let mut r = crate::results::tests::row(agent, None, seed);
        r.budget = Some(budget);
        r
    }

    #[test]
    fn a_choice_names_an_agent_and_a_point() {
        let rows = vec![
            row("ann", 0.1, None),
            row("ann", 0.3, None),
            row("ann", 0.18, None),
            row("threshold", 0.18, None),
        ];
        let r = parse_choice("ann@0.3", &rows).unwrap();
        assert_eq!((r.agent.as_str(), r.budget), ("ann", Some(0.3)));
        // Without a point: the middle one.
        assert_eq!(parse_choice("ann", &rows).unwrap().budget, Some(0.18));
        for (bad, says) in [
            ("nope", "present: ann, threshold"),
            ("ann@0.5", "its points: 0.1, 0.18, 0.3"),
            ("ann@x", "not a number"),
        ] {
            let e = parse_choice(bad, &rows).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }
}
