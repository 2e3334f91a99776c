//! The skeleton the REINFORCE-trained agents share (frozen, joint,
//! expected-joint): the epoch loop ([`EpochLoop`]: log file, progress
//! bar, model selection with dual ascent, early stopping), the seeds of
//! a run, the per-epoch sums, optimisers and divergence checks. The
//! estimators sit with their trainers: the slides' REINFORCE estimator in
//! [`crate::reinforce::estimator`], the exact expected objective in
//! [`crate::expected`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use cascade_env::EnvRng;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::agent::{EpochMetrics, TrainSummary};
use crate::error::{Error, Result};

/// AdamW over `vars` (candle_nn's: decoupled weight decay).
pub(crate) fn adamw(vars: Vec<Var>, lr: f64, weight_decay: f64) -> Result<AdamW> {
    Ok(AdamW::new(
        vars,
        ParamsAdamW {
            lr,
            weight_decay,
            ..Default::default()
        },
    )?)
}

/// [`finite_scalar`] of a loss that may be absent (0 then).
pub(crate) fn finite_or_zero(
    t: Option<&Tensor>,
    what: &str,
    epoch: usize,
    step: usize,
) -> Result<f64> {
    t.map_or(Ok(0.0), |t| finite_scalar(t, what, epoch, step))
}

/// A scalar tensor's value, refusing NaN and infinities with the loss's
/// logged name and where it happened.
pub(crate) fn finite_scalar(t: &Tensor, what: &str, epoch: usize, step: usize) -> Result<f64> {
    let v = t.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if !v.is_finite() {
        return Err(Error::NonFinite {
            what: what.into(),
            value: v,
            epoch,
            step,
        });
    }
    Ok(v)
}

// ---------------------------------------------------------------------------
// Epoch bookkeeping
// ---------------------------------------------------------------------------

/// Validation numbers used for model selection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ValScore {
    pub mean_reward: f64,
    pub error: f64,
    pub cost: f64,
}

/// Whether a validation mean cost meets `budget` (up to rounding).
pub(crate) fn meets_budget(cost: f64, budget: f64) -> bool {
    cost <= budget * (1.0 + 1e-9)
}

/// Whether `a` beats the incumbent `b`: a higher mean reward; with a
/// budget, meeting it first, then a lower error, then a lower cost (among
/// candidates over budget, the lower cost). Every agent that picks among
/// candidates on validation chooses with it.
pub(crate) fn better(a: &ValScore, b: &ValScore, budget: Option<f64>) -> bool {
    match budget {
        None => a.mean_reward > b.mean_reward,
        Some(bud) => {
            let fits = |p: &ValScore| meets_budget(p.cost, bud);
            match (fits(a), fits(b)) {
                (true, false) => true,
                (false, true) => false,
                (true, true) => a.error < b.error || (a.error == b.error && a.cost < b.cost),
                (false, false) => a.cost < b.cost,
            }
        }
    }
}

/// The per-epoch log: rows kept in memory and rewritten to the CSV file
/// atomically after every epoch, so a crash leaves a complete file.
pub(crate) struct MetricLog {
    path: Option<PathBuf>,
    rows: Vec<EpochMetrics>,
}

impl MetricLog {
    pub fn new(path: Option<&Path>) -> Self {
        MetricLog {
            path: path.map(Path::to_path_buf),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: EpochMetrics) -> Result<()> {
        self.rows.push(row);
        let Some(path) = &self.path else {
            return Ok(());
        };
        let csv_err = |source| Error::Csv {
            path: path.clone(),
            source,
        };
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in &self.rows {
            w.serialize(r).map_err(csv_err)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
        cascade_env::fsutil::write_atomic(path, &bytes).map_err(|e| Error::io(path, e))
    }

    pub fn into_rows(self) -> Vec<EpochMetrics> {
        self.rows
    }
}

/// A progress bar over epochs on stderr, hidden when `quiet` or when
/// stderr is not a terminal.
pub(crate) fn epoch_bar(epochs: usize, prefix: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(epochs as u64), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} epochs {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_prefix(prefix.to_string());
    pb
}

/// The progress bar's line after an epoch's validation.
pub(crate) fn show_epoch(bar: &ProgressBar, v: &ValScore, alpha: f64) {
    bar.inc(1);
    bar.set_message(format!(
        "val reward {:.4} error {:.2}% cost {:.1}% alpha {:.4}",
        v.mean_reward,
        100.0 * v.error,
        100.0 * v.cost,
        alpha
    ));
}

/// AdamW over every trainable variable of `cascade`'s classifiers.
pub(crate) fn classifier_optimizer(
    cascade: &cascade_rl::cascade::Cascade,
    lr: f64,
    weight_decay: f64,
) -> Result<AdamW> {
    let vars = cascade
        .stages()
        .iter()
        .map(|s| Ok(s.model.trainable_vars()?))
        .collect::<Result<Vec<_>>>()?
        .concat();
    adamw(vars, lr, weight_decay)
}

/// Model selection on validation, shared by the REINFORCE trainers: the
/// best score so far with its epoch and alpha, the epochs since it, and
/// the alpha the next epoch trains at (moved by dual ascent under a budget).
pub(crate) struct Selection {
    pub best: ValScore,
    pub best_epoch: usize,
    pub best_alpha: f64,
    /// The alpha of the next epoch.
    pub alpha: f64,
    budget: Option<f64>,
    dual_lr: f64,
    patience: usize,
    stale: usize,
}

impl Selection {
    /// Starts from the untrained agent's score `start` at `alpha` (epoch 0).
    pub fn new(
        start: ValScore,
        alpha: f64,
        budget: Option<f64>,
        dual_lr: f64,
        patience: usize,
    ) -> Self {
        Selection {
            best: start,
            best_epoch: 0,
            best_alpha: alpha,
            alpha,
            budget,
            dual_lr,
            patience,
            stale: 0,
        }
    }

    /// Records the validation score of `epoch`, trained at [`Self::alpha`];
    /// returns whether it is the new best (the caller keeps its weights),
    /// then moves alpha towards the budget.
    pub fn record(&mut self, v: ValScore, epoch: usize) -> bool {
        let improved = better(&v, &self.best, self.budget);
        if improved {
            self.best = v;
            self.best_epoch = epoch;
            self.best_alpha = self.alpha;
            self.stale = 0;
        } else {
            self.stale += 1;
        }
        if let Some(b) = self.budget {
            self.alpha = dual_ascent(self.alpha, self.dual_lr, v.cost, b);
        }
        improved
    }

    /// Whether `patience` epochs in a row brought no improvement (never
    /// with patience 0).
    pub fn exhausted(&self) -> bool {
        self.patience > 0 && self.stale >= self.patience
    }

    /// The training summary of the kept (best) epoch.
    pub fn summary(
        &self,
        agent: String,
        epochs_run: usize,
        started: std::time::Instant,
        history: Vec<EpochMetrics>,
    ) -> TrainSummary {
        TrainSummary {
            agent,
            epochs_run,
            best_epoch: self.best_epoch,
            val_mean_reward: self.best.mean_reward,
            val_error: self.best.error,
            val_cost: self.best.cost,
            alpha: self.best_alpha,
            budget: self.budget,
            budget_met: self.budget.map(|b| meets_budget(self.best.cost, b)),
            seconds: started.elapsed().as_secs_f64(),
            history,
        }
    }
}

/// The loop every REINFORCE trainer (frozen, joint, expected-joint) runs
/// around its epochs: the per-epoch log and progress bar, model selection
/// on validation with dual ascent under a budget, early stopping, and the
/// summary of the kept epoch. The trainer keeps its own snapshot of the
/// best epoch's weights (what it trains differs):
///
/// ```text
/// let mut run = EpochLoop::new(label, &cfg, opts, started, start_score, start_alpha);
/// while let Some(epoch) = run.next_epoch() {
///     let alpha = run.alpha();
///     ... one epoch at alpha, then validate: v ...
///     if run.end_epoch(row, v)? { best = snapshot }
/// }
/// restore(best);
/// Ok(run.finish(name))
/// ```
pub(crate) struct EpochLoop {
    sel: Selection,
    log: MetricLog,
    bar: ProgressBar,
    epochs: usize,
    epochs_run: usize,
    started: std::time::Instant,
}

impl EpochLoop {
    /// Starts from the untrained (or warm-started) agent's validation
    /// score `start` at `alpha`; `started`: when training began (the
    /// summary's wall time counts from it).
    pub fn new(
        label: &str,
        cfg: &crate::reinforce::ReinforceConfig,
        opts: &crate::agent::TrainOptions,
        started: std::time::Instant,
        start: ValScore,
        alpha: f64,
    ) -> Self {
        EpochLoop {
            sel: Selection::new(start, alpha, opts.budget, cfg.dual_lr, cfg.patience),
            log: MetricLog::new(opts.log_csv.as_deref()),
            bar: epoch_bar(cfg.epochs, label, opts.quiet),
            epochs: cfg.epochs,
            epochs_run: 0,
            started,
        }
    }

    /// The next epoch (1-based), or `None` once every epoch ran or
    /// patience ran out.
    pub fn next_epoch(&mut self) -> Option<usize> {
        if self.epochs_run >= self.epochs || self.sel.exhausted() {
            return None;
        }
        self.epochs_run += 1;
        Some(self.epochs_run)
    }

    /// The alpha the current epoch trains at.
    pub fn alpha(&self) -> f64 {
        self.sel.alpha
    }

    /// Ends the current epoch: logs `row` (written to the CSV at once),
    /// shows the validation score `v` and records it for selection (then
    /// moves alpha towards the budget). Returns whether this epoch is the
    /// best so far (the trainer snapshots its weights).
    pub fn end_epoch(&mut self, row: EpochMetrics, v: ValScore) -> Result<bool> {
        self.log.push(row)?;
        show_epoch(&self.bar, &v, self.sel.alpha);
        Ok(self.sel.record(v, self.epochs_run))
    }

    /// The summary of the kept epoch, for agent `agent`.
    pub fn finish(self, agent: String) -> TrainSummary {
        self.bar.finish_and_clear();
        self.sel
            .summary(agent, self.epochs_run, self.started, self.log.into_rows())
    }
}

/// Dual ascent on alpha for a cost budget:
/// `alpha <- max(0, alpha + eta * (val_cost - B))`.
pub(crate) fn dual_ascent(alpha: f64, eta: f64, val_cost: f64, budget: f64) -> f64 {
    (alpha + eta * (val_cost - budget)).max(0.0)
}

/// Seeds derived from the run seed, one per random stream.
pub(crate) struct Seeds {
    pub init: u64,
    pub value_init: u64,
    pub sampling: u64,
    pub shuffle: u64,
}

impl Seeds {
    pub fn new(seed: u64) -> Self {
        let d = |s| cascade_rl::train::derive_seed(seed, s);
        Seeds {
            init: d(101),
            value_init: d(102),
            sampling: d(103),
            shuffle: d(104),
        }
    }
}

/// Fisher-Yates with the env's generator.
pub(crate) fn shuffle(v: &mut [usize], rng: &mut EnvRng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
}

/// Running sums of an epoch's training episodes and losses.
#[derive(Default)]
pub(crate) struct EpochSums {
    episodes: usize,
    steps: usize,
    reward: f64,
    wrong: f64,
    cost: f64,
    policy_loss: f64,
    classifier_loss: f64,
    value_loss: f64,
}

impl EpochSums {
    pub fn add(
        &mut self,
        roll: &crate::reinforce::estimator::Rollout,
        policy: f64,
        classifier: f64,
        value: f64,
    ) {
        self.episodes += roll.returns.len();
        self.steps += 1;
        self.reward += roll.returns.iter().sum::<f64>();
        self.wrong += roll.wrong.iter().filter(|&&w| w).count() as f64;
        self.cost += roll.costs.iter().sum::<f64>();
        self.policy_loss += policy;
        self.classifier_loss += classifier;
        self.value_loss += value;
    }

    /// Adds a minibatch of `b` episodes scored in expectation (the exact
    /// gradient): mean reward `reward`, expected error and cost from `e`.
    pub fn add_expected(
        &mut self,
        b: usize,
        reward: f64,
        e: &crate::expected::Expected,
        policy: f64,
    ) {
        self.episodes += b;
        self.steps += 1;
        self.reward += reward * b as f64;
        self.wrong += e.mean_error * b as f64;
        self.cost += e.mean_cost * b as f64;
        self.policy_loss += policy;
    }

    pub fn row(
        &self,
        epoch: usize,
        step: usize,
        alpha: f64,
        secs: f64,
        v: &ValScore,
    ) -> EpochMetrics {
        let e = self.episodes.max(1) as f64;
        let s = self.steps.max(1) as f64;
        EpochMetrics {
            epoch,
            global_step: step,
            mean_reward: self.reward / e,
            error: self.wrong / e,
            cost: self.cost / e,
            policy_loss: self.policy_loss / s,
            classifier_loss: self.classifier_loss / s,
            value_loss: self.value_loss / s,
            alpha,
            sps: self.episodes as f64 / secs.max(1e-9),
            val_mean_reward: v.mean_reward,
            val_error: v.error,
            val_cost: v.cost,
        }
    }
}

#[cfg(test)]
mod tests;
