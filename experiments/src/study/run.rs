//! Running a study: pretrain (or reuse) the cascade, record its outputs on
//! every split once, then train, calibrate and evaluate every agent of the
//! sweep, writing the run folder as it goes.
//!
//! # Run folder
//!
//! ```text
//! RUN/
//!   config.json                 resolved StudyConfig + facts about the cascade (RunRecord)
//!   cascade/                    the pretrained cascade (cascade.json, stage{t}.safetensors,
//!                               static.md/csv, train_log.csv); never modified after pretraining
//!   traces/{train,val,test}.trace   every stage's outputs on each split (a cache; safe to delete)
//!   agents/{dataset}__{agent}__alpha{a}__seed{s}/   one folder per trained agent: agent.json,
//!                               policy.safetensors, cascade/ (joint: the fine-tuned classifiers),
//!                               train_log.csv (per epoch), train_summary.json, eval_{val,test}.json
//!   results.csv                 one row per agent x alpha x seed (see crate::results)
//!   results.shard-{i}-of-{n}.csv   rows of shard i (sharded runs; joined by `cascade merge`)
//!   summary.md                  the table
//!   figures/*.svg, *.png        the figures
//! ```
//!
//! # Work units, resuming and shards
//!
//! The sweep is a fixed list of work units: each (alpha or budget, seed)
//! of every learned agent in [`cascade_agents::AgentKind::ALL`]'s order (the frozen agent
//! before the joint agents that warm-start from it), then each point of
//! every seedless agent (thresholds, backward induction, ANN), then the
//! static stages, the oracle, the oracle curve and the ablations. Every
//! agent unit goes through one path (`Ctx::agent_unit`: build, train,
//! save, evaluate, row); agents that fine-tuned classifiers
//! ([`cascade_agents::Agent::classifiers`]) are evaluated on them, the others on the
//! recorded outputs. A unit whose rows are all in `results.csv` or any
//! shard file is skipped (nothing is trained). With `--shard i/n` only the
//! units at positions `p` with `p % n == i` run, and their rows go to
//! `results.shard-i-of-n.csv`. Learned units come first so the expensive
//! ones spread evenly over the shards.
//!
//! The joint agent fine-tunes a copy of the pretrained classifiers loaded
//! afresh into memory for each point, and saves the result under its own
//! folder: `RUN/cascade` is only ever read after pretraining.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use cascade_rl::cascade::Cascade;
use cascade_rl::data::SYNTHETIC_NOTICE;

use super::cache::{ensure_cascade, ensure_traces, prepare_cascade, verify_cascade};
use super::config::StudyConfig;
use super::data::load_study_data;
use crate::error::{read_json, write_json, Error, Result};
use crate::lock::{lock_run, lock_shard, remove_leftover_temps, Access};
use crate::results::{
    read_results_if_present, shard_files, union, write_results, ResultRow, RESULTS_FILE,
};

use super::plan::{plan, Unit};
use super::progress::Reporter;
use super::record::*;
use super::units::Ctx;

/// Runs (or resumes) the study `cfg` in `opts.out`; see the module docs.
pub fn run_study(cfg: &StudyConfig, opts: &RunOptions) -> Result<StudyOutcome> {
    let started = Instant::now();
    cfg.validate()?;
    let run = opts.out.clone();
    check_run_folder(&run)?;
    let created = !run.exists();
    std::fs::create_dir_all(&run).map_err(|e| Error::io(&run, e))?;
    let outcome = (|| {
        // Shards (and a pretrain-only step) share the folder; an unsharded
        // run is its only writer, and so may clear what killed runs left.
        let access = if opts.shard.is_some() || opts.pretrain_only {
            Access::Shared
        } else {
            Access::Exclusive
        };
        let _lock = lock_run(&run, access)?;
        let _shard_lock = match opts.shard {
            Some(s) => Some(lock_shard(&run, &s.file_name())?),
            None => None,
        };
        if access == Access::Exclusive {
            let n = remove_leftover_temps(&run)?;
            if n > 0 && opts.progress {
                eprintln!("removed {n} temporary file(s) left by a stopped run");
            }
        }
        run_locked(cfg, opts, started)
    })();
    if outcome.is_err() && created {
        remove_if_unused(&run);
    }
    outcome
}

/// Refuses, before anything is written, a run folder that is not valid
/// UTF-8, is a file, or holds files but no `config.json` (another
/// command's result, or files of the user's: a study writes its own run
/// folder only). The run folder's own parts do not count: lock files,
/// temporaries, a `cascade/` put there to be reused (checked against the
/// study when loaded), `traces/`, `agents/`, and the cluster scripts'
/// `slurm/` log folder (made before the first job starts).
fn check_run_folder(run: &Path) -> Result<()> {
    cascade_rl::folder::check_output_folder(run)?;
    if !run.is_dir() || run.join(CONFIG_FILE).exists() {
        return Ok(());
    }
    let mut other: Vec<String> = std::fs::read_dir(run)
        .map_err(|e| Error::io(run, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !(n.ends_with(".lock")
                || crate::lock::is_temp_name(n)
                || [CASCADE_DIR, TRACES_DIR, AGENTS_DIR, "slurm"].contains(&n.as_str()))
        })
        .collect();
    if other.is_empty() {
        return Ok(());
    }
    other.sort();
    other.truncate(5);
    Err(Error::run_file(
        run,
        format!(
            "holds files but no {CONFIG_FILE}, so it is not a run folder of a study ({}); \
             choose an empty or new folder for --out",
            other.join(", ")
        ),
    ))
}

/// Removes a run folder this call created when nothing but lock files
/// went into it (a run that failed before its first file).
fn remove_if_unused(run: &Path) {
    let Ok(entries) = std::fs::read_dir(run) else {
        return;
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // Lock files: run.lock, cascade.lock, results.shard-i-of-n.lock.
    if names.iter().all(|n| n.ends_with(".lock")) {
        for n in &names {
            let _ = std::fs::remove_file(run.join(n));
        }
        let _ = std::fs::remove_dir(run);
    }
}

/// [`run_study`] once the run folder is held.
fn run_locked(cfg: &StudyConfig, opts: &RunOptions, started: Instant) -> Result<StudyOutcome> {
    let run = opts.out.clone();
    check_config(&run, cfg)?;
    let preset = cfg.cascade_preset()?;
    let device = opts.device.open()?;
    let units = plan(cfg);
    let rep = Reporter::new(opts.progress, units.len());
    if cfg.is_synthetic() && opts.progress {
        rep.say(format!("\n{SYNTHETIC_NOTICE}\n"));
    }

    // -- Data and the pretrained cascade --------------------------------
    let data = load_study_data(cfg, &preset, opts.data_dir.as_deref())?;
    let splits = &data.splits;
    let cascade_dir = run.join(CASCADE_DIR);
    let pretrained = ensure_cascade(cfg, &preset, &cascade_dir, &data, opts, &device, &rep)?;
    let mut cascade = Cascade::load(
        &cascade_dir,
        &device,
        Some(&cfg.cascade),
        Some(&cfg.dataset),
    )?;
    verify_cascade(&cascade, cfg, &preset, splits, &cascade_dir)?;
    prepare_cascade(&mut cascade, cfg, &data, &rep)?;
    let info = CascadeInfo::of(&cascade);
    let threads = candle_core::utils::get_num_threads();
    if let Ok(old) = read_run_record(&run) {
        if old.threads != 0 && old.threads != threads {
            eprintln!(
                "warning: this run uses {threads} CPU threads, the folder's earlier run used {}: \
                 rows computed now may differ from theirs in the last digits \
                 (set RAYON_NUM_THREADS={} to match)",
                old.threads, old.threads
            );
        }
    }
    write_json(
        &run.join(CONFIG_FILE),
        &RunRecord {
            config: cfg.clone(),
            cascade: info.clone(),
            device: opts.device.to_string(),
            agent_images: data.agent_train.len(),
            threads,
        },
    )?;
    let mut traces = ensure_traces(&run, &cascade, &data, cfg, &rep)?;
    if opts.pretrain_only {
        rep.bar.finish_and_clear();
        return Ok(StudyOutcome {
            run_dir: run.clone(),
            results_file: run.join(RESULTS_FILE),
            pretrained,
            computed: 0,
            skipped: 0,
            units_run: 0,
            units_skipped: 0,
            figures: vec![],
            summary: None,
            synthetic: info.synthetic,
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    // -- What is done already -------------------------------------------
    let main_file = run.join(RESULTS_FILE);
    let own_file = match opts.shard {
        Some(s) => run.join(s.file_name()),
        None => main_file.clone(),
    };
    let mut sets = vec![read_results_if_present(&main_file)?];
    for f in shard_files(&run)? {
        sets.push(read_results_if_present(&f)?);
    }
    let (all_done, _) = union(sets);
    let done: HashSet<String> = all_done.iter().map(|r| r.key().to_string()).collect();
    // The rows this run's file holds: everything for an unsharded run,
    // the shard's own rows otherwise.
    let mut rows: Vec<ResultRow> = match opts.shard {
        None => all_done,
        Some(_) => read_results_if_present(&own_file)?,
    };

    // -- The sweep --------------------------------------------------------
    let k = cascade.len();
    let mut ctx = Ctx {
        cfg,
        run: &run,
        cascade_dir: &cascade_dir,
        device: &device,
        data: &data,
        traces: &mut traces,
        rep: &rep,
        quiet: !opts.progress,
    };
    let (mut computed, mut skipped, mut units_run, mut units_skipped) = (0, 0, 0, 0);
    for (pos, unit) in units.iter().enumerate() {
        if let Some(s) = opts.shard {
            if !s.owns(pos) {
                rep.bar.inc(1);
                continue;
            }
        }
        let keys = unit.keys(cfg, k);
        if keys.iter().all(|key| done.contains(&key.to_string())) {
            skipped += keys.len();
            units_skipped += 1;
            rep.bar.inc(1);
            continue;
        }
        rep.bar.set_message(unit.describe());
        let t0 = Instant::now();
        let new_rows = ctx.run_unit(unit)?;
        let shown: Vec<&ResultRow> = match unit {
            // One line for the oracle curve: its ends.
            Unit::OracleCurve => new_rows
                .first()
                .into_iter()
                .chain(new_rows.last())
                .collect(),
            _ => new_rows.iter().collect(),
        };
        for r in shown {
            rep.say(format!(
                "{}: test error {:.2}%, cost {:.2}% of the largest stage ({:.1} s)",
                r.key(),
                r.error_pct,
                r.cost_pct,
                t0.elapsed().as_secs_f64()
            ));
        }
        computed += new_rows.len();
        units_run += 1;
        let fresh: HashSet<String> = new_rows.iter().map(|r| r.key().to_string()).collect();
        rows.retain(|r| !fresh.contains(&r.key().to_string()));
        rows.extend(new_rows);
        write_results(&own_file, &rows)?;
        rep.bar.inc(1);
    }
    rep.bar.finish_and_clear();

    // -- Report -------------------------------------------------------------
    let (mut figures, mut summary) = (Vec::new(), None);
    if opts.shard.is_none() && opts.report && !rows.is_empty() {
        summary = Some(crate::summary::write_summary(&run)?);
        crate::outcomes::pack(&run)?;
        crate::outcomes::pack_logs(&run)?;
        figures = crate::figures::draw_all(&run)?;
    }
    Ok(StudyOutcome {
        run_dir: run,
        results_file: own_file,
        pretrained,
        computed,
        skipped,
        units_run,
        units_skipped,
        figures,
        summary,
        synthetic: info.synthetic,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Refuses a run folder made with other settings.
fn check_config(run: &Path, cfg: &StudyConfig) -> Result<()> {
    let path = run.join(CONFIG_FILE);
    if !path.exists() {
        return Ok(());
    }
    let old: serde_json::Value = read_json(&path)?;
    let old_cfg = old
        .get("config")
        .cloned()
        .ok_or_else(|| Error::run_file(&path, "no `config` object"))?;
    let old_cfg: StudyConfig = serde_json::from_value(old_cfg).map_err(|e| {
        Error::run_file(
            &path,
            format!("written by another version of this study ({e}); use another --out"),
        )
    })?;
    let changed = old_cfg.changed_agents(cfg);
    if !changed.is_empty() {
        return Err(Error::Mismatch {
            path,
            msg: format!(
                "this run folder holds agents of the same names with other settings ({}); \
                 give the new settings a new name, use another --out, or delete the folder \
                 to start over",
                changed.join(", ")
            ),
        });
    }
    let (a, b) = (old_cfg.identity(), cfg.identity());
    if a != b {
        let mut differ = Vec::new();
        if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
            for (key, v) in a {
                if b.get(key) != Some(v) {
                    differ.push(key.clone());
                }
            }
        }
        return Err(Error::Mismatch {
            path,
            msg: format!(
                "this run folder holds a study with other settings (differs in: {}); \
                 use another --out, or delete the folder to start over",
                differ.join(", ")
            ),
        });
    }
    Ok(())
}
