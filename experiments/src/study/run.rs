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
//! of every learned agent in [`AgentKind::ALL`]'s order (the frozen agent
//! before the joint agents that warm-start from it), then each point of
//! every seedless agent (thresholds, backward induction, ANN), then the
//! static stages, the oracle, the oracle curve and the ablations. Every
//! agent unit goes through one path (`Ctx::agent_unit`: build, train,
//! save, evaluate, row); agents that fine-tuned classifiers
//! ([`Agent::classifiers`]) are evaluated on them, the others on the
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
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cascade_agents::{
    evaluate, ActMode, Agent, BackwardAgent, Confidence, EvalConfig, EvalReport, JointSplits,
    OracleAgent, ReinforceAgent, ReinforceConfig, ReinforceMode, StaticAgent, ThresholdAgent,
    TrainData, TrainOptions, TrainSummary,
};
use cascade_env::{ReplayBackend, RewardSpec, StageBackend};
use cascade_rl::backend::CandleBackend;
use cascade_rl::checkpoint::{Cascade, SplitRoles, MANIFEST_FILE};
use cascade_rl::data::{Dataset, Splits, SYNTHETIC_NOTICE};
use cascade_rl::device::DeviceSpec;
use cascade_rl::presets::Preset;
use cascade_rl::train::{pretrain, PretrainOptions, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::config::{StudyConfig, Variant};
use super::data::{load_study_data, StudyData};
use super::oracle::{oracle_at, Scores};
use crate::error::{read_json, write_json, Error, Result};
use crate::lock::{
    lock_run, lock_shard, lock_waiting, remove_leftover_temps, Access, CASCADE_LOCK,
};
use crate::results::{
    read_results_if_present, shard_files, union, write_results, PointKey, ResultRow, Shard,
    RESULTS_FILE,
};
use cascade_agents::AgentKind;

/// File name of the resolved configuration in a run folder.
pub const CONFIG_FILE: &str = "config.json";
/// Folder of the pretrained cascade in a run folder.
pub const CASCADE_DIR: &str = "cascade";
/// Folder of the recorded traces in a run folder.
pub const TRACES_DIR: &str = "traces";
/// Folder of the agents in a run folder.
pub const AGENTS_DIR: &str = "agents";
/// The per-epoch log in an agent folder.
pub const TRAIN_LOG: &str = "train_log.csv";

/// How a study runs (nothing here changes its numbers).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run folder.
    pub out: PathBuf,
    /// Device of the classifiers (pretraining, traces, joint training).
    pub device: DeviceSpec,
    /// Data folder (default: discovery).
    pub data_dir: Option<PathBuf>,
    /// Run one shard of the sweep.
    pub shard: Option<Shard>,
    /// Stop after pretraining and recording the traces.
    pub pretrain_only: bool,
    /// Progress bars (on a terminal) or one line per unit (otherwise).
    pub progress: bool,
    /// Draw figures and write the summary at the end (unsharded runs).
    pub report: bool,
}

impl RunOptions {
    /// Defaults: CPU, discovered data, unsharded, quiet, with the report.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        RunOptions {
            out: out.into(),
            device: DeviceSpec::Cpu,
            data_dir: None,
            shard: None,
            pretrain_only: false,
            progress: false,
            report: true,
        }
    }
}

/// Facts about the cascade a study ran on, for reports and figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeInfo {
    /// Cascade preset name.
    pub preset: String,
    /// Data set name.
    pub dataset: String,
    /// Built-in synthetic data.
    pub synthetic: bool,
    /// The synthetic-data notice, when synthetic.
    pub notice: Option<String>,
    /// Where the data came from.
    pub data_source: String,
    /// Model name of each stage, cheapest first.
    pub stage_names: Vec<String>,
    /// MACs per image of each stage run alone.
    pub stage_macs: Vec<u64>,
    /// Class names.
    pub class_names: Vec<String>,
    /// Split sizes `[train, val, test]`.
    pub split_sizes: [usize; 3],
}

impl CascadeInfo {
    fn of(c: &Cascade) -> Self {
        let m = c.manifest();
        CascadeInfo {
            preset: m.preset.clone(),
            dataset: m.dataset.clone(),
            synthetic: m.synthetic,
            notice: m.notice.clone(),
            data_source: m.data_source.clone(),
            stage_names: m.stages.iter().map(|s| s.name.clone()).collect(),
            stage_macs: m.stages.iter().map(|s| s.macs).collect(),
            class_names: m.class_names.clone(),
            split_sizes: [m.split.n_train, m.split.n_val, m.split.n_test],
        }
    }

    /// A human name of the data set for titles (`Fashion-MNIST`, ...),
    /// with `SYNTHETIC` when it is the built-in set.
    pub fn dataset_title(&self) -> String {
        match self.dataset.as_str() {
            "fashion-mnist" => "Fashion-MNIST".into(),
            "mnist" => "MNIST".into(),
            "kmnist" => "KMNIST".into(),
            "cifar10" => "CIFAR-10".into(),
            "cifar100" => "CIFAR-100".into(),
            "synthetic" => "SYNTHETIC data".into(),
            other => other.to_string(),
        }
    }
}

/// What `config.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The resolved study configuration.
    pub config: StudyConfig,
    /// The cascade it ran on.
    pub cascade: CascadeInfo,
    /// The device of the last run in the folder.
    pub device: String,
    /// The learned agents' training images (held out from pretraining).
    #[serde(default)]
    pub agent_images: usize,
    /// Threads of the CPU kernels in the last run in the folder (0: not
    /// recorded). Sums split over threads round differently, so a run's
    /// numbers are reproduced bit for bit at the same thread count.
    #[serde(default)]
    pub threads: usize,
}

/// Reads `run_dir/config.json`.
pub fn read_run_record(run_dir: &Path) -> Result<RunRecord> {
    read_json(&run_dir.join(CONFIG_FILE))
}

/// What a study run did.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyOutcome {
    /// The run folder.
    pub run_dir: PathBuf,
    /// The results file written (`results.csv`, or the shard's file).
    pub results_file: PathBuf,
    /// Whether the cascade was pretrained in this run (false: reused).
    pub pretrained: bool,
    /// Result rows computed in this run.
    pub computed: usize,
    /// Result rows skipped because they were already present.
    pub skipped: usize,
    /// Work units run / skipped / owned by other shards.
    pub units_run: usize,
    /// Work units skipped (all rows present).
    pub units_skipped: usize,
    /// Figures written (PNG paths; an SVG lies beside each).
    pub figures: Vec<PathBuf>,
    /// The summary written.
    pub summary: Option<PathBuf>,
    /// True when the data is the built-in synthetic set.
    pub synthetic: bool,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// One operating point of a sweep: an alpha, or a budget with its starting alpha.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    alpha: f64,
    budget: Option<f64>,
}

impl Point {
    /// The point's part of a folder name: `budget0.18`, `alpha0.01`; a
    /// number whose plain form is long is written in exponent form
    /// (`alpha1e-7`), so names stay short.
    fn tag(&self) -> String {
        fn short(x: f64) -> String {
            let plain = x.to_string();
            if plain.len() <= 12 {
                plain
            } else {
                format!("{x:e}")
            }
        }
        match self.budget {
            Some(b) => format!("budget{}", short(b)),
            None => format!("alpha{}", short(self.alpha)),
        }
    }
}

/// A work unit (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    /// An agent of the sweep at a point, with a seed unless the kind is
    /// seedless.
    Agent(AgentKind, Point, Option<u64>),
    /// `cfg.variants[i]` at a point with a seed.
    Variant(usize, Point, u64),
    Static,
    Oracle,
    OracleCurve,
}

fn plan(cfg: &StudyConfig) -> Vec<Unit> {
    let points: Vec<Point> = if cfg.budget_mode() {
        cfg.budgets
            .iter()
            .map(|&b| Point {
                alpha: cfg.budget_alpha0,
                budget: Some(b),
            })
            .collect()
    } else {
        cfg.alphas
            .iter()
            .map(|&a| Point {
                alpha: a,
                budget: None,
            })
            .collect()
    };
    // The learned agents first, in display order, so the frozen agent
    // comes before the joint agents that warm-start from it (they train it
    // themselves when it is missing, e.g. in another shard); then the
    // seedless ones.
    let mut units = Vec::new();
    let swept = |seedless: bool| {
        AgentKind::ALL
            .into_iter()
            .filter(move |a| a.seedless() == seedless && cfg.agents.contains(a))
    };
    for agent in swept(false) {
        for p in &points {
            for &s in &cfg.seeds {
                units.push(Unit::Agent(agent, *p, Some(s)));
            }
        }
    }
    for agent in swept(true) {
        units.extend(points.iter().map(|&p| Unit::Agent(agent, p, None)));
    }
    units.extend([Unit::Static, Unit::Oracle, Unit::OracleCurve]);
    // Ablations of the joint agents swept (not in an `alpha_sweep` of
    // another agent).
    for (i, v) in cfg.variants.iter().enumerate() {
        if !cfg.agents.contains(&v.base) {
            continue;
        }
        for p in &points {
            let x = p.budget.unwrap_or(p.alpha);
            if cfg.ablation_points.is_empty() || cfg.ablation_points.contains(&x) {
                for &s in &cfg.seeds {
                    units.push(Unit::Variant(i, *p, s));
                }
            }
        }
    }

    units
}

impl Unit {
    fn keys(&self, cfg: &StudyConfig, k: usize) -> Vec<PointKey> {
        match *self {
            Unit::Agent(a, p, s) => vec![PointKey::new(a.name(), Some(p.alpha), p.budget, s)],
            Unit::Variant(i, p, s) => vec![PointKey::new(
                &cfg.variants[i].name,
                Some(p.alpha),
                p.budget,
                Some(s),
            )],
            Unit::Static => (1..=k)
                .map(|t| PointKey::new(&format!("static-{t}"), None, None, None))
                .collect(),
            Unit::Oracle => vec![PointKey::new("oracle", None, None, None)],
            Unit::OracleCurve => cfg
                .oracle_alphas
                .iter()
                .map(|&a| PointKey::new("oracle-alpha", Some(a), None, None))
                .collect(),
        }
    }

    fn describe(&self) -> String {
        match *self {
            Unit::Agent(a, p, Some(s)) => format!("{} {} seed {s}", a.name(), p.tag()),
            Unit::Agent(a, p, None) => format!("{} {}", a.name(), p.tag()),
            Unit::Variant(i, p, s) => format!("variant {} {} seed {s}", i + 1, p.tag()),
            Unit::Static => "static stages".into(),
            Unit::Oracle => "oracle".into(),
            Unit::OracleCurve => "oracle curve".into(),
        }
    }
}

/// Progress output: a bar over work units on a terminal, plain lines
/// otherwise, nothing when quiet.
struct Reporter {
    bar: ProgressBar,
    on: bool,
}

impl Reporter {
    fn new(on: bool, len: usize) -> Self {
        let bar = if on && std::io::stderr().is_terminal() {
            let b = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "study [{elapsed_precise}] {bar:30} {pos}/{len} units {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        } else {
            ProgressBar::hidden()
        };
        Reporter { bar, on }
    }

    fn say(&self, line: impl AsRef<str>) {
        if !self.on {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line.as_ref());
        }
    }

    /// Runs `f` with the bar cleared, so that the bars of pretraining and
    /// agent training draw alone.
    fn quietly<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }
}

/// Runs (or resumes) the study `cfg` in `opts.out`; see the module docs.
pub fn run_study(cfg: &StudyConfig, opts: &RunOptions) -> Result<StudyOutcome> {
    let started = Instant::now();
    cfg.validate()?;
    let run = opts.out.clone();
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

/// Pretrains the cascade into `dir` unless a complete one is there.
/// Concurrent runs on one folder (shards started together) serialise on
/// the lock file `dir/../cascade.lock`, an operating-system lock released
/// when its holder ends however it ends: one pretrains, the others wait
/// and then find `cascade.json`. Returns whether this call pretrained.
fn ensure_cascade(
    cfg: &StudyConfig,
    preset: &Preset,
    dir: &Path,
    data: &StudyData,
    opts: &RunOptions,
    device: &candle_core::Device,
    rep: &Reporter,
) -> Result<bool> {
    if dir.join(MANIFEST_FILE).exists() {
        return Ok(false);
    }
    let lock = dir.with_file_name(CASCADE_LOCK);
    let _held = lock_waiting(&lock, || {
        rep.say(format!(
            "waiting for another process to pretrain the cascade (it holds {})",
            lock.display()
        ))
    })?;
    if dir.join(MANIFEST_FILE).exists() {
        return Ok(false);
    }
    rep.say(format!(
        "pretraining cascade {} on {} ({} training images) into {}",
        cfg.cascade,
        preset.dataset,
        data.splits.train.len(),
        dir.display()
    ));
    let popts = PretrainOptions {
        out_dir: dir.to_path_buf(),
        seed: cfg.pretrain.seed,
        // The preset passed in carries the study's epochs.
        epochs: None,
        data_dir: opts.data_dir.clone(),
        device: device.clone(),
        split: data.pretrain_split,
        progress: if opts.progress {
            Progress::Bar
        } else {
            Progress::Quiet
        },
    };
    let s = rep.quietly(|| pretrain(preset, &popts))?;
    rep.say(format!("pretrained in {:.1} s", s.seconds));
    Ok(true)
}

/// Records the study's data roles in `cascade.json` and, once, fits the
/// stage temperatures on the policy images (D_P: held out from the
/// classifiers, and not the selection split). With no policy images
/// (`agent_fraction` 0) the temperatures stay 1: every other split is
/// spoken for.
fn prepare_cascade(
    cascade: &mut Cascade,
    cfg: &StudyConfig,
    data: &StudyData,
    rep: &Reporter,
) -> Result<()> {
    let held_out = cfg.pretrain.agent_fraction > 0.0;
    let roles = SplitRoles {
        classifier_train: data.splits.train.len(),
        policy_train: data.agent_train.len(),
        validation: data.splits.val.len(),
        test: data.splits.test.len(),
        rule: if held_out {
            format!(
                "the seeded training split's first {} images train the classifiers, the next {} \
                 the policies; validation carved from the training set before that, test the \
                 data set's own",
                data.splits.train.len(),
                data.agent_train.len()
            )
        } else {
            "the policies train on the classifiers' own training images".into()
        },
    };
    if cascade.manifest().roles.as_ref() != Some(&roles) {
        cascade.record_roles(roles)?;
    }
    if held_out && cascade.manifest().calibration.is_none() {
        let t0 = Instant::now();
        cascade.calibrate(&data.agent_train, "policy_train", cfg.eval_batch)?;
        let temps: Vec<String> = cascade
            .temperatures()
            .iter()
            .map(|t| format!("{t:.3}"))
            .collect();
        rep.say(format!(
            "fitted stage temperatures [{}] on the {} policy images in {:.1} s",
            temps.join(", "),
            data.agent_train.len(),
            t0.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

/// Checks that the cascade in `dir` is the one the study asks for: preset,
/// data set (checked on load), seed, every stage's model and recipe, and
/// the split (sizes and normalisation statistics).
fn verify_cascade(
    cascade: &Cascade,
    cfg: &StudyConfig,
    preset: &Preset,
    splits: &Splits,
    dir: &Path,
) -> Result<()> {
    let m = cascade.manifest();
    let path = dir.join(MANIFEST_FILE);
    let mut differ = Vec::new();
    if m.seed != cfg.pretrain.seed {
        differ.push(format!("seed {} (study: {})", m.seed, cfg.pretrain.seed));
    }
    if m.stages.len() != preset.stages.len() {
        differ.push(format!(
            "{} stages (preset: {})",
            m.stages.len(),
            preset.stages.len()
        ));
    }
    for (r, p) in m.stages.iter().zip(&preset.stages) {
        if r.model != p.model {
            differ.push(format!(
                "stage {} model {} (preset: {})",
                r.stage,
                r.model.name(),
                p.model.name()
            ));
        }
        if r.train != p.train {
            differ.push(format!(
                "stage {} training recipe ({} epochs; preset: {} epochs)",
                r.stage, r.train.epochs, p.train.epochs
            ));
        }
    }
    let sizes = [splits.train.len(), splits.val.len(), splits.test.len()];
    let have = [m.split.n_train, m.split.n_val, m.split.n_test];
    if sizes != have {
        differ.push(format!(
            "split sizes train/val/test {have:?} (study: {sizes:?})"
        ));
    } else if m.normalization != splits.normalization {
        differ.push("normalisation statistics (another split of the data)".into());
    }
    if differ.is_empty() {
        Ok(())
    } else {
        Err(Error::Mismatch {
            path,
            msg: format!(
                "the pretrained cascade does not match the study: {}; delete {} to pretrain again, or use another --out",
                differ.join("; "),
                dir.display()
            ),
        })
    }
}

/// The three recorded splits.
struct Traces {
    train: ReplayBackend,
    val: ReplayBackend,
    test: ReplayBackend,
}

/// FNV-1a over the cascade's files: traces recorded from other weights are
/// not reused.
fn cascade_fingerprint(cascade: &Cascade) -> Result<String> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    let dir = cascade.dir();
    let mut files = vec![MANIFEST_FILE.to_string()];
    files.extend(cascade.manifest().stages.iter().map(|s| s.file.clone()));
    for f in files {
        let p = dir.join(&f);
        feed(&std::fs::read(&p).map_err(|e| Error::io(&p, e))?);
    }
    Ok(format!("{h:016x}"))
}

/// Loads the recorded traces of the cascade or records them (once: later
/// runs and shards reuse them).
fn ensure_traces(
    run: &Path,
    cascade: &Cascade,
    data: &StudyData,
    cfg: &StudyConfig,
    rep: &Reporter,
) -> Result<Traces> {
    let dir = run.join(TRACES_DIR);
    let stamp_path = dir.join("fingerprint.txt");
    let fp = cascade_fingerprint(cascade)?;
    let fresh = std::fs::read_to_string(&stamp_path)
        .map(|s| s.trim() == fp)
        .unwrap_or(false);
    let get = |split: &str, ds: &Dataset| -> Result<ReplayBackend> {
        let path = dir.join(format!("{split}.trace"));
        if fresh && path.exists() {
            if let Ok(t) = ReplayBackend::load(&path) {
                if t.labels() == ds.labels.as_slice() && t.num_stages() == cascade.len() {
                    return Ok(t);
                }
            }
        }
        let t0 = Instant::now();
        let mut b = CandleBackend::new(cascade, ds, cfg.eval_batch)?;
        let t = rep.quietly(|| b.record_trace(split))?;
        t.save(&path)?;
        rep.say(format!(
            "recorded the cascade's outputs on {split} ({} images) in {:.1} s",
            ds.len(),
            t0.elapsed().as_secs_f64()
        ));
        Ok(t)
    };
    let traces = Traces {
        train: get("train", &data.agent_train)?,
        val: get("val", &data.splits.val)?,
        test: get("test", &data.splits.test)?,
    };
    crate::error::write_file(&stamp_path, format!("{fp}\n").as_bytes())?;
    Ok(traces)
}

/// An agent to train at a point: a kind of the sweep with the study's
/// settings, or an ablation of a joint kind.
struct AgentJob {
    /// Its name in results and agent folders.
    name: String,
    kind: AgentKind,
    /// Joint kinds: start from a fresh policy instead of the frozen agent.
    cold_start: bool,
    /// Joint kinds: replaces the study's policy settings.
    policy: Option<ReinforceConfig>,
    joint: cascade_agents::JointConfig,
    expected: cascade_agents::ExpectedJointConfig,
}

impl AgentJob {
    /// `kind` with the study's settings.
    fn of(kind: AgentKind, cfg: &StudyConfig) -> Self {
        AgentJob {
            name: kind.name().to_string(),
            kind,
            cold_start: false,
            policy: None,
            joint: cfg.joint_classifiers.clone(),
            expected: cfg.expected_classifiers.clone(),
        }
    }

    /// The ablation `v`.
    fn variant(v: &Variant, cfg: &StudyConfig) -> Self {
        AgentJob {
            name: v.name.clone(),
            kind: v.base,
            cold_start: v.cold_start,
            policy: v.policy.clone(),
            joint: v
                .joint
                .clone()
                .unwrap_or_else(|| cfg.joint_classifiers.clone()),
            expected: v
                .expected
                .clone()
                .unwrap_or_else(|| cfg.expected_classifiers.clone()),
        }
    }
}

/// Everything a work unit needs.
struct Ctx<'a> {
    cfg: &'a StudyConfig,
    run: &'a Path,
    cascade_dir: &'a Path,
    device: &'a candle_core::Device,
    data: &'a StudyData,
    traces: &'a mut Traces,
    rep: &'a Reporter,
    quiet: bool,
}

impl Ctx<'_> {
    fn spec(&self, alpha: f64) -> RewardSpec {
        RewardSpec {
            alpha,
            ..self.cfg.reward
        }
    }

    fn eval_cfg(&self, split: &str, seed: u64) -> EvalConfig {
        EvalConfig {
            split: split.into(),
            seed,
            num_envs: self.cfg.num_envs,
            mode: ActMode::Greedy,
            count_policy_cost: self.cfg.count_policy_cost,
        }
    }

    fn train_opts(&self, p: Point, seed: u64, log: Option<PathBuf>) -> TrainOptions {
        TrainOptions {
            spec: self.spec(p.alpha),
            budget: p.budget,
            seed,
            quiet: self.quiet,
            log_csv: log,
            count_policy_cost: self.cfg.count_policy_cost,
            num_envs: self.cfg.num_envs,
        }
    }

    fn agent_dir(&self, agent: &str, p: Point, seed: Option<u64>) -> (PathBuf, String) {
        let mut name = format!("{}__{}__{}", self.cfg.dataset, agent, p.tag());
        if let Some(s) = seed {
            name.push_str(&format!("__seed{s}"));
        }
        let rel = format!("{AGENTS_DIR}/{name}");
        (self.run.join(&rel), rel)
    }

    /// Evaluates `agent` on the recorded val and test splits.
    fn eval_replay(
        &mut self,
        agent: &dyn Agent,
        spec: &RewardSpec,
        seed: u64,
    ) -> Result<(EvalReport, EvalReport)> {
        let (vc, tc) = (self.eval_cfg("val", seed), self.eval_cfg("test", seed));
        let val = evaluate(agent, &mut self.traces.val, spec, &vc)?;
        let test = evaluate(agent, &mut self.traces.test, spec, &tc)?;
        Ok((val, test))
    }

    fn run_unit(&mut self, unit: &Unit) -> Result<Vec<ResultRow>> {
        match *unit {
            Unit::Static => {
                let k = self.traces.test.num_stages();
                let spec = self.spec(0.0);
                let mut rows = Vec::with_capacity(k);
                for t in 0..k {
                    let a = StaticAgent::new(t, k)?;
                    let (val, test) = self.eval_replay(&a, &spec, 0)?;
                    rows.push(self.row(
                        &a.name(),
                        "static",
                        None,
                        None,
                        None,
                        &val,
                        &test,
                        None,
                        "",
                    ));
                }
                Ok(rows)
            }
            Unit::Oracle => {
                let a = OracleAgent::new(self.traces.test.num_stages())?;
                let (val, test) = self.eval_replay(&a, &self.spec(0.0), 0)?;
                Ok(vec![self.row(
                    "oracle", "oracle", None, None, None, &val, &test, None, "",
                )])
            }
            Unit::OracleCurve => {
                let mut rows = Vec::new();
                for &alpha in &self.cfg.oracle_alphas {
                    let spec = self.spec(alpha);
                    let val = oracle_at(&self.traces.val, &spec)?;
                    let test = oracle_at(&self.traces.test, &spec)?;
                    rows.push(self.row_from(
                        "oracle-alpha",
                        "oracle",
                        Some(alpha),
                        None,
                        None,
                        &val,
                        &test,
                        Some(alpha),
                        None,
                        "",
                    ));
                }
                Ok(rows)
            }
            Unit::Agent(kind, p, seed) => {
                let job = AgentJob::of(kind, self.cfg);
                self.agent_unit(&job, p, seed)
            }
            Unit::Variant(i, p, seed) => {
                let job = AgentJob::variant(&self.cfg.variants[i], self.cfg);
                self.agent_unit(&job, p, Some(seed))
            }
        }
    }

    /// Trains, saves and evaluates one agent at point `p` (with `seed`;
    /// `None` for the seedless kinds), and returns its row. Agents that
    /// fine-tuned classifiers are evaluated on them, the others on the
    /// recorded outputs.
    fn agent_unit(
        &mut self,
        job: &AgentJob,
        p: Point,
        seed: Option<u64>,
    ) -> Result<Vec<ResultRow>> {
        let (dir, rel) = self.agent_dir(&job.name, p, seed);
        let s = seed.unwrap_or(0);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let (agent, summary) = self.train_agent(job, p, s, &dir)?;
        agent.save(&dir)?;
        let spec = self.spec(summary.alpha);
        let (val, test) = match agent.classifiers() {
            Some(tuned) => {
                let (val_ds, test_ds) = (&self.data.splits.val, &self.data.splits.test);
                let mut vb = CandleBackend::new(tuned, val_ds, self.cfg.eval_batch)?;
                let val = evaluate(&*agent, &mut vb, &spec, &self.eval_cfg("val", s))?;
                let mut tb = CandleBackend::new(tuned, test_ds, self.cfg.eval_batch)?;
                let test = evaluate(&*agent, &mut tb, &spec, &self.eval_cfg("test", s))?;
                (val, test)
            }
            None if job.kind.joint() => {
                return Err(Error::Config(format!(
                    "{}: training returned no fine-tuned cascade",
                    job.name
                )))
            }
            None => self.eval_replay(&*agent, &spec, s)?,
        };
        self.save_reports(&dir, &summary, &val, &test)?;
        Ok(vec![self.row(
            &job.name,
            job.kind.family(),
            Some(p),
            seed,
            Some(&summary),
            &val,
            &test,
            None,
            &rel,
        )])
    }

    /// Builds `job`'s agent and trains it at `p` with `seed` (training log
    /// in `dir` for the learned kinds).
    fn train_agent(
        &mut self,
        job: &AgentJob,
        p: Point,
        seed: u64,
        dir: &Path,
    ) -> Result<(Box<dyn Agent>, TrainSummary)> {
        let which = job.kind;
        let k = self.traces.test.num_stages();
        let fitted: Box<dyn Agent> = match which {
            AgentKind::BackwardInduction | AgentKind::Ann => {
                let cfg = if which == AgentKind::Ann {
                    &self.cfg.ann
                } else {
                    &self.cfg.backward
                };
                Box::new(BackwardAgent::new(
                    cfg.clone(),
                    self.traces.test.feature_dims(),
                    self.traces.test.num_classes(),
                )?)
            }
            AgentKind::Threshold | AgentKind::ThresholdPerStage | AgentKind::ThresholdEntropy => {
                let mut cfg = self.cfg.threshold.clone();
                cfg.per_stage |= which == AgentKind::ThresholdPerStage;
                if which == AgentKind::ThresholdEntropy {
                    cfg.confidence = Confidence::Entropy;
                }
                Box::new(ThresholdAgent::new(cfg, k)?)
            }
            AgentKind::ReinforceFrozen => {
                let (agent, summary) = self.train_frozen(p, seed)?;
                return Ok((Box::new(agent), summary));
            }
            AgentKind::ReinforceJoint | AgentKind::ExpectedJoint => {
                let (agent, summary) = self.train_joint(job, p, seed, dir)?;
                return Ok((Box::new(agent), summary));
            }
        };
        let mut agent = fitted;
        let opts = self.train_opts(p, 0, None);
        let summary = agent.train(
            TrainData {
                train: &mut self.traces.train,
                val: &mut self.traces.val,
            },
            &opts,
        )?;
        Ok((agent, summary))
    }

    /// Trains a joint agent (or an ablation of one), warm-started from the
    /// frozen agent at the same point and seed unless `job.cold_start`.
    fn train_joint(
        &mut self,
        job: &AgentJob,
        p: Point,
        seed: u64,
        dir: &Path,
    ) -> Result<(ReinforceAgent, TrainSummary)> {
        // Warm start: the frozen agent at the same point and seed (and,
        // under a budget, the alpha its dual ascent reached).
        let (mut agent, start_alpha) = if job.cold_start {
            let fresh = ReinforceAgent::for_backend(self.cfg.frozen.clone(), &self.traces.val)?;
            (fresh, None)
        } else {
            let (frozen, alpha) = self.frozen_agent(p, seed)?;
            (frozen, Some(alpha))
        };
        let mut opts = self.train_opts(p, seed, Some(dir.join(TRAIN_LOG)));
        if let (Some(_), Some(alpha)) = (p.budget, start_alpha) {
            // Dual ascent goes on from where the frozen agent's ended.
            opts.spec.alpha = alpha;
        }
        // The pretrained classifiers as recorded (with their fitted
        // temperatures), loaded for this agent alone: joint training
        // fine-tunes the cascade it owns.
        let cascade = Cascade::load(
            self.cascade_dir,
            self.device,
            Some(&self.cfg.cascade),
            Some(&self.cfg.dataset),
        )?;
        let val_ds = &self.data.splits.val;
        let summary = if job.kind == AgentKind::ReinforceJoint {
            agent.set_config(job.policy.clone().unwrap_or_else(|| self.cfg.joint.clone()))?;
            let joint_cfg = job.joint.clone();
            let train_ds = &self.data.agent_train;
            self.rep
                .quietly(|| agent.train_joint(cascade, train_ds, val_ds, &joint_cfg, &opts))?
        } else {
            agent.set_config(
                job.policy
                    .clone()
                    .unwrap_or_else(|| self.cfg.expected.clone()),
            )?;
            let ecfg = job.expected.clone();
            let splits = JointSplits {
                classifier_train: &self.data.splits.train,
                policy_train: &self.data.agent_train,
                val: val_ds,
            };
            self.rep
                .quietly(|| agent.train_expected_joint(cascade, splits, &ecfg, &opts))?
        };
        Ok((agent, summary))
    }

    /// Trains the REINFORCE agent on the frozen classifiers at point `p`
    /// with `seed` (replaying the recorded stage outputs), its training log
    /// in its folder.
    fn train_frozen(&mut self, p: Point, seed: u64) -> Result<(ReinforceAgent, TrainSummary)> {
        let (dir, _) = self.agent_dir(AgentKind::ReinforceFrozen.name(), p, Some(seed));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let opts = self.train_opts(p, seed, Some(dir.join(TRAIN_LOG)));
        let mut agent = ReinforceAgent::for_backend(self.cfg.frozen.clone(), &self.traces.val)?;
        let rep = self.rep;
        let data = TrainData {
            train: &mut self.traces.train,
            val: &mut self.traces.val,
        };
        let summary = rep.quietly(|| agent.train(data, &opts))?;
        Ok((agent, summary))
    }

    /// The frozen agent at `p` and `seed`: loaded from its folder when a
    /// finished one is there, trained (deterministically, as its own unit
    /// would) and saved otherwise.
    /// Returns it with the alpha of its kept epoch (under a budget, where
    /// dual ascent left it).
    fn frozen_agent(&mut self, p: Point, seed: u64) -> Result<(ReinforceAgent, f64)> {
        let (dir, _) = self.agent_dir(AgentKind::ReinforceFrozen.name(), p, Some(seed));
        let summary = dir.join("train_summary.json");
        if summary.exists() {
            if let (Ok(a), Ok(s)) = (
                ReinforceAgent::load(&dir),
                read_json::<TrainSummary>(&summary),
            ) {
                if a.mode() == ReinforceMode::Frozen {
                    return Ok((a, s.alpha));
                }
            }
        }
        let (a, s) = self.train_frozen(p, seed)?;
        a.save(&dir)?;
        Ok((a, s.alpha))
    }

    fn save_reports(
        &self,
        dir: &Path,
        summary: &TrainSummary,
        val: &EvalReport,
        test: &EvalReport,
    ) -> Result<()> {
        write_json(&dir.join("train_summary.json"), summary)?;
        val.write_json(&dir.join("eval_val.json"))?;
        test.write_json(&dir.join("eval_test.json"))?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        agent: &str,
        kind: &str,
        p: Option<Point>,
        seed: Option<u64>,
        summary: Option<&TrainSummary>,
        val: &EvalReport,
        test: &EvalReport,
        final_alpha: Option<f64>,
        agent_dir: &str,
    ) -> ResultRow {
        let mut r = self.row_from(
            agent,
            kind,
            p.map(|p| p.alpha),
            p.and_then(|p| p.budget),
            seed,
            &Scores::from(val),
            &Scores::from(test),
            final_alpha.or(summary.map(|s| s.alpha)),
            summary,
            agent_dir,
        );
        r.train_seconds = summary.map_or(0.0, |s| s.seconds);
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn row_from(
        &self,
        agent: &str,
        kind: &str,
        alpha: Option<f64>,
        budget: Option<f64>,
        seed: Option<u64>,
        val: &Scores,
        test: &Scores,
        final_alpha: Option<f64>,
        summary: Option<&TrainSummary>,
        agent_dir: &str,
    ) -> ResultRow {
        let name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let learned =
            summary.filter(|s| s.epochs_run > 0 || kind == "reinforce" || kind == "expected");
        ResultRow {
            agent: agent.to_string(),
            kind: kind.to_string(),
            alpha,
            budget,
            seed,
            dataset: self.cfg.dataset.clone(),
            cascade: self.cfg.cascade.clone(),
            n: test.n,
            error_pct: 100.0 * test.error,
            cost_pct: test.cost_pct,
            cost_pct_std: test.cost_pct_std,
            classifier_cost_pct: test.classifier_cost_pct,
            policy_cost_pct: test.policy_cost_pct,
            mean_reward: test.mean_reward,
            val_error_pct: 100.0 * val.error,
            val_cost_pct: val.cost_pct,
            val_mean_reward: val.mean_reward,
            final_alpha,
            budget_met: summary.and_then(|s| s.budget_met),
            epochs_run: learned.map(|s| s.epochs_run),
            best_epoch: learned.map(|s| s.best_epoch),
            train_seconds: 0.0,
            eval_seconds: test.seconds,
            agent_dir: agent_dir.to_string(),
            loss: name(serde_json::to_value(self.cfg.reward.loss).unwrap_or_default()),
            cost_model: name(serde_json::to_value(self.cfg.reward.cost).unwrap_or_default()),
            exit_fraction: test.exit_fraction.clone(),
            exit_accuracy: test.exit_accuracy.clone(),
            exits_per_class: test.exits_per_class.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_tags_stay_short() {
        let tag = |alpha: f64, budget: Option<f64>| Point { alpha, budget }.tag();
        assert_eq!(tag(0.01, None), "alpha0.01");
        assert_eq!(tag(0.0, None), "alpha0");
        assert_eq!(tag(0.003, None), "alpha0.003");
        assert_eq!(tag(0.0, Some(0.18)), "budget0.18");
        assert_eq!(tag(1e-9, None), "alpha0.000000001");
        assert_eq!(tag(1e-13, None), "alpha1e-13");
        assert_eq!(tag(1234.5678901234, None), "alpha1.2345678901234e3");
        assert_eq!(tag(0.0, Some(1e-6)), "budget0.000001");
    }

    #[test]
    fn plan_puts_frozen_before_joint_and_covers_every_point() {
        let mut cfg = StudyConfig::preset("joint_vs_frozen", "quick", None).unwrap();
        cfg.alphas = vec![0.1, 0.2];
        cfg.seeds = vec![0, 1];
        let units = plan(&cfg);
        assert_eq!(units.len(), 4 + 4 + 2 + 3);
        assert!(matches!(
            units[0],
            Unit::Agent(AgentKind::ReinforceFrozen, _, Some(0))
        ));
        assert!(matches!(
            units[4],
            Unit::Agent(AgentKind::ReinforceJoint, _, Some(0))
        ));
        let keys: Vec<String> = units
            .iter()
            .flat_map(|u| u.keys(&cfg, 3))
            .map(|k| k.to_string())
            .collect();
        let unique: HashSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        assert!(keys.contains(&"reinforce-joint alpha 0.2 seed 1".to_string()));
        assert!(keys.contains(&"static-3".to_string()));
    }
}
