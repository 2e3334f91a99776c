//! The results table of a study: one [`ResultRow`] per agent x alpha (or
//! budget) x seed, evaluated on the TEST split, with the validation numbers
//! the operating points are chosen by.
//!
//! # `results.csv`
//!
//! Fixed columns, in this order (see [`FIXED_COLUMNS`]); empty cells mean
//! "does not apply":
//!
//! | column | meaning |
//! |---|---|
//! | `agent` | `static-k`, `oracle`, `oracle-alpha`, `threshold`, `threshold-per-stage`, `threshold-entropy`, `backward-induction`, `ann`, `reinforce-frozen`, `reinforce-joint`, `expected-joint` |
//! | `kind` | the agent family (`static`, `oracle`, `threshold`, `backward`, `reinforce`, `expected`) |
//! | `alpha` | price of compute the agent was trained / calibrated at (empty for `static-k`, `oracle`; the starting alpha in budget mode) |
//! | `budget` | cost budget as a fraction of the largest stage (budget mode only) |
//! | `seed` | training seed (empty for deterministic agents) |
//! | `dataset`, `cascade` | data set and cascade preset |
//! | `n` | test samples |
//! | `error_pct` | test error, % |
//! | `cost_pct` | mean test cost, % of the largest stage's MACs (the env's cost model; includes the policy's MACs when counted) |
//! | `cost_pct_std` | standard deviation of that cost over test samples |
//! | `classifier_cost_pct`, `policy_cost_pct` | the classifiers' and the policy's share of `cost_pct` |
//! | `mean_reward` | mean test reward at `final_alpha` (alpha 0 for `static-k`, `oracle`) |
//! | `val_error_pct`, `val_cost_pct`, `val_mean_reward` | the same on the validation split (what operating points are chosen by) |
//! | `final_alpha` | the alpha the kept agent was selected at (differs from `alpha` in budget mode) |
//! | `budget_met` | whether the validation cost meets `budget` |
//! | `epochs_run`, `best_epoch` | training epochs run, and the epoch kept (learned agents) |
//! | `train_seconds`, `eval_seconds` | wall time of training and of the test evaluation (machine-dependent) |
//! | `agent_dir` | the agent's folder, relative to the run folder (checkpoint, `train_log.csv`, `train_summary.json`, `eval_test.json`) |
//!
//! then, per stage t = 1..K, `exit_frac_s{t}` (fraction of test samples
//! stopping at stage t), then `exit_acc_s{t}` (accuracy of those samples;
//! empty when none stop there), then per class c = 0..C-1 and stage t
//! `exits_c{c}_s{t}` (test samples of class c stopping at stage t).
//!
//! Numbers are written in Rust's shortest round-trip form, so reading a
//! file back gives the very same values.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use cascade_agents::{EvalReport, Family, TrainSummary};
use serde::{Deserialize, Serialize};

use crate::error::{write_file, Error, Result};

/// File name of the merged results table in a run folder.
pub const RESULTS_FILE: &str = "results.csv";

/// The fixed columns of `results.csv`, in order.
pub const FIXED_COLUMNS: [&str; 26] = [
    "agent",
    "kind",
    "alpha",
    "budget",
    "seed",
    "dataset",
    "cascade",
    "n",
    "error_pct",
    "cost_pct",
    "cost_pct_std",
    "classifier_cost_pct",
    "policy_cost_pct",
    "mean_reward",
    "val_error_pct",
    "val_cost_pct",
    "val_mean_reward",
    "final_alpha",
    "budget_met",
    "epochs_run",
    "best_epoch",
    "train_seconds",
    "eval_seconds",
    "agent_dir",
    "loss",
    "cost_model",
];

/// Columns that hold wall times (they differ between otherwise equal runs).
pub const WALL_TIME_COLUMNS: [&str; 2] = ["train_seconds", "eval_seconds"];

/// One evaluated operating point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// Agent name (see the module docs).
    pub agent: String,
    /// Agent family.
    pub kind: Family,
    /// The alpha trained or calibrated at (`None`: alpha-free agents).
    pub alpha: Option<f64>,
    /// The cost budget (budget mode).
    pub budget: Option<f64>,
    /// The training seed (`None`: deterministic agents).
    pub seed: Option<u64>,
    /// Data set name.
    pub dataset: String,
    /// Cascade preset name.
    pub cascade: String,
    /// Test samples.
    pub n: usize,
    /// Test error, %.
    pub error_pct: f64,
    /// Mean test cost, % of the largest stage.
    pub cost_pct: f64,
    /// Standard deviation of the test cost over samples, %.
    pub cost_pct_std: f64,
    /// The classifiers' share of `cost_pct`.
    pub classifier_cost_pct: f64,
    /// The policy's share of `cost_pct`.
    pub policy_cost_pct: f64,
    /// Mean test reward at `final_alpha`.
    pub mean_reward: f64,
    /// Validation error, %.
    pub val_error_pct: f64,
    /// Mean validation cost, %.
    pub val_cost_pct: f64,
    /// Mean validation reward.
    pub val_mean_reward: f64,
    /// The alpha the kept agent was selected at.
    pub final_alpha: Option<f64>,
    /// Whether the validation cost meets the budget.
    pub budget_met: Option<bool>,
    /// Epochs run.
    pub epochs_run: Option<usize>,
    /// Epoch kept.
    pub best_epoch: Option<usize>,
    /// Training wall time, seconds.
    pub train_seconds: f64,
    /// Test-evaluation wall time, seconds.
    pub eval_seconds: f64,
    /// The agent's folder relative to the run folder (empty: none).
    pub agent_dir: String,
    /// The loss of the reward (`zero_one`, `cross_entropy`).
    pub loss: String,
    /// The cost model (`cumulative`, `exit`).
    pub cost_model: String,
    /// Fraction of test samples stopping at each stage, `[K]`.
    pub exit_fraction: Vec<f64>,
    /// Accuracy of the test samples stopping at each stage, `[K]`.
    pub exit_accuracy: Vec<Option<f64>>,
    /// Test samples per true class and stop stage, `[C][K]`.
    pub exits_per_class: Vec<Vec<usize>>,
}

/// Who and where a row is: the part of a [`ResultRow`] that does not come
/// from the evaluation reports or the training summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowId<'a> {
    /// Agent name (see the module docs).
    pub agent: &'a str,
    /// Agent family.
    pub kind: Family,
    /// The alpha trained or calibrated at (`None`: alpha-free agents).
    pub alpha: Option<f64>,
    /// The cost budget (budget mode).
    pub budget: Option<f64>,
    /// The training seed (`None`: deterministic agents).
    pub seed: Option<u64>,
    /// Data set name.
    pub dataset: &'a str,
    /// Cascade preset name.
    pub cascade: &'a str,
    /// The agent's folder relative to the run folder (empty: none).
    pub agent_dir: &'a str,
}

impl ResultRow {
    /// The row of `id` from its validation and test reports and, for
    /// trained agents, the training summary: the one place a row's numbers
    /// are taken from.
    ///
    /// `final_alpha` is the training summary's alpha, or `id.alpha` for
    /// rows without training; the loss and cost model are the test
    /// report's reward's. Epoch counts are given for agents with a training
    /// loop (epochs run, or the REINFORCE families).
    pub fn from_reports(
        id: RowId<'_>,
        val: &EvalReport,
        test: &EvalReport,
        training: Option<&TrainSummary>,
    ) -> Self {
        let name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let learned = training.filter(|s| s.epochs_run > 0 || !id.kind.seedless());
        ResultRow {
            agent: id.agent.to_string(),
            kind: id.kind,
            alpha: id.alpha,
            budget: id.budget,
            seed: id.seed,
            dataset: id.dataset.to_string(),
            cascade: id.cascade.to_string(),
            n: test.n,
            error_pct: 100.0 * test.error,
            cost_pct: test.cost_pct_mean,
            cost_pct_std: test.cost_pct_std,
            classifier_cost_pct: test.classifier_cost_pct_mean,
            policy_cost_pct: test.policy_cost_pct_mean,
            mean_reward: test.mean_reward,
            val_error_pct: 100.0 * val.error,
            val_cost_pct: val.cost_pct_mean,
            val_mean_reward: val.mean_reward,
            final_alpha: training.map(|s| s.alpha).or(id.alpha),
            budget_met: training.and_then(|s| s.budget_met),
            epochs_run: learned.map(|s| s.epochs_run),
            best_epoch: learned.map(|s| s.best_epoch),
            train_seconds: training.map_or(0.0, |s| s.seconds),
            eval_seconds: test.wall_seconds,
            agent_dir: id.agent_dir.to_string(),
            loss: name(serde_json::to_value(test.spec.loss).unwrap_or_default()),
            cost_model: name(serde_json::to_value(test.spec.cost).unwrap_or_default()),
            exit_fraction: test.exit_fraction.clone(),
            exit_accuracy: test.exit_accuracy.clone(),
            exits_per_class: test.exits_per_class.clone(),
        }
    }
}

/// Identifies an operating point: what resuming and merging match on.
#[derive(Debug, Clone, PartialEq)]
pub struct PointKey {
    /// Agent name.
    pub agent: String,
    /// Alpha.
    pub alpha: Option<f64>,
    /// Budget.
    pub budget: Option<f64>,
    /// Seed.
    pub seed: Option<u64>,
}

impl Eq for PointKey {}

impl PointKey {
    /// A key.
    pub fn new(agent: &str, alpha: Option<f64>, budget: Option<f64>, seed: Option<u64>) -> Self {
        PointKey {
            agent: agent.to_string(),
            alpha,
            budget,
            seed,
        }
    }
}

/// Display order of agents: static stages, oracles, then the swept agents
/// in [`cascade_agents::AgentKind::ALL`]'s order, then anything else
/// (ablation variants).
pub fn agent_rank(agent: &str) -> (u32, usize) {
    use cascade_agents::AgentKind;
    if let Some(k) = agent.strip_prefix("static-").and_then(|k| k.parse().ok()) {
        return (0, k);
    }
    match agent {
        "oracle" => (1, 0),
        "oracle-alpha" => (2, 0),
        _ => match AgentKind::from_name(agent) {
            Some(a) => (3, a.rank()),
            None => (4, 0),
        },
    }
}

fn cmp_opt_f64(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.total_cmp(&y),
    }
}

impl Ord for PointKey {
    fn cmp(&self, o: &Self) -> Ordering {
        agent_rank(&self.agent)
            .cmp(&agent_rank(&o.agent))
            .then_with(|| self.agent.cmp(&o.agent))
            .then_with(|| cmp_opt_f64(self.budget, o.budget))
            .then_with(|| cmp_opt_f64(self.alpha, o.alpha))
            .then_with(|| self.seed.cmp(&o.seed))
    }
}

impl PartialOrd for PointKey {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl fmt::Display for PointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.agent)?;
        if let Some(b) = self.budget {
            write!(f, " budget {b}")?;
        }
        if let Some(a) = self.alpha {
            write!(f, " alpha {a}")?;
        }
        if let Some(s) = self.seed {
            write!(f, " seed {s}")?;
        }
        Ok(())
    }
}

impl ResultRow {
    /// The row's key.
    pub fn key(&self) -> PointKey {
        PointKey::new(&self.agent, self.alpha, self.budget, self.seed)
    }

    /// Number of stages K.
    pub fn num_stages(&self) -> usize {
        self.exit_fraction.len()
    }

    /// Number of classes C.
    pub fn num_classes(&self) -> usize {
        self.exits_per_class.len()
    }
}

/// The header of a results file for K stages and C classes.
pub fn header(num_stages: usize, num_classes: usize) -> Vec<String> {
    let mut h: Vec<String> = FIXED_COLUMNS.iter().map(|s| s.to_string()).collect();
    h.extend((1..=num_stages).map(|t| format!("exit_frac_s{t}")));
    h.extend((1..=num_stages).map(|t| format!("exit_acc_s{t}")));
    for c in 0..num_classes {
        h.extend((1..=num_stages).map(|t| format!("exits_c{c}_s{t}")));
    }
    h
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(String::new, |x| x.to_string())
}

fn record(r: &ResultRow) -> Vec<String> {
    let mut v = vec![
        r.agent.clone(),
        r.kind.name().to_string(),
        opt(&r.alpha),
        opt(&r.budget),
        opt(&r.seed),
        r.dataset.clone(),
        r.cascade.clone(),
        r.n.to_string(),
        r.error_pct.to_string(),
        r.cost_pct.to_string(),
        r.cost_pct_std.to_string(),
        r.classifier_cost_pct.to_string(),
        r.policy_cost_pct.to_string(),
        r.mean_reward.to_string(),
        r.val_error_pct.to_string(),
        r.val_cost_pct.to_string(),
        r.val_mean_reward.to_string(),
        opt(&r.final_alpha),
        opt(&r.budget_met),
        opt(&r.epochs_run),
        opt(&r.best_epoch),
        r.train_seconds.to_string(),
        r.eval_seconds.to_string(),
        r.agent_dir.clone(),
        r.loss.clone(),
        r.cost_model.clone(),
    ];
    v.extend(r.exit_fraction.iter().map(|x| x.to_string()));
    v.extend(r.exit_accuracy.iter().map(opt));
    for row in &r.exits_per_class {
        v.extend(row.iter().map(|x| x.to_string()));
    }
    v
}

/// Rows sorted by key (agent order, budget, alpha, seed).
pub fn sorted(mut rows: Vec<ResultRow>) -> Vec<ResultRow> {
    rows.sort_by_key(|r| r.key());
    rows
}

/// Writes `rows` (sorted by key) to `path` atomically. All rows must have
/// the same stage and class counts.
pub fn write_results(path: &Path, rows: &[ResultRow]) -> Result<()> {
    let (k, c) = match rows.first() {
        Some(r) => (r.num_stages(), r.num_classes()),
        None => (0, 0),
    };
    if let Some(bad) = rows
        .iter()
        .find(|r| r.num_stages() != k || r.num_classes() != c)
    {
        return Err(Error::Config(format!(
            "{}: row {} has {} stages and {} classes, the first row {k} and {c}",
            path.display(),
            bad.key(),
            bad.num_stages(),
            bad.num_classes()
        )));
    }
    let mut sorted_rows: Vec<&ResultRow> = rows.iter().collect();
    sorted_rows.sort_by_key(|r| r.key());
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header(k, c))
        .map_err(|e| Error::csv(path, e))?;
    for r in sorted_rows {
        w.write_record(record(r)).map_err(|e| Error::csv(path, e))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    write_file(path, &bytes)
}

/// Reads a results file written by [`write_results`]. A missing file is an
/// error; see [`read_results_if_present`].
pub fn read_results(path: &Path) -> Result<Vec<ResultRow>> {
    let mut rdr = csv::Reader::from_path(path).map_err(|e| Error::csv(path, e))?;
    let head: Vec<String> = rdr
        .headers()
        .map_err(|e| Error::csv(path, e))?
        .iter()
        .map(|s| s.to_string())
        .collect();
    let nf = FIXED_COLUMNS.len();
    if head.len() < nf || head[..nf] != FIXED_COLUMNS {
        return Err(Error::run_file(
            path,
            format!(
                "not a results table: the header must start with {}",
                FIXED_COLUMNS.join(",")
            ),
        ));
    }
    let k = head[nf..]
        .iter()
        .filter(|h| h.starts_with("exit_frac_s"))
        .count();
    let rest = head.len() - nf;
    let c = rest.saturating_sub(2 * k).checked_div(k).unwrap_or(0);
    if head != header(k, c) {
        return Err(Error::run_file(
            path,
            format!("unexpected per-stage columns for {k} stages and {c} classes"),
        ));
    }
    let mut rows: Vec<ResultRow> = Vec::new();
    let mut first_line: BTreeMap<PointKey, (usize, usize)> = BTreeMap::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| Error::csv(path, e))?;
        let line = i + 2;
        let bad = |col: &str, v: &str| {
            Error::run_file(
                path,
                format!("line {line}: column {col}: cannot read {v:?}"),
            )
        };
        let get = |j: usize| rec.get(j).unwrap_or("");
        let f =
            |j: usize| -> Result<f64> { get(j).parse::<f64>().map_err(|_| bad(&head[j], get(j))) };
        let of = |j: usize| -> Result<Option<f64>> {
            match get(j) {
                "" => Ok(None),
                s => s.parse::<f64>().map(Some).map_err(|_| bad(&head[j], s)),
            }
        };
        fn parse_opt<T: std::str::FromStr>(s: &str) -> std::result::Result<Option<T>, ()> {
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse::<T>().map(Some).map_err(|_| ())
            }
        }
        let ou = |j: usize| -> Result<Option<usize>> {
            parse_opt::<usize>(get(j)).map_err(|_| bad(&head[j], get(j)))
        };
        let mut exit_fraction = Vec::with_capacity(k);
        let mut exit_accuracy = Vec::with_capacity(k);
        for t in 0..k {
            exit_fraction.push(f(nf + t)?);
            exit_accuracy.push(of(nf + k + t)?);
        }
        let mut exits_per_class = Vec::with_capacity(c);
        for cl in 0..c {
            let mut row = Vec::with_capacity(k);
            for t in 0..k {
                let j = nf + 2 * k + cl * k + t;
                row.push(get(j).parse::<usize>().map_err(|_| bad(&head[j], get(j)))?);
            }
            exits_per_class.push(row);
        }
        rows.push(ResultRow {
            agent: get(0).to_string(),
            kind: get(1).parse().map_err(|_| bad(&head[1], get(1)))?,
            alpha: of(2)?,
            budget: of(3)?,
            seed: parse_opt::<u64>(get(4)).map_err(|_| bad(&head[4], get(4)))?,
            dataset: get(5).to_string(),
            cascade: get(6).to_string(),
            n: get(7).parse().map_err(|_| bad(&head[7], get(7)))?,
            error_pct: f(8)?,
            cost_pct: f(9)?,
            cost_pct_std: f(10)?,
            classifier_cost_pct: f(11)?,
            policy_cost_pct: f(12)?,
            mean_reward: f(13)?,
            val_error_pct: f(14)?,
            val_cost_pct: f(15)?,
            val_mean_reward: f(16)?,
            final_alpha: of(17)?,
            budget_met: parse_opt::<bool>(get(18)).map_err(|_| bad(&head[18], get(18)))?,
            epochs_run: ou(19)?,
            best_epoch: ou(20)?,
            train_seconds: f(21)?,
            eval_seconds: f(22)?,
            agent_dir: get(23).to_string(),
            loss: get(24).to_string(),
            cost_model: get(25).to_string(),
            exit_fraction,
            exit_accuracy,
            exits_per_class,
        });
        // A point appears once: a repeated row with the same numbers is
        // dropped, one with other numbers is refused (which to keep is
        // the user's call, not this reader's).
        let key = rows[rows.len() - 1].key();
        match first_line.get(&key) {
            Some(&(at, j)) => {
                let row = rows.pop();
                if !row.is_some_and(|r| same_numbers(&rows[j], &r)) {
                    return Err(Error::run_file(
                        path,
                        format!(
                            "line {line} repeats the point {key} of line {at} with other \
                             numbers; delete one of the two rows"
                        ),
                    ));
                }
            }
            None => {
                first_line.insert(key, (line, rows.len() - 1));
            }
        }
    }
    Ok(rows)
}

/// [`read_results`], or no rows when the file does not exist.
pub fn read_results_if_present(path: &Path) -> Result<Vec<ResultRow>> {
    if path.exists() {
        read_results(path)
    } else {
        Ok(Vec::new())
    }
}

/// A shard of a sweep: `index` of `count` (0-based, as job arrays count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = Error;

    /// Parses `i/n` with `0 <= i < n`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "--shard '{s}': expected i/n with 0 <= i < n (e.g. 0/8 for the first of 8)"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The shard's results file name, `results.shard-{i}-of-{n}.csv`.
    pub fn file_name(&self) -> String {
        format!("results.shard-{}-of-{}.csv", self.index, self.count)
    }

    /// Whether the work unit at `position` of the plan belongs to this shard.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

/// The shard results files in `run_dir` (`results.shard-*-of-*.csv`), sorted.
pub fn shard_files(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(run_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(run_dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(run_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("results.shard-") && name.ends_with(".csv") {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Union of row sets by key; on a duplicate key the first row is kept.
/// Returns the rows (sorted) and the keys seen more than once with
/// different numbers (wall times aside).
pub fn union(sets: Vec<Vec<ResultRow>>) -> (Vec<ResultRow>, Vec<PointKey>) {
    let mut by_key: BTreeMap<PointKey, ResultRow> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for set in sets {
        for r in set {
            let key = r.key();
            match by_key.get(&key) {
                Some(old) => {
                    if !same_numbers(old, &r) {
                        conflicts.push(key);
                    }
                }
                None => {
                    by_key.insert(key, r);
                }
            }
        }
    }
    (by_key.into_values().collect(), conflicts)
}

/// Equal in everything but the wall-time columns.
pub fn same_numbers(a: &ResultRow, b: &ResultRow) -> bool {
    let strip = |r: &ResultRow| ResultRow {
        train_seconds: 0.0,
        eval_seconds: 0.0,
        ..r.clone()
    };
    strip(a) == strip(b)
}

/// What [`merge_run`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeReport {
    /// Shard files read.
    pub shard_files: Vec<PathBuf>,
    /// Rows in the merged `results.csv`.
    pub rows: usize,
    /// Rows that were not in `results.csv` before.
    pub added: usize,
    /// Keys found with different numbers in two files (the first kept).
    pub conflicts: Vec<PointKey>,
}

/// Joins `results.csv` and every shard file of `run_dir` into
/// `results.csv` (atomically). Shard files are left in place: merging is
/// idempotent.
pub fn merge_run(run_dir: &Path) -> Result<MergeReport> {
    if !run_dir.is_dir() {
        return Err(Error::Config(format!(
            "{}: no such run folder",
            run_dir.display()
        )));
    }
    // The only writer of results.csv while it merges: refused while the
    // shards (or an unsharded run) still write into the folder.
    let _lock = crate::lock::lock_run(run_dir, crate::lock::Access::Exclusive)?;
    // The only writer: what killed merges or runs left half-written goes.
    crate::lock::remove_leftover_temps(run_dir)?;
    let main = run_dir.join(RESULTS_FILE);
    let existing = read_results_if_present(&main)?;
    let before = existing.len();
    let files = shard_files(run_dir)?;
    let mut sets = vec![existing];
    for f in &files {
        sets.push(read_results(f)?);
    }
    let (rows, conflicts) = union(sets);
    if rows.is_empty() {
        return Err(Error::Config(format!(
            "{}: no results to merge (no {RESULTS_FILE} and no results.shard-*-of-*.csv)",
            run_dir.display()
        )));
    }
    write_results(&main, &rows)?;
    Ok(MergeReport {
        shard_files: files,
        rows: rows.len(),
        added: rows.len() - before,
        conflicts,
    })
}

/// Mean and sample standard deviation (divisor n - 1; NaN for fewer than
/// two values, where it is not defined).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = values.len() as f64;
    let m = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (m, f64::NAN);
    }
    let v = values.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, v.sqrt())
}

/// `mean ± sd` with two decimals, or the mean alone where the sample
/// standard deviation is not defined (one value).
pub fn fmt_mean_sd(m: f64, sd: f64) -> String {
    if sd.is_finite() {
        format!("{m:.2} ± {sd:.2}")
    } else {
        format!("{m:.2}")
    }
}

/// The rows of one agent grouped by operating point (budget, alpha), in
/// order, each group holding its seeds' rows.
pub fn group_by_point<'a>(rows: &'a [ResultRow], agent: &str) -> Vec<Vec<&'a ResultRow>> {
    let mut groups: Vec<Vec<&ResultRow>> = Vec::new();
    let mut mine: Vec<&ResultRow> = rows.iter().filter(|r| r.agent == agent).collect();
    mine.sort_by_key(|r| r.key());
    for r in mine {
        match groups.last_mut() {
            Some(g) if g[0].alpha == r.alpha && g[0].budget == r.budget => g.push(r),
            _ => groups.push(vec![r]),
        }
    }
    groups
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A row with made-up numbers (shared with other modules' tests).
    pub(crate) fn row(agent: &str, alpha: Option<f64>, seed: Option<u64>) -> ResultRow {
        ResultRow {
            agent: agent.into(),
            kind: Family::Reinforce,
            alpha,
            budget: None,
            seed,
            dataset: "synthetic".into(),
            cascade: "synthetic-3".into(),
            n: 10,
            error_pct: 12.5,
            cost_pct: 33.0 + 1.0 / 3.0,
            cost_pct_std: 0.1,
            classifier_cost_pct: 33.0,
            policy_cost_pct: 1.0 / 3.0,
            mean_reward: -0.2,
            val_error_pct: 11.0,
            val_cost_pct: 30.0,
            val_mean_reward: -0.19,
            final_alpha: alpha,
            budget_met: None,
            epochs_run: Some(3),
            best_epoch: Some(2),
            train_seconds: 1.5,
            eval_seconds: 0.25,
            agent_dir: "agents/x".into(),
            loss: "zero_one".into(),
            cost_model: "cumulative".into(),
            exit_fraction: vec![0.5, 0.3, 0.2],
            exit_accuracy: vec![Some(0.9), None, Some(0.7)],
            exits_per_class: vec![vec![3, 2, 0], vec![2, 1, 2]],
        }
    }

    #[test]
    fn results_round_trip_exactly_and_sort_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(RESULTS_FILE);
        let rows = vec![
            row("reinforce-joint", Some(0.1), Some(1)),
            row("static-2", None, None),
            row("reinforce-joint", Some(0.1), Some(0)),
            row("threshold", Some(0.01), None),
        ];
        write_results(&p, &rows).unwrap();
        let back = read_results(&p).unwrap();
        let names: Vec<_> = back.iter().map(|r| r.key().to_string()).collect();
        assert_eq!(
            names,
            [
                "static-2",
                "threshold alpha 0.01",
                "reinforce-joint alpha 0.1 seed 0",
                "reinforce-joint alpha 0.1 seed 1"
            ]
        );
        assert_eq!(back[2], rows[2]);
        assert_eq!(back[2].cost_pct, 33.0 + 1.0 / 3.0);
    }

    #[test]
    fn a_repeated_row_is_dropped_and_a_contradicting_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(RESULTS_FILE);
        let rows = vec![
            row("static-2", None, None),
            row("threshold", Some(0.01), None),
        ];
        write_results(&p, &rows).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let last = text.lines().last().unwrap().to_string();
        // The same row pasted twice (a hand edit): read once.
        std::fs::write(&p, format!("{text}{last}\n")).unwrap();
        assert_eq!(
            read_results(&p).unwrap(),
            read_results_if_present(&p).unwrap()
        );
        assert_eq!(read_results(&p).unwrap().len(), 2);
        // The same point with another error: refused, naming both lines.
        let mut other = rows[1].clone();
        other.error_pct += 1.0;
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(record(&other)).unwrap();
        let extra = String::from_utf8(w.into_inner().unwrap()).unwrap();
        std::fs::write(&p, format!("{text}{extra}")).unwrap();
        let e = read_results(&p).unwrap_err().to_string();
        assert!(
            e.contains("line 4 repeats the point threshold alpha 0.01 of line 3"),
            "{e}"
        );
    }

    #[test]
    fn shard_parsing_and_ownership() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!(s.file_name(), "results.shard-1-of-3.csv");
        assert_eq!((0..7).filter(|&p| s.owns(p)).collect::<Vec<_>>(), [1, 4]);
        for bad in ["3/3", "1", "a/2", "0/0"] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn union_keeps_first_and_reports_conflicts() {
        let a = row("threshold", Some(0.1), None);
        let mut b = a.clone();
        b.train_seconds = 99.0;
        let mut c = a.clone();
        c.error_pct = 1.0;
        let (rows, conflicts) = union(vec![vec![a.clone()], vec![b], vec![c]]);
        assert_eq!(rows, vec![a.clone()]);
        assert_eq!(conflicts, vec![a.key()]);
    }

    #[test]
    fn a_table_with_a_foreign_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        std::fs::write(&p, "a,b\n1,2\n").unwrap();
        let e = read_results(&p).unwrap_err().to_string();
        assert!(e.contains("not a results table"), "{e}");
    }
}
