//! The comparisons a reviewer asks for, from a run folder's files: the
//! budget table (every policy at every FLOPs budget), the area under each
//! test-error/FLOPs curve over the range the curves share, paired tests on
//! the same test images, and the ablation table.
//!
//! Paired tests use the per-image outcomes of `eval_test.json` (each
//! agent's) and the recorded test trace (the last stage alone). With
//! several seeds an agent's per-image error is its mean over the seeds;
//! the difference of two agents' error rates gets a 95% paired-bootstrap
//! interval over the test images (2000 resamples, seeded), so it speaks
//! to the sampling of test images, while the ± columns speak to the seeds.

use cascade_agents::AgentFolder;
use std::fmt::Write as _;
use std::path::Path;

use cascade_agents::EvalReport;
use cascade_env::{ReplayBackend, StageBackend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::provenance::{agent_hash, cascade_hash, TraceStamp};
use crate::results::ResultRow;
use crate::study::{RunRecord, CASCADE_DIR, TRACES_DIR};
use crate::summary::{largest_static, points, PointStats, POLICY_AGENTS};

/// Area under a (cost %, error %) curve over `[lo, hi]`, divided by the
/// width: the mean error over that cost range, the curve linear between
/// its points. `None` when the curve does not span the range.
pub fn mean_error_over(curve: &[(f64, f64)], lo: f64, hi: f64) -> Option<f64> {
    let mut c: Vec<(f64, f64)> = curve.to_vec();
    c.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (first, last) = (c.first()?.0, c.last()?.0);
    if hi <= lo || first > lo + 1e-9 || last < hi - 1e-9 {
        return None;
    }
    let at = |x: f64| -> f64 {
        match c.iter().position(|p| p.0 >= x) {
            Some(0) => c[0].1,
            Some(i) => {
                let (a, b) = (c[i - 1], c[i]);
                if b.0 == a.0 {
                    b.1
                } else {
                    a.1 + (b.1 - a.1) * (x - a.0) / (b.0 - a.0)
                }
            }
            None => c[c.len() - 1].1,
        }
    };
    // Exact for a piecewise-linear curve: integrate between breakpoints.
    let mut xs: Vec<f64> = vec![lo];
    xs.extend(c.iter().map(|p| p.0).filter(|&x| x > lo && x < hi));
    xs.push(hi);
    let area: f64 = xs
        .windows(2)
        .map(|w| 0.5 * (at(w[0]) + at(w[1])) * (w[1] - w[0]))
        .sum();
    Some(area / (hi - lo))
}

/// Mean per-image error of a point's seeds (`None` if a seed's report is
/// missing or has no per-image outcomes); a report that exists but cannot
/// be read, contradicts itself, or evaluated another agent than the one
/// now in its folder is an error.
fn per_image_error(run: &Path, p: &PointStats<'_>) -> Result<Option<Vec<f64>>> {
    let mut acc: Option<Vec<f64>> = None;
    for r in &p.rows {
        if r.agent_dir.is_empty() {
            return Ok(None);
        }
        let path = AgentFolder::new(run.join(&r.agent_dir)).eval_json("test");
        if !path.exists() {
            return Ok(None);
        }
        let rep = EvalReport::read_json(&path)?;
        if let Some(ev) = &rep.evaluated {
            let dir = run.join(&r.agent_dir);
            let now = agent_hash(&dir)?;
            if now != ev.agent_hash {
                return Err(Error::run_file(
                    &path,
                    format!(
                        "evaluated an agent with content hash {}, but {} now holds one of hash \
                         {now}; delete that folder's row from results.csv and rerun the study",
                        ev.agent_hash,
                        dir.display()
                    ),
                ));
            }
        }
        if rep.sample_correct.is_empty() {
            return Ok(None);
        }
        let a = acc.get_or_insert_with(|| vec![0.0; rep.sample_correct.len()]);
        if a.len() != rep.sample_correct.len() {
            return Ok(None);
        }
        for (x, &c) in a.iter_mut().zip(&rep.sample_correct) {
            *x += (1 - c) as f64;
        }
    }
    let Some(mut a) = acc else {
        return Ok(None);
    };
    let n = p.rows.len() as f64;
    a.iter_mut().for_each(|x| *x /= n);
    Ok(Some(a))
}

/// The last stage alone on the recorded test trace: 1 where wrong, with
/// the study's prediction rule (its `static-K` row). `None` when the trace
/// is not there (the traces are a cache); a trace that does not match the
/// hash recorded when it was written, or was recorded from another cascade
/// than the run folder's, is an error.
fn last_stage_error(run: &Path, cfg: &crate::study::StudyConfig) -> Result<Option<Vec<f64>>> {
    let traces = run.join(TRACES_DIR);
    let name = "test.trace";
    let path = traces.join(name);
    if !path.exists() {
        return Ok(None);
    }
    let stamp = TraceStamp::read(&traces).ok_or_else(|| {
        Error::run_file(
            &path,
            format!(
                "no {} beside it records what it was made from; delete the traces folder and rerun the study to record it again",
                crate::provenance::TRACE_STAMP_FILE
            ),
        )
    })?;
    stamp.verify(&traces, name)?;
    let cascade = run.join(CASCADE_DIR);
    if cascade.join(cascade_rl::checkpoint::MANIFEST_FILE).exists() {
        let have = cascade_hash(&cascade)?;
        if have != stamp.cascade {
            return Err(Error::run_file(
                &path,
                format!(
                    "was recorded from another cascade (hash {}) than {} (hash {have}); delete the traces folder and rerun the study to record it again",
                    stamp.cascade,
                    cascade.display()
                ),
            ));
        }
    }
    let mut t = ReplayBackend::load(&path)?;
    let last = t.num_stages() - 1;
    let report = crate::outcomes::static_test_report(&mut t, cfg, last)?;
    Ok(Some(
        report
            .sample_correct
            .iter()
            .map(|&c| (1 - c) as f64)
            .collect(),
    ))
}

/// Fewest resamples of [`paired_bootstrap`]: the 2.5% and 97.5% quantiles
/// of fewer are a handful of draws.
pub const MIN_RESAMPLES: usize = 100;

/// Mean of `a - b` in percentage points with a 95% paired-bootstrap
/// interval over the images. `a` and `b` are per-image errors in `[0, 1]`
/// (1 wrong, 0 right, or a mean over seeds) of the same images; refused
/// when they differ in length, are empty, hold anything else, or with
/// fewer than [`MIN_RESAMPLES`] resamples.
pub fn paired_bootstrap(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    seed: u64,
) -> Result<(f64, f64, f64)> {
    if a.len() != b.len() || a.is_empty() {
        return Err(Error::Config(format!(
            "a paired comparison needs the same images on both sides, got {} and {}",
            a.len(),
            b.len()
        )));
    }
    if resamples < MIN_RESAMPLES {
        return Err(Error::Config(format!(
            "{resamples} bootstrap resamples: a 95% interval needs at least {MIN_RESAMPLES}"
        )));
    }
    for (side, v) in [("A", a), ("B", b)] {
        if let Some((i, x)) = v
            .iter()
            .enumerate()
            .find(|(_, x)| !(0.0..=1.0).contains(*x))
        {
            return Err(Error::Config(format!(
                "per-image error of {side} at image {i} is {x}, not in [0, 1]"
            )));
        }
    }
    let n = a.len();
    let d: Vec<f64> = (0..n).map(|i| a[i] - b[i]).collect();
    let mean = 100.0 * d.iter().sum::<f64>() / n as f64;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let s: f64 = (0..n).map(|_| d[rng.random_range(0..n)]).sum();
            100.0 * s / n as f64
        })
        .collect();
    means.sort_by(|x, y| x.total_cmp(y));
    let q = |f: f64| means[((f * resamples as f64) as usize).min(resamples - 1)];
    Ok((mean, q(0.025), q(0.975)))
}

fn pm(v: (f64, f64), n: usize) -> String {
    if n > 1 {
        format!("{:.2} ± {:.2}", v.0, v.1)
    } else {
        format!("{:.2}", v.0)
    }
}

/// The Markdown sections: budget table (budget mode), area under the
/// curves, paired tests, ablations. Empty when there is nothing to compare.
pub fn comparison_markdown(run: &Path, rec: &RunRecord, rows: &[ResultRow]) -> Result<String> {
    let cfg = &rec.config;
    let mut s = String::new();
    let present: Vec<(&str, &str, Vec<PointStats<'_>>)> = POLICY_AGENTS
        .iter()
        .map(|&(a, l)| (a, l, points(rows, a)))
        .filter(|(_, _, p)| !p.is_empty())
        .collect();
    if present.is_empty() {
        return Ok(s);
    }
    let last = largest_static(rows);

    // -- Budget table -------------------------------------------------------
    if cfg.budget_mode() {
        let _ = write!(s, "## At fixed FLOPs budgets\n\nTest error % @ test FLOPs % for each budget (met on validation: thresholds are chosen, alphas moved by dual ascent, on the validation split).\n\n| budget |");
        for (_, l, _) in &present {
            let _ = write!(s, " {l} |");
        }
        let _ = write!(s, "\n|---:|");
        for _ in &present {
            let _ = write!(s, "---|");
        }
        let _ = writeln!(s);
        for &b in &cfg.budgets {
            let _ = write!(s, "| {b} |");
            for (_, _, pts) in &present {
                match pts.iter().find(|p| p.budget == Some(b)) {
                    Some(p) => {
                        let _ = write!(
                            s,
                            " {} @ {} |",
                            pm(p.error, p.rows.len()),
                            pm(p.cost, p.rows.len())
                        );
                    }
                    None => {
                        let _ = write!(s, " |");
                    }
                }
            }
            let _ = writeln!(s);
        }
        if let Some(r) = last {
            let _ = writeln!(
                s,
                "\nThe last stage alone: {:.2}% test error at {:.2}% FLOPs.",
                r.error_pct, r.cost_pct
            );
        }
        let _ = writeln!(s);
    }

    // -- Area under the curves ----------------------------------------------
    let curves: Vec<(&str, Vec<(f64, f64)>)> = present
        .iter()
        .map(|(_, l, pts)| (*l, pts.iter().map(|p| (p.cost.0, p.error.0)).collect()))
        .collect();
    let lo = curves
        .iter()
        .map(|(_, c)| c.iter().map(|p| p.0).fold(f64::INFINITY, f64::min))
        .fold(f64::NEG_INFINITY, f64::max);
    let hi = curves
        .iter()
        .map(|(_, c)| c.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max))
        .fold(f64::INFINITY, f64::min);
    let _ = writeln!(s, "## Area under the test-error/FLOPs curves\n");
    if lo.is_nan() || hi.is_nan() || lo >= hi {
        let _ = writeln!(
            s,
            "The curves share no FLOPs range (their operating points do not overlap), so no area is compared.\n"
        );
        return paired_and_ablations(run, rec, rows, &present, s);
    }
    let _ = writeln!(
        s,
        "Mean test error % over the FLOPs range every curve spans ({lo:.2}% to {hi:.2}%), each curve linear between its (mean FLOPs, mean error) points; lower is better.\n\n| agent | mean error % over the shared range |\n|---|---:|"
    );
    for (l, c) in &curves {
        let v = mean_error_over(c, lo, hi).map_or("n/a".into(), |v| format!("{v:.3}"));
        let _ = writeln!(s, "| {l} | {v} |");
    }
    let _ = writeln!(s);
    paired_and_ablations(run, rec, rows, &present, s)
}

/// The `-lr0` twin of joint arm `name`: the variant's named twin, else
/// `{name}-lr0`.
pub fn twin_of(cfg: &crate::study::StudyConfig, name: &str) -> String {
    cfg.agent(name)
        .and_then(|v| v.twin.clone())
        .unwrap_or_else(|| format!("{name}-lr0"))
}

/// The paired tests and the ablation table, appended to `s`.
fn paired_and_ablations(
    run: &Path,
    rec: &RunRecord,
    rows: &[ResultRow],
    present: &[(&str, &str, Vec<PointStats<'_>>)],
    mut s: String,
) -> Result<String> {
    let cfg = &rec.config;
    // -- Paired tests -------------------------------------------------------
    let threshold = present.iter().find(|(a, _, _)| *a == "threshold");
    let ann = present.iter().find(|(a, _, _)| *a == "ann");
    let frozen = present.iter().find(|(a, _, _)| *a == "reinforce-frozen");
    let last_err = last_stage_error(run, cfg)?;
    let mut lines = Vec::new();
    // The joint agents and arms (the study's question), the agents fitted
    // by backward induction (the strongest on frozen classifiers) and the
    // frozen policy-gradient learners (which must match `ann`).
    let variant_points: Vec<(&str, Vec<PointStats<'_>>)> = cfg
        .variants()
        .into_iter()
        .filter(|v| v.name.contains("joint"))
        .map(|v| (v.name.as_str(), points(rows, &v.name)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let arms = present
        .iter()
        .map(|(a, l, p)| (*a, *l, p.as_slice()))
        .chain(variant_points.iter().map(|(n, p)| (*n, *n, p.as_slice())));
    for (a, l, pts) in arms {
        if !(a.contains("joint")
            || a == "ann"
            || a == "backward-induction"
            || a.starts_with("reinforce-frozen"))
        {
            continue;
        }
        // A joint arm against its -lr0 twin (the same policy updates,
        // classifiers fixed) and against the frozen learner.
        let joint_arm = a.contains("joint") && !a.ends_with("-lr0");
        let twin = if joint_arm {
            points(rows, &twin_of(cfg, a))
        } else {
            Vec::new()
        };
        for p in pts {
            let Some(ea) = per_image_error(run, p)? else {
                continue;
            };
            let mut cells = vec![format!("{l} at {}", p.setting())];
            let at_p = |tp: &[PointStats<'_>]| -> Result<Option<Vec<f64>>> {
                match tp
                    .iter()
                    .find(|t| t.budget == p.budget && t.alpha == p.alpha)
                {
                    Some(t) => per_image_error(run, t),
                    None => Ok(None),
                }
            };
            let same_point = |rule: Option<&(&str, &str, Vec<PointStats<'_>>)>| match rule {
                Some((_, _, tp)) => at_p(tp),
                None => Ok(None),
            };
            let vs_ann = if a == "ann" { None } else { same_point(ann)? };
            let (vs_twin, vs_frozen) = if joint_arm {
                (at_p(&twin)?, same_point(frozen)?)
            } else {
                (None, None)
            };
            for other in [
                same_point(threshold)?,
                vs_ann,
                last_err.clone(),
                vs_twin,
                vs_frozen,
            ] {
                cells.push(match other {
                    Some(eb) if eb.len() == ea.len() => {
                        let (m, lo, hi) = paired_bootstrap(&ea, &eb, 2000, 7)?;
                        format!("{m:+.2} [{lo:+.2}, {hi:+.2}]")
                    }
                    _ => "n/a".into(),
                });
            }
            lines.push(cells);
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(
            s,
            "## Paired tests on the test images\n\nDifference in test error (percentage points, the agent minus the other; negative: the agent is better) with a 95% paired-bootstrap interval over the test images; per-image errors are averaged over seeds. The FLOPs of the two may differ (see the budget table). A joint arm's twin is the same arm with classifier learning rate 0 (the same policy updates).\n\n| agent | vs threshold at the same point | vs `ann` at the same point | vs the last stage alone | vs its `-lr0` twin | vs reinforce-frozen |\n|---|---:|---:|---:|---:|---:|"
        );
        for c in lines {
            let _ = writeln!(s, "| {} |", c.join(" | "));
        }
        let _ = writeln!(s);
    }

    // -- Ablations ----------------------------------------------------------
    if !cfg.variants().is_empty() {
        let _ = writeln!(
            s,
            "## Ablations\n\nOne change at a time; every row at the same point and seeds (the swept agents and the main joint arm's twin at every point).\n\n| variant | change | point | seeds | test error % | FLOPs % | validation error % |\n|---|---|---:|---:|---:|---:|---:|"
        );
        let base_rows: Vec<(&str, &str)> = vec![
            (
                "reinforce-frozen",
                "REINFORCE on frozen classifiers (reference)",
            ),
            ("reinforce-joint", "reinforce-joint as shipped"),
            ("expected-joint", "expected-joint as shipped"),
        ];
        let at = |p: &PointStats<'_>| {
            let x = p.budget.unwrap_or(p.alpha.unwrap_or(f64::NAN));
            cfg.ablation_points.is_empty() || cfg.ablation_points.contains(&x)
        };
        // The swept agents and the arms that run everywhere (the main
        // arm's twin) at every point, the other arms at the ablation points.
        let names = base_rows
            .into_iter()
            .map(|(a, d)| (a.to_string(), d.to_string(), true))
            .chain(
                cfg.variants()
                    .into_iter()
                    .map(|v| (v.name.clone(), v.description.clone(), v.every_point)),
            );
        for (name, desc, everywhere) in names {
            for p in points(rows, &name).iter().filter(|p| everywhere || at(p)) {
                let _ = writeln!(
                    s,
                    "| {name} | {desc} | {} | {} | {} | {} | {:.2} |",
                    p.setting(),
                    p.rows.len(),
                    pm(p.error, p.rows.len()),
                    pm(p.cost, p.rows.len()),
                    p.val_error
                );
            }
        }
        let _ = writeln!(s);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_is_the_mean_of_a_linear_curve() {
        // error falls linearly from 10 at cost 0 to 6 at cost 40, then flat.
        let c = [(0.0, 10.0), (40.0, 6.0), (80.0, 6.0)];
        assert!((mean_error_over(&c, 0.0, 40.0).unwrap() - 8.0).abs() < 1e-12);
        assert!((mean_error_over(&c, 20.0, 60.0).unwrap() - 6.5).abs() < 1e-12);
        assert!(mean_error_over(&c, -1.0, 40.0).is_none());
        assert!(mean_error_over(&c, 50.0, 50.0).is_none());
    }

    #[test]
    fn paired_bootstrap_centres_on_the_difference() {
        // a wrong on 30 of 1000 images, b on 50: a is 2 points better.
        let a: Vec<f64> = (0..1000).map(|i| (i < 30) as u8 as f64).collect();
        let b: Vec<f64> = (0..1000).map(|i| (i < 50) as u8 as f64).collect();
        let (m, lo, hi) = paired_bootstrap(&a, &b, 2000, 1).unwrap();
        assert!((m + 2.0).abs() < 1e-9, "{m}");
        assert!(lo < m && m < hi && hi < 0.0, "{lo} {hi}");
        // identical outcomes: a zero-width interval at 0.
        assert_eq!(paired_bootstrap(&a, &a, 100, 1).unwrap(), (0.0, 0.0, 0.0));
    }

    #[test]
    fn paired_bootstrap_refuses_what_would_print_nan_or_nonsense() {
        let a = [0.0, 1.0, 1.0];
        for (x, y, r, want) in [
            (&a[..], &a[..], 0, "at least 100"),
            (&a[..], &a[..], 99, "at least 100"),
            (&a[..], &a[..2], 2000, "same images"),
            (&[][..], &[][..], 2000, "same images"),
            (&[0.0, 5.0, 1.0][..], &a[..], 2000, "image 1 is 5"),
            (&a[..], &[0.0, -1.0, 1.0][..], 2000, "of B at image 1"),
            (&[0.0, f64::NAN, 1.0][..], &a[..], 2000, "NaN"),
        ] {
            let e = paired_bootstrap(x, y, r, 1).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
