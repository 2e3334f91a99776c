//! `backward-induction` and `ann`: stopping rules fitted stage by stage from
//! the last stage backwards, on frozen classifiers' recorded outputs.
//!
//! Both agents are the same sweep with a different fit at each stage, so
//! they share this file:
//!
//! 1. Record every stage's outputs on the policy training split (a trace
//!    is all they need: they also run on `cascade-env` users' traces).
//! 2. `V <- r_K`, the stopping reward at the last stage (where only `Stop`
//!    is legal); `r_t(x) = -L(yhat_t, y) - alpha Cost(t)`, in expectation
//!    over the prediction when it is sampled.
//! 3. For `t = K-1, ..., 1`: the advantage of stopping now over going on
//!    under the rule already fitted for the later stages is
//!    `d_t(x) = r_t(x) - V(x)`. Fit a linear score `s_t(o_t) = w_t . phi(o_t)`
//!    on the stage observation, stop where `s_t >= 0`, and set `V(x)` to
//!    `r_t(x)` for the samples that stop.
//!
//! **`backward-induction`** (Longstaff and Schwartz, "Valuing American
//! options by simulation: a simple least-squares approach", RFS 2001;
//! fitted Q iteration): `w_t` is the ridge regression of `d_t` on
//! `phi(o_t)`. The reward of stopping depends on the label, which the agent
//! does not observe, so unlike the classic method the immediate reward is
//! also a regression target: regressing `d_t` is regressing the stopping
//! value and the continuation value on the same features and comparing
//! them. With observations that take finitely many values and one-hot
//! features this is exact tabular dynamic programming (tested).
//!
//! **`ann`** (Bolukbasi, Wang, Dekel and Saligrama, "Adaptive Neural
//! Networks for Efficient Inference", ICML 2017): each exit decision is a
//! weighted binary classification, trained from the last exit backwards:
//! the label is whether exiting now beats going on under the already
//! trained downstream policy (`d_t > 0`), the weight the size of the
//! difference `|d_t|`, the loss differences being cost-sensitive
//! (`alpha Cost` inside `r_t`). Departures: the exit classifier is a
//! weighted logistic regression fitted by Newton's method, on the stage's
//! label probabilities (its top probability and entropy added) rather than
//! a network on the activations; the trade-off is the MDP's `alpha` and a
//! budget is met by choosing alpha on validation, like every agent here.
//!
//! Model selection (both): the L2 strength from [`BackwardConfig::ridge`]
//! and, under a budget, alpha from a log grid are chosen on the validation
//! split (highest mean reward; with a budget, lowest error among the
//! candidates that meet it). The test split is never read.

use std::path::Path;
use std::time::Instant;

use cascade_env::{BatchObservation, ReplayBackend, RewardModel};
use serde::{Deserialize, Serialize};

use crate::agent::{write_manifest, Agent, AgentManifest, AgentState, TrainData, TrainOptions};
use crate::agent::{ActMode, TrainSummary, AGENT_FORMAT_VERSION};
use crate::error::{Error, Result};
use crate::eval::{evaluate, record_split, EvalConfig};
use crate::training::{better, meets_budget, ValScore};

/// How each stage's stopping rule is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopFit {
    /// Ridge regression of the stopping advantage (`backward-induction`).
    Regression,
    /// Weighted logistic classification of its sign (`ann`).
    Classification,
}

/// What the stopping rule reads from an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopInputs {
    /// The label probabilities, their maximum and their entropy.
    Probs,
    /// The stage features, then everything of `Probs`.
    FeaturesAndProbs,
}

/// Settings of a [`BackwardAgent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackwardConfig {
    /// The fit at each stage.
    pub fit: StopFit,
    /// The inputs of the rule.
    pub inputs: StopInputs,
    /// Candidate L2 strengths (per sample: the penalty is
    /// `lambda * n * |w|^2`, the bias is not penalised), chosen on validation.
    pub ridge: Vec<f64>,
    /// Budget mode: number of candidate alphas, log-spaced over `alpha_range`.
    pub alpha_grid: usize,
    /// Budget mode: the range of candidate alphas.
    pub alpha_range: (f64, f64),
    /// Newton steps of the logistic fit.
    pub newton_steps: usize,
}

impl BackwardConfig {
    /// `backward-induction`: ridge regression on features and probabilities.
    pub fn backward_induction() -> Self {
        BackwardConfig {
            fit: StopFit::Regression,
            inputs: StopInputs::FeaturesAndProbs,
            ridge: vec![1e-4, 1e-3, 1e-2, 1e-1],
            alpha_grid: 25,
            alpha_range: (1e-3, 3.0),
            newton_steps: 25,
        }
    }

    /// `ann`: weighted logistic classification on the probabilities.
    pub fn ann() -> Self {
        BackwardConfig {
            fit: StopFit::Classification,
            inputs: StopInputs::Probs,
            ..Self::backward_induction()
        }
    }

    /// Refuses empty or non-positive ridge grids and bad alpha grids.
    pub fn validate(&self) -> Result<()> {
        if self.ridge.is_empty() || self.ridge.iter().any(|l| !(l.is_finite() && *l > 0.0)) {
            return Err(Error::Config(format!(
                "ridge strengths must be a non-empty list of positive numbers, got {:?}",
                self.ridge
            )));
        }
        let (lo, hi) = self.alpha_range;
        if self.alpha_grid < 2 || !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo < hi) {
            return Err(Error::Config(format!(
                "alpha grid needs >= 2 points over 0 < lo < hi, got {} over {:?}",
                self.alpha_grid, self.alpha_range
            )));
        }
        if self.fit == StopFit::Classification && self.newton_steps == 0 {
            return Err(Error::Config("newton_steps must be positive".into()));
        }
        Ok(())
    }
}

/// The fitted rule of one stage: `stop iff w . phi(o) >= 0`, `phi` being
/// the standardised inputs and a trailing 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRule {
    /// Per-input mean (without the bias).
    pub mean: Vec<f64>,
    /// Per-input standard deviation.
    pub std: Vec<f64>,
    /// Weights, the bias last.
    pub weights: Vec<f64>,
}

/// The saved state of a [`BackwardAgent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackwardState {
    /// Settings.
    pub config: BackwardConfig,
    /// Rules of stages `1..K-1` (none at the last stage).
    pub rules: Vec<StageRule>,
    /// The alpha the rules were fitted at.
    pub alpha: f64,
    /// The chosen L2 strength.
    pub ridge: f64,
    /// Feature width of each stage, `[K]`.
    pub feature_dims: Vec<usize>,
    /// Number of classes.
    pub num_classes: usize,
}

/// A stopping rule fitted by backward induction (see the module docs).
#[derive(Debug, Clone)]
pub struct BackwardAgent {
    config: BackwardConfig,
    num_stages: usize,
    feature_dims: Vec<usize>,
    num_classes: usize,
    rules: Vec<StageRule>,
    alpha: f64,
    ridge: f64,
    trained_with: Option<TrainOptions>,
}

impl BackwardAgent {
    /// An untrained agent for a cascade with these feature widths and
    /// classes (it runs every sample to the last stage until trained).
    pub fn new(config: BackwardConfig, feature_dims: &[usize], num_classes: usize) -> Result<Self> {
        config.validate()?;
        if feature_dims.is_empty() || num_classes == 0 {
            return Err(Error::Config(
                "a cascade needs at least one stage and one class".into(),
            ));
        }
        let mut a = BackwardAgent {
            config,
            num_stages: feature_dims.len(),
            feature_dims: feature_dims.to_vec(),
            num_classes,
            rules: Vec::new(),
            alpha: 0.0,
            ridge: 0.0,
            trained_with: None,
        };
        a.rules = (0..a.num_stages - 1)
            .map(|t| {
                let d = input_width(a.config.inputs, a.feature_dims[t], a.num_classes);
                let mut weights = vec![0.0; d + 1];
                weights[d] = -1.0;
                StageRule {
                    mean: vec![0.0; d],
                    std: vec![1.0; d],
                    weights,
                }
            })
            .collect();
        Ok(a)
    }

    pub(crate) fn from_state(
        s: BackwardState,
        num_stages: usize,
        trained_with: Option<TrainOptions>,
        dir: &Path,
    ) -> Result<Self> {
        let bad = |msg: String| Error::agent_file(dir.join(crate::agent::AGENT_FILE), msg);
        s.config.validate().map_err(|e| bad(e.to_string()))?;
        if s.rules.len() + 1 != num_stages {
            return Err(bad(format!(
                "num_stages is {num_stages} but {} stage rules are stored",
                s.rules.len()
            )));
        }
        if s.feature_dims.len() != num_stages || s.num_classes == 0 {
            return Err(bad(format!(
                "num_stages is {num_stages} but {} feature widths are stored, {} classes",
                s.feature_dims.len(),
                s.num_classes
            )));
        }
        for (t, r) in s.rules.iter().enumerate() {
            let d = input_width(s.config.inputs, s.feature_dims[t], s.num_classes);
            if r.mean.len() != d || r.std.len() != d || r.weights.len() != d + 1 {
                return Err(bad(format!(
                    "stage {} rule: {} means, {} deviations, {} weights for {d} inputs",
                    t + 1,
                    r.mean.len(),
                    r.std.len(),
                    r.weights.len()
                )));
            }
            let finite = r.mean.iter().chain(&r.weights).all(|v| v.is_finite())
                && r.std.iter().all(|v| v.is_finite() && *v > 0.0);
            if !finite {
                return Err(bad(format!(
                    "stage {} rule holds non-finite numbers or non-positive deviations",
                    t + 1
                )));
            }
        }
        Ok(BackwardAgent {
            config: s.config,
            num_stages,
            feature_dims: s.feature_dims,
            num_classes: s.num_classes,
            rules: s.rules,
            alpha: s.alpha,
            ridge: s.ridge,
            trained_with,
        })
    }

    /// The name of its method: `backward-induction` or `ann`.
    fn method(&self) -> &'static str {
        match self.config.fit {
            StopFit::Regression => "backward-induction",
            StopFit::Classification => "ann",
        }
    }

    /// The fitted rules (stages `1..K-1`).
    pub fn rules(&self) -> &[StageRule] {
        &self.rules
    }

    /// The score `w . phi(o)` of the rule of stage `t` (stop when >= 0).
    fn score(&self, t: usize, features: &[f32], probs: &[f32]) -> f64 {
        let r = &self.rules[t];
        let d = r.mean.len();
        let mut s = r.weights[d];
        let mut j = 0;
        let mut push = |v: f64| {
            if j < d {
                s += r.weights[j] * (v - r.mean[j]) / r.std[j];
            }
            j += 1;
        };
        raw_inputs(self.config.inputs, features, probs, &mut push);
        s
    }

    fn stop_prob_at(&self, t: usize, features: &[f32], probs: &[f32]) -> f32 {
        if t + 1 >= self.num_stages {
            return 1.0;
        }
        let s = self.score(t, features, probs);
        match self.config.fit {
            StopFit::Regression => {
                if s >= 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            StopFit::Classification => (1.0 / (1.0 + (-s).exp())) as f32,
        }
    }

    /// The agent's own MACs per stage: one dot product of `phi` at each
    /// stage but the last.
    fn macs(&self) -> Vec<f64> {
        let mut m: Vec<f64> = self.rules.iter().map(|r| r.weights.len() as f64).collect();
        m.push(0.0);
        m
    }
}

/// Number of inputs (without the bias) a rule reads at a stage with
/// `feature_dim` features and `num_classes` classes.
fn input_width(inputs: StopInputs, feature_dim: usize, num_classes: usize) -> usize {
    let probs = num_classes + 2;
    match inputs {
        StopInputs::Probs => probs,
        StopInputs::FeaturesAndProbs => feature_dim + probs,
    }
}

/// Calls `push` with the raw (unstandardised) inputs of one observation.
fn raw_inputs(inputs: StopInputs, features: &[f32], probs: &[f32], push: &mut impl FnMut(f64)) {
    if inputs == StopInputs::FeaturesAndProbs {
        for &f in features {
            push(f as f64);
        }
    }
    let mut top = 0.0f64;
    let mut entropy = 0.0f64;
    for &p in probs {
        let p = p as f64;
        push(p);
        top = top.max(p);
        if p > 0.0 {
            entropy -= p * p.ln();
        }
    }
    push(top);
    push(entropy);
}

// -- Fitting ------------------------------------------------------------------

/// One stage's standardised design matrix `[n, d + 1]` (bias last) and the
/// statistics that standardise it.
struct Design {
    rows: Vec<f64>,
    width: usize,
    mean: Vec<f64>,
    std: Vec<f64>,
    /// `X^T X / n`, computed once (it does not depend on alpha).
    gram: Vec<f64>,
}

impl Design {
    fn new(inputs: StopInputs, trace: &ReplayBackend, t: usize) -> Design {
        let n = trace.labels().len();
        let c = trace.meta().num_classes;
        let d_f = trace.stage_features(t).len() / n.max(1);
        let mut raw: Vec<f64> = Vec::new();
        for i in 0..n {
            let f = &trace.stage_features(t)[i * d_f..(i + 1) * d_f];
            let p = &trace.stage_probs(t)[i * c..(i + 1) * c];
            raw_inputs(inputs, f, p, &mut |v| raw.push(v));
        }
        let d = raw.len() / n.max(1);
        let mut mean = vec![0.0; d];
        let mut var = vec![0.0; d];
        for row in raw.chunks(d.max(1)) {
            for j in 0..d {
                mean[j] += row[j];
            }
        }
        mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
        for row in raw.chunks(d.max(1)) {
            for j in 0..d {
                var[j] += (row[j] - mean[j]).powi(2);
            }
        }
        let std: Vec<f64> = var
            .iter()
            .map(|v| (v / n.max(1) as f64).sqrt())
            .map(|s| if s > 1e-8 { s } else { 1.0 })
            .collect();
        let width = d + 1;
        let mut rows = Vec::with_capacity(n * width);
        for row in raw.chunks(d.max(1)).take(n) {
            for j in 0..d {
                rows.push((row[j] - mean[j]) / std[j]);
            }
            rows.push(1.0);
        }
        let gram = weighted_gram(&rows, width, None);
        Design {
            rows,
            width,
            mean,
            std,
            gram,
        }
    }

    fn n(&self) -> usize {
        self.rows.len() / self.width
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.rows[i * self.width..(i + 1) * self.width]
    }

    fn score(&self, w: &[f64], i: usize) -> f64 {
        self.row(i).iter().zip(w).map(|(x, w)| x * w).sum()
    }
}

/// `sum_i a_i x_i x_i^T / n` (`a_i = 1` without weights), `[width, width]`.
fn weighted_gram(rows: &[f64], width: usize, a: Option<&[f64]>) -> Vec<f64> {
    let n = rows.len() / width.max(1);
    let mut g = vec![0.0; width * width];
    for i in 0..n {
        let x = &rows[i * width..(i + 1) * width];
        let ai = a.map_or(1.0, |a| a[i]);
        if ai == 0.0 {
            continue;
        }
        for j in 0..width {
            let xj = ai * x[j];
            if xj == 0.0 {
                continue;
            }
            let gj = &mut g[j * width..(j + 1) * width];
            for (gjk, xk) in gj[..=j].iter_mut().zip(x) {
                *gjk += xj * xk;
            }
        }
    }
    for j in 0..width {
        for k in 0..j {
            g[k * width + j] = g[j * width + k];
        }
    }
    g.iter_mut().for_each(|v| *v /= n.max(1) as f64);
    g
}

/// Solves `(G + lambda I') w = b` by Cholesky (`I'`: the identity without
/// its last entry, the bias). `G` is positive semi-definite, so any
/// `lambda > 0` makes the system positive definite but for the bias; a
/// tiny jitter covers a constant design.
fn ridge_solve(g: &[f64], b: &[f64], lambda: f64) -> Result<Vec<f64>> {
    let m = b.len();
    let mut a = g.to_vec();
    for j in 0..m {
        a[j * m + j] += if j + 1 < m { lambda } else { 1e-10 };
    }
    // In-place Cholesky: a = L L^T, L in the lower triangle.
    for j in 0..m {
        let mut d = a[j * m + j];
        for k in 0..j {
            d -= a[j * m + k] * a[j * m + k];
        }
        if !(d > 0.0 && d.is_finite()) {
            return Err(Error::Config(format!(
                "stopping-rule fit: the normal equations are not positive definite \
                 (pivot {j}: {d}); are the stage outputs finite?"
            )));
        }
        let d = d.sqrt();
        a[j * m + j] = d;
        for i in j + 1..m {
            let mut s = a[i * m + j];
            for k in 0..j {
                s -= a[i * m + k] * a[j * m + k];
            }
            a[i * m + j] = s / d;
        }
    }
    let mut y = b.to_vec();
    for i in 0..m {
        for k in 0..i {
            y[i] -= a[i * m + k] * y[k];
        }
        y[i] /= a[i * m + i];
    }
    for i in (0..m).rev() {
        for k in i + 1..m {
            y[i] -= a[k * m + i] * y[k];
        }
        y[i] /= a[i * m + i];
    }
    Ok(y)
}

/// Ridge regression of `target` on the design.
fn fit_regression(x: &Design, target: &[f64], lambda: f64) -> Result<Vec<f64>> {
    let n = x.n().max(1) as f64;
    let mut b = vec![0.0; x.width];
    for (i, &y) in target.iter().enumerate() {
        for (bj, xj) in b.iter_mut().zip(x.row(i)) {
            *bj += xj * y / n;
        }
    }
    ridge_solve(&x.gram, &b, lambda)
}

/// Weighted logistic regression of `target > 0` with weights `|target|`
/// (normalised to mean 1), L2 strength `lambda`, by Newton's method.
fn fit_classification(x: &Design, target: &[f64], lambda: f64, steps: usize) -> Result<Vec<f64>> {
    let n = x.n();
    let total: f64 = target.iter().map(|d| d.abs()).sum();
    let mut w = vec![0.0; x.width];
    if total == 0.0 {
        return Ok(w);
    }
    let scale = n as f64 / total;
    let weight: Vec<f64> = target.iter().map(|d| d.abs() * scale).collect();
    let label: Vec<f64> = target
        .iter()
        .map(|&d| if d > 0.0 { 1.0 } else { 0.0 })
        .collect();
    for _ in 0..steps {
        let mut grad = vec![0.0; x.width];
        let mut curv = vec![0.0; n];
        for i in 0..n {
            let p = 1.0 / (1.0 + (-x.score(&w, i)).exp());
            let r = weight[i] * (p - label[i]) / n as f64;
            for (g, xj) in grad.iter_mut().zip(x.row(i)) {
                *g += r * xj;
            }
            curv[i] = weight[i] * p * (1.0 - p);
        }
        for j in 0..x.width - 1 {
            grad[j] += lambda * w[j];
        }
        let h = weighted_gram(&x.rows, x.width, Some(&curv));
        let step = ridge_solve(&h, &grad, lambda)?;
        let mut largest = 0.0f64;
        for (wj, sj) in w.iter_mut().zip(&step) {
            *wj -= sj;
            largest = largest.max(sj.abs());
        }
        if largest < 1e-9 {
            break;
        }
    }
    Ok(w)
}

/// Stopping rewards `r_t(x)` of every stage and sample, `[K][n]`.
fn stop_rewards(trace: &ReplayBackend, model: &RewardModel) -> Vec<Vec<f64>> {
    let c = trace.meta().num_classes;
    let labels = trace.labels();
    (0..model.num_stages())
        .map(|t| {
            let probs = trace.stage_probs(t);
            labels
                .iter()
                .enumerate()
                .map(|(i, &y)| model.expected_stop_reward(t, &probs[i * c..(i + 1) * c], y))
                .collect()
        })
        .collect()
}

/// The backward sweep at one (alpha, lambda): the rules of stages
/// `1..K-1`.
fn sweep(
    config: &BackwardConfig,
    designs: &[Design],
    rewards: &[Vec<f64>],
    lambda: f64,
) -> Result<Vec<StageRule>> {
    let k = rewards.len();
    let mut value = rewards[k - 1].clone();
    let mut rules = Vec::with_capacity(k - 1);
    for t in (0..k - 1).rev() {
        let x = &designs[t];
        let advantage: Vec<f64> = rewards[t].iter().zip(&value).map(|(r, v)| r - v).collect();
        let w = match config.fit {
            StopFit::Regression => fit_regression(x, &advantage, lambda)?,
            StopFit::Classification => {
                fit_classification(x, &advantage, lambda, config.newton_steps)?
            }
        };
        for (i, v) in value.iter_mut().enumerate() {
            if x.score(&w, i) >= 0.0 {
                *v = rewards[t][i];
            }
        }
        rules.push(StageRule {
            mean: x.mean.clone(),
            std: x.std.clone(),
            weights: w,
        });
    }
    rules.reverse();
    Ok(rules)
}

impl Agent for BackwardAgent {
    fn family(&self) -> crate::spec::Family {
        crate::spec::Family::Backward
    }

    fn name(&self) -> String {
        self.method().to_string()
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "fit": self.config.fit,
            "inputs": self.config.inputs,
            "alpha": self.alpha,
            "ridge": self.ridge,
        })
    }

    fn num_stages(&self) -> usize {
        self.num_stages
    }

    fn check_fits(&self, backend: &dyn cascade_env::StageBackend) -> Result<()> {
        let mismatch = |problem: String| Error::Mismatch {
            agent: self.name(),
            problem,
        };
        if backend.num_stages() != self.num_stages {
            return Err(mismatch(format!(
                "built for {} stages, the cascade has {}",
                self.num_stages,
                backend.num_stages()
            )));
        }
        for (t, r) in self.rules.iter().enumerate() {
            let want = input_width(
                self.config.inputs,
                backend.feature_dims()[t],
                backend.num_classes(),
            );
            if r.mean.len() != want {
                return Err(mismatch(format!(
                    "stage {} rule reads {} inputs, the cascade gives {want}",
                    t + 1,
                    r.mean.len()
                )));
            }
        }
        Ok(())
    }

    fn policy_macs(&self) -> Vec<f64> {
        self.macs()
    }

    fn stop_probs(
        &self,
        obs: &BatchObservation,
        _labels: Option<&[u32]>,
        out: &mut [f32],
    ) -> Result<()> {
        for t in 0..obs.num_stages() {
            for &i in obs.envs_at_stage(t) {
                let i = i as usize;
                out[i] = self.stop_prob_at(t, obs.features(i), obs.probs_of(i));
            }
        }
        Ok(())
    }

    /// Fits the rules on `data.train` and chooses the L2 strength (and,
    /// under a budget, alpha) on `data.val`.
    fn train(&mut self, data: TrainData<'_>, opts: &TrainOptions) -> Result<TrainSummary> {
        opts.validate()?;
        self.config.validate()?;
        let start = Instant::now();
        // The widths come from the data (an agent loaded from disk, or
        // built for another cascade, is refitted from scratch).
        self.feature_dims = data.train.feature_dims().to_vec();
        self.num_classes = data.train.num_classes();
        self.num_stages = data.train.num_stages();
        if self.num_stages < 2 {
            return Err(Error::Config(format!(
                "{} needs at least 2 stages",
                self.method()
            )));
        }
        let train = record_split(data.train, "train")?;
        let mut val = record_split(data.val, "val")?;
        if val.stage_names().len() != self.num_stages {
            return Err(Error::Mismatch {
                agent: self.name(),
                problem: "the training and validation splits come from cascades of different sizes"
                    .into(),
            });
        }
        let designs: Vec<Design> = (0..self.num_stages - 1)
            .map(|t| Design::new(self.config.inputs, &train, t))
            .collect();
        let macs: Vec<f64> = designs
            .iter()
            .map(|d| d.width as f64)
            .chain([0.0])
            .collect();
        let stage_costs = cascade_env::StageBackend::stage_costs(&train).to_vec();
        let costs = if opts.count_policy_cost {
            opts.spec
                .cost
                .with_policy(&stage_costs, &macs)
                .map_err(Error::from_env)?
        } else {
            stage_costs
        };
        let alphas: Vec<f64> = match opts.budget {
            None => vec![opts.spec.alpha],
            Some(_) => {
                let (lo, hi) = self.config.alpha_range;
                let m = self.config.alpha_grid;
                (0..m)
                    .map(|i| (lo.ln() + (hi / lo).ln() * i as f64 / (m - 1) as f64).exp())
                    .collect()
            }
        };
        let eval_cfg = EvalConfig {
            split: "val".into(),
            seed: opts.seed,
            num_envs: opts.num_envs,
            mode: ActMode::Greedy,
            count_policy_cost: opts.count_policy_cost,
        };
        // The best candidate: its validation numbers, alpha, L2 strength, rules.
        let mut best: Option<(ValScore, f64, f64, Vec<StageRule>)> = None;
        for &alpha in &alphas {
            let spec = cascade_env::RewardSpec { alpha, ..opts.spec };
            let rewards = stop_rewards(&train, &spec.compile(&costs)?);
            for &lambda in &self.config.ridge {
                self.rules = sweep(&self.config, &designs, &rewards, lambda)?;
                let r = evaluate(self, &mut val, &spec, &eval_cfg)?;
                let s = ValScore {
                    mean_reward: r.mean_reward,
                    error: r.error,
                    cost: r.cost_pct_mean / 100.0,
                };
                if best
                    .as_ref()
                    .is_none_or(|(b, ..)| better(&s, b, opts.budget))
                {
                    best = Some((s, alpha, lambda, self.rules.clone()));
                }
            }
        }
        let (best, alpha, ridge, rules) =
            best.ok_or_else(|| Error::Config("no candidate to fit".into()))?;
        self.rules = rules;
        self.alpha = alpha;
        self.ridge = ridge;
        self.trained_with = Some(opts.clone());
        Ok(TrainSummary {
            agent: self.name(),
            epochs_run: 0,
            best_epoch: 0,
            val_mean_reward: best.mean_reward,
            val_error: best.error,
            val_cost: best.cost,
            alpha,
            budget: opts.budget,
            budget_met: opts.budget.map(|b| meets_budget(best.cost, b)),
            seconds: start.elapsed().as_secs_f64(),
            history: Vec::new(),
        })
    }

    fn save(&self, dir: &Path) -> Result<()> {
        write_manifest(
            dir,
            &AgentManifest {
                format_version: AGENT_FORMAT_VERSION,
                name: self.name(),
                num_stages: self.num_stages,
                state: AgentState::Backward(BackwardState {
                    config: self.config.clone(),
                    rules: self.rules.clone(),
                    alpha: self.alpha,
                    ridge: self.ridge,
                    feature_dims: self.feature_dims.clone(),
                    num_classes: self.num_classes,
                }),
                trained_with: self.trained_with.clone(),
                spec: None,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_solve_matches_a_known_system() {
        // (G + diag(0.5, 0.5, 0)) w = b with G = [[2,1,0],[1,3,1],[0,1,4]].
        let g = [2.0, 1.0, 0.0, 1.0, 3.0, 1.0, 0.0, 1.0, 4.0];
        let w_true = [1.0, -2.0, 0.5];
        let a = [2.5, 1.0, 0.0, 1.0, 3.5, 1.0, 0.0, 1.0, 4.0 + 1e-10];
        let b: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|j| a[i * 3 + j] * w_true[j]).sum())
            .collect();
        let w = ridge_solve(&g, &b, 0.5).unwrap();
        for (x, y) in w.iter().zip(w_true) {
            assert!((x - y).abs() < 1e-9, "{w:?}");
        }
    }

    #[test]
    fn logistic_fit_separates_a_weighted_sign() {
        // One input; stopping pays when x > 0.3 (the weights favour it).
        let n = 400;
        let xs: Vec<f64> = (0..n).map(|i| i as f64 / n as f64).collect();
        let mut rows = Vec::new();
        let (m, s) = (0.5, (1.0f64 / 12.0).sqrt());
        for &x in &xs {
            rows.extend([(x - m) / s, 1.0]);
        }
        let gram = weighted_gram(&rows, 2, None);
        let design = Design {
            rows,
            width: 2,
            mean: vec![m],
            std: vec![s],
            gram,
        };
        let target: Vec<f64> = xs.iter().map(|&x| x - 0.3).collect();
        let w = fit_classification(&design, &target, 1e-4, 50).unwrap();
        let boundary = m - w[1] / w[0] * s;
        assert!((boundary - 0.3).abs() < 0.05, "{boundary}");
        let w = fit_regression(&design, &target, 1e-6).unwrap();
        let boundary = m - w[1] / w[0] * s;
        assert!((boundary - 0.3).abs() < 1e-3, "{boundary}");
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            BackwardConfig {
                ridge: vec![],
                ..BackwardConfig::backward_induction()
            },
            BackwardConfig {
                ridge: vec![0.0],
                ..BackwardConfig::backward_induction()
            },
            BackwardConfig {
                alpha_range: (1.0, 0.1),
                ..BackwardConfig::ann()
            },
            BackwardConfig {
                newton_steps: 0,
                ..BackwardConfig::ann()
            },
        ] {
            assert!(BackwardAgent::new(bad, &[3, 4], 2).is_err());
        }
        assert!(BackwardAgent::new(BackwardConfig::ann(), &[], 2).is_err());
    }
}
