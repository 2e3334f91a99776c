//! Evaluating an agent on a split: [`evaluate`] plays every sample of a
//! stage backend's split once through the vector env and summarises the
//! outcomes into one [`EvalReport`] (JSON and CSV writers).
//!
//! Rewards, losses and costs are the env's: [`evaluate`] builds a
//! [`VecEnv`] over the backend and reads [`cascade_env::Evaluation`]. Two
//! things are added on the way:
//!
//! - **Policy cost.** A learned stopping policy costs compute too. With
//!   [`EvalConfig::count_policy_cost`] the env is given stage costs that
//!   include the policy's multiply-accumulates ([`cascade_env::CostModel::with_policy`]), so
//!   the reported cost (and, in training, the reward) is honest about
//!   them. The report also gives the classifiers' share and the policy's
//!   share separately.
//! - **Labels for the oracle.** Observations carry no label. The evaluator
//!   wraps the backend and records, whenever a stage runs for a sub-env,
//!   the label of the sample it runs on (`StageBackend::label`); agents
//!   that [`Agent::uses_labels`] get them, no one else does.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use cascade_env::{
    Action, AutoReset, EnvRng, Evaluation, ReplayBackend, RewardSpec, StageBackend, StageBatch,
    StageRows, TraceMeta, VecEnv,
};
use serde::{Deserialize, Serialize};

use crate::agent::{ActMode, Agent};
use crate::error::{Error, Result};

/// How [`evaluate`] runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Name of the split, for the report (`"val"`, `"test"`).
    pub split: String,
    /// Seed of the agent's action draws and the env's sampled predictions.
    pub seed: u64,
    /// Sub-envs run in lock step (the stage batch size).
    pub num_envs: usize,
    /// Greedy or sampled actions.
    pub mode: ActMode,
    /// Count the policy's MACs into the env's stage costs
    /// ([`cascade_env::CostModel::with_policy`]); needs stage costs in MACs.
    pub count_policy_cost: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            split: "test".into(),
            seed: 0,
            num_envs: 256,
            mode: ActMode::Greedy,
            count_policy_cost: true,
        }
    }
}

impl EvalConfig {
    /// A config for `split` with defaults for the rest.
    pub fn for_split(split: &str) -> Self {
        EvalConfig {
            split: split.into(),
            ..Default::default()
        }
    }

    /// Refuses zero sub-envs.
    pub fn validate(&self) -> Result<()> {
        if self.num_envs == 0 {
            return Err(Error::Config("eval num_envs must be positive".into()));
        }
        Ok(())
    }
}

/// The result of evaluating one agent on one split.
///
/// Costs are normalised by the largest stage's own cost `F_K` and given
/// in percent, as in the paper's table. Per-stage vectors are `[K]` with
/// stage 0 = `C_1`; `exits_per_class` is `[C][K]` (true class, exit stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The agent's name.
    pub agent: String,
    /// The agent's family (`static`, `oracle`, `threshold`, `backward`,
    /// `reinforce`, `expected`).
    pub kind: String,
    /// The agent's parameters.
    pub params: serde_json::Value,
    /// The split's name.
    pub split: String,
    /// Samples evaluated.
    pub n: usize,
    /// Number of stages K.
    pub num_stages: usize,
    /// Number of classes C.
    pub num_classes: usize,
    /// The reward used.
    pub spec: RewardSpec,
    /// Greedy or sampled actions.
    pub mode: ActMode,
    /// The evaluation seed.
    pub seed: u64,
    /// Fraction of wrong predictions.
    pub error: f64,
    /// Mean reward `-L - alpha * Cost(k)`.
    pub mean_reward: f64,
    /// Mean loss under the spec's loss.
    pub mean_loss: f64,
    /// Mean cost in percent of `cost_normaliser` (the env's cost: with the
    /// policy's MACs when `policy_cost_counted`).
    pub cost_pct_mean: f64,
    /// Standard deviation over samples of that cost, in percent.
    pub cost_pct_std: f64,
    /// The classifiers' share of `cost_pct_mean`.
    pub classifier_cost_pct_mean: f64,
    /// The policy's share of `cost_pct_mean` (0 when not counted).
    pub policy_cost_pct_mean: f64,
    /// Mean cost in the backend's raw units (e.g. MACs per sample).
    pub mean_raw_cost: f64,
    /// The env's normaliser in raw units: the largest stage cost it was
    /// given, i.e. `F_K` (see [`cascade_env::CostModel::with_policy`] for when the policy
    /// changes it).
    pub cost_normaliser: f64,
    /// Whether the policy's MACs were counted into the cost.
    pub policy_cost_counted: bool,
    /// Raw cost `F_t` of each stage alone, `[K]`.
    pub stage_costs: Vec<f64>,
    /// The policy's MACs per stage evaluated, `[K]`.
    pub policy_macs: Vec<f64>,
    /// Fraction of samples exiting at each stage ("sample distribution"), `[K]`.
    pub exit_fraction: Vec<f64>,
    /// Accuracy of the samples exiting at each stage ("accuracy
    /// distribution"), `None` where no sample exits, `[K]`.
    pub exit_accuracy: Vec<Option<f64>>,
    /// Exits per true class and stage, `[C][K]`.
    pub exits_per_class: Vec<Vec<usize>>,
    /// Mean stop probability the agent gave at each stage over the
    /// observations it acted on there, `None` where none, `[K]`.
    pub mean_stop_prob: Vec<Option<f64>>,
    /// Wall time of the evaluation, seconds.
    pub wall_seconds: f64,
    /// Per sample, in split order: the 0-based stage it stopped at (for
    /// paired comparisons of agents on the same images).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample_exits: Vec<u8>,
    /// Per sample, in split order: 1 where the prediction was right.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample_correct: Vec<u8>,
    /// Per sample, in split order: the predicted class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample_predictions: Vec<u32>,
    /// What was evaluated, when the caller recorded it: the agent and the
    /// classifiers, each with the content hash of its files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated: Option<Evaluated>,
}

/// What an [`EvalReport`] evaluated: recorded so that a report read later
/// can be checked against the agent and classifiers it claims to score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluated {
    /// The agent folder, as given.
    pub agent_dir: String,
    /// Content hash of the agent's files (`agent.json` and its weights).
    pub agent_hash: String,
    /// The cascade folder whose classifiers produced the observations.
    pub cascade_dir: String,
    /// Content hash of that cascade (its manifest and stage files).
    pub cascade_hash: String,
}

/// A backend seen through the evaluator: stage costs replaced (policy
/// cost) and the label of each sub-env's sample recorded whenever a stage
/// runs for it (row `r` of a stage request is sub-env `r`).
struct Tap<'a> {
    inner: &'a mut dyn StageBackend,
    costs: Vec<f64>,
    labels: Rc<RefCell<Vec<u32>>>,
}

impl StageBackend for Tap<'_> {
    fn num_stages(&self) -> usize {
        self.inner.num_stages()
    }
    fn stage_costs(&self) -> &[f64] {
        &self.costs
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn feature_dims(&self) -> &[usize] {
        self.inner.feature_dims()
    }
    fn num_samples(&self) -> usize {
        self.inner.num_samples()
    }
    fn label(&self, sample: usize) -> u32 {
        self.inner.label(sample)
    }
    fn run_stage(&mut self, stage: usize, samples: &[usize]) -> cascade_env::Result<StageBatch> {
        self.inner.run_stage(stage, samples)
    }
    fn run_stage_into(
        &mut self,
        stage: usize,
        samples: &[usize],
        out: StageRows<'_>,
    ) -> cascade_env::Result<()> {
        {
            let mut labels = self.labels.borrow_mut();
            for (&s, &r) in samples.iter().zip(out.rows) {
                let r = r as usize;
                if r >= labels.len() {
                    labels.resize(r + 1, 0);
                }
                if s < self.inner.num_samples() {
                    labels[r] = self.inner.label(s);
                }
            }
        }
        self.inner.run_stage_into(stage, samples, out)
    }
}

/// Plays every sample of `backend`'s split once with `agent` and reports.
///
/// The env is a [`VecEnv`] with `cfg.num_envs` sub-envs (fewer if the split
/// is smaller) over `backend`, reward `spec`, and stage costs with the
/// policy's MACs when `cfg.count_policy_cost`. Results do not depend on
/// `num_envs` in greedy mode; sampled actions draw from one stream seeded
/// by `cfg.seed`.
pub fn evaluate(
    agent: &dyn Agent,
    backend: &mut dyn StageBackend,
    spec: &RewardSpec,
    cfg: &EvalConfig,
) -> Result<EvalReport> {
    cfg.validate()?;
    spec.validate()?;
    agent.check_fits(&*backend)?;
    let k = backend.num_stages();
    let c = backend.num_classes();
    let n = backend.num_samples();
    let raw_costs = backend.stage_costs().to_vec();
    let policy_macs = agent.policy_macs();
    let env_costs = if cfg.count_policy_cost {
        spec.cost
            .with_policy(&raw_costs, &policy_macs)
            .map_err(Error::from_env)?
    } else {
        raw_costs.clone()
    };
    let n_envs = cfg.num_envs.min(n).max(1);
    let labels = Rc::new(RefCell::new(vec![0u32; n_envs]));
    let tap = Tap {
        inner: backend,
        costs: env_costs,
        labels: Rc::clone(&labels),
    };
    let mut venv = VecEnv::new(tap, *spec, n_envs, AutoReset::Disabled)?;
    let mut rng = EnvRng::new(cfg.seed ^ 0x5EED_AC75);
    let mut probs = vec![0f32; n_envs];
    let mut prob_sum = vec![0f64; k];
    let mut prob_count = vec![0usize; k];
    let uses_labels = agent.uses_labels();
    let start = Instant::now();
    let ev = venv
        .evaluate_all(cfg.seed, |obs, actions: &mut [Action]| {
            let lab = labels.borrow();
            let l = uses_labels.then_some(&lab[..]);
            agent
                .act_batch(obs, l, cfg.mode, &mut rng, &mut probs, actions)
                .map_err(cascade_env::Error::policy)?;
            for t in 0..k {
                for &i in obs.envs_at_stage(t) {
                    prob_sum[t] += probs[i as usize] as f64;
                    prob_count[t] += 1;
                }
            }
            Ok(())
        })
        .map_err(Error::from_env)?;
    let wall_seconds = start.elapsed().as_secs_f64();
    let mean_stop_prob = prob_sum
        .iter()
        .zip(&prob_count)
        .map(|(&s, &m)| (m > 0).then(|| s / m as f64))
        .collect();
    // The classifiers' share, under the env's normaliser so shares add up.
    let model = venv.reward_model();
    let classifier_costs = spec
        .cost
        .stopping_costs(&raw_costs)
        .iter()
        .map(|&c| model.normalise(c))
        .collect();
    Ok(EvalReport::from_evaluation(
        &ev,
        ReportContext {
            agent: agent.name(),
            kind: agent.family().name().to_string(),
            params: agent.params(),
            split: cfg.split.clone(),
            spec: *spec,
            mode: cfg.mode,
            seed: cfg.seed,
            num_classes: c,
            policy_cost_counted: cfg.count_policy_cost,
            stage_costs: raw_costs,
            policy_macs,
            classifier_costs,
            cost_normaliser: model.normaliser(),
            mean_stop_prob,
            expected_errors: None,
            wall_seconds,
        },
    ))
}

/// What [`EvalReport::from_evaluation`] needs besides the outcomes: who
/// was evaluated, on which split, under which reward and costs.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportContext {
    /// The agent's name.
    pub agent: String,
    /// The agent's family (`static`, `oracle`, `threshold`, `backward`,
    /// `reinforce`, `expected`).
    pub kind: String,
    /// The agent's parameters.
    pub params: serde_json::Value,
    /// The split's name.
    pub split: String,
    /// The reward the outcomes were scored under.
    pub spec: RewardSpec,
    /// Greedy or sampled actions.
    pub mode: ActMode,
    /// The evaluation seed.
    pub seed: u64,
    /// Number of classes C.
    pub num_classes: usize,
    /// Whether the outcomes' costs include the policy's MACs.
    pub policy_cost_counted: bool,
    /// Raw cost `F_t` of each stage alone, `[K]`.
    pub stage_costs: Vec<f64>,
    /// The policy's MACs per stage evaluated, `[K]`.
    pub policy_macs: Vec<f64>,
    /// The classifiers' normalised `Cost(k)` of stopping at each stage,
    /// under the outcomes' normaliser, `[K]`.
    pub classifier_costs: Vec<f64>,
    /// The outcomes' cost normaliser in raw units.
    pub cost_normaliser: f64,
    /// Mean stop probability per stage, `[K]` (`None` where not known).
    pub mean_stop_prob: Vec<Option<f64>>,
    /// Per outcome, the expected 0-1 error of its prediction where that is
    /// an expectation rather than one draw (the label-aware bound under
    /// sampled predictions, `1 - p_k(y)`); `None`: 1 where the prediction
    /// is wrong, 0 where it is right.
    pub expected_errors: Option<Vec<f64>>,
    /// Wall time, seconds.
    pub wall_seconds: f64,
}

impl EvalReport {
    /// Summarises the outcomes of `ev` (one per sample, in split order)
    /// into a report: the one summary of an evaluation, for agents played
    /// through the env ([`evaluate`]) and label-aware bounds computed on a
    /// recorded trace alike.
    ///
    /// With the policy's cost not counted, the classifiers' share is the
    /// whole cost and the policy's share 0.
    pub fn from_evaluation(ev: &Evaluation, ctx: ReportContext) -> Self {
        let k = ctx.stage_costs.len();
        let c = ctx.num_classes;
        let n = ev.outcomes.len();
        let m = n.max(1) as f64;
        let mut exits = vec![0usize; k];
        let mut right = vec![0f64; k];
        let mut per_class = vec![vec![0usize; k]; c];
        let mut wrong = 0.0;
        let mut cls_cost = 0.0;
        let mut sq = 0.0;
        for (i, o) in ev.outcomes.iter().enumerate() {
            let w = match &ctx.expected_errors {
                Some(e) => e.get(i).copied().unwrap_or(0.0),
                None => (o.prediction != o.label) as u8 as f64,
            };
            wrong += w;
            exits[o.stop_stage] += 1;
            right[o.stop_stage] += 1.0 - w;
            if let Some(row) = per_class.get_mut(o.label as usize) {
                row[o.stop_stage] += 1;
            }
            cls_cost += ctx.classifier_costs[o.stop_stage];
            sq += (o.cost - ev.mean_cost).powi(2);
        }
        let cost_pct_mean = 100.0 * ev.mean_cost;
        let (classifier_cost_pct_mean, policy_cost_pct_mean) = if ctx.policy_cost_counted {
            let cls = 100.0 * cls_cost / m;
            (cls, cost_pct_mean - cls)
        } else {
            (cost_pct_mean, 0.0)
        };
        EvalReport {
            agent: ctx.agent,
            kind: ctx.kind,
            params: ctx.params,
            split: ctx.split,
            n,
            num_stages: k,
            num_classes: c,
            spec: ctx.spec,
            mode: ctx.mode,
            seed: ctx.seed,
            error: wrong / m,
            mean_reward: ev.mean_return,
            mean_loss: ev.mean_loss,
            cost_pct_mean,
            cost_pct_std: 100.0 * (sq / m).sqrt(),
            classifier_cost_pct_mean,
            policy_cost_pct_mean,
            mean_raw_cost: ev.mean_raw_cost,
            cost_normaliser: ctx.cost_normaliser,
            policy_cost_counted: ctx.policy_cost_counted,
            stage_costs: ctx.stage_costs,
            policy_macs: ctx.policy_macs,
            exit_fraction: exits.iter().map(|&e| e as f64 / m).collect(),
            exit_accuracy: exits
                .iter()
                .zip(&right)
                .map(|(&e, &r)| (e > 0).then(|| r / e as f64))
                .collect(),
            exits_per_class: per_class,
            mean_stop_prob: ctx.mean_stop_prob,
            wall_seconds: ctx.wall_seconds,
            sample_exits: ev
                .outcomes
                .iter()
                .map(|o| o.stop_stage.min(u8::MAX as usize) as u8)
                .collect(),
            sample_correct: ev
                .outcomes
                .iter()
                .map(|o| (o.prediction == o.label) as u8)
                .collect(),
            sample_predictions: ev.outcomes.iter().map(|o| o.prediction).collect(),
            evaluated: None,
        }
    }

    /// The CSV column names: summary columns, then per stage (1-based,
    /// `s1..sK`) exit fraction, exit accuracy, mean stop probability,
    /// stage cost and policy MACs, then `exits_c{class}_s{stage}`, then the
    /// agent's parameters as a JSON string.
    pub fn csv_header(&self) -> Vec<String> {
        let mut h: Vec<String> = [
            "agent",
            "kind",
            "split",
            "n",
            "alpha",
            "loss",
            "cost_model",
            "prediction",
            "mode",
            "seed",
            "error",
            "mean_reward",
            "mean_loss",
            "cost_pct_mean",
            "cost_pct_std",
            "classifier_cost_pct_mean",
            "policy_cost_pct_mean",
            "mean_raw_cost",
            "cost_normaliser",
            "policy_cost_counted",
            "wall_seconds",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for prefix in [
            "exit_fraction",
            "exit_accuracy",
            "mean_stop_prob",
            "stage_cost",
            "policy_macs",
        ] {
            h.extend((1..=self.num_stages).map(|t| format!("{prefix}_s{t}")));
        }
        for cl in 0..self.num_classes {
            h.extend((1..=self.num_stages).map(|t| format!("exits_c{cl}_s{t}")));
        }
        h.push("params".into());
        h
    }

    /// One CSV row matching [`Self::csv_header`] (`None` accuracies are
    /// empty cells).
    pub fn csv_record(&self) -> Vec<String> {
        let enum_name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let opt = |v: &Option<f64>| v.map_or_else(String::new, |x| x.to_string());
        let mut r = vec![
            self.agent.clone(),
            self.kind.clone(),
            self.split.clone(),
            self.n.to_string(),
            self.spec.alpha.to_string(),
            enum_name(serde_json::to_value(self.spec.loss).unwrap_or_default()),
            enum_name(serde_json::to_value(self.spec.cost).unwrap_or_default()),
            enum_name(serde_json::to_value(self.spec.prediction).unwrap_or_default()),
            enum_name(serde_json::to_value(self.mode).unwrap_or_default()),
            self.seed.to_string(),
            self.error.to_string(),
            self.mean_reward.to_string(),
            self.mean_loss.to_string(),
            self.cost_pct_mean.to_string(),
            self.cost_pct_std.to_string(),
            self.classifier_cost_pct_mean.to_string(),
            self.policy_cost_pct_mean.to_string(),
            self.mean_raw_cost.to_string(),
            self.cost_normaliser.to_string(),
            self.policy_cost_counted.to_string(),
            self.wall_seconds.to_string(),
        ];
        r.extend(self.exit_fraction.iter().map(|x| x.to_string()));
        r.extend(self.exit_accuracy.iter().map(opt));
        r.extend(self.mean_stop_prob.iter().map(opt));
        r.extend(self.stage_costs.iter().map(|x| x.to_string()));
        r.extend(self.policy_macs.iter().map(|x| x.to_string()));
        for row in &self.exits_per_class {
            r.extend(row.iter().map(|x| x.to_string()));
        }
        r.push(self.params.to_string());
        r
    }

    /// Writes the report as pretty JSON to `path`, atomically.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        cascade_env::fsutil::write_atomic(path, &json).map_err(|e| Error::io(path, e))
    }

    /// Reads a report written by [`Self::write_json`] and checks that it
    /// is consistent ([`Self::validate`]).
    pub fn read_json(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let r: Self = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        r.validate().map_err(|msg| Error::Report {
            path: path.to_path_buf(),
            msg,
        })?;
        Ok(r)
    }

    /// Checks that the report agrees with itself: fractions in `[0, 1]`,
    /// one entry per stage in the per-stage vectors, and per-image outcomes
    /// (when present) one per image, correctness 0 or 1, exits before the
    /// last stage's index, exit fractions that match them.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let k = self.num_stages;
        if self.n == 0 || k == 0 {
            return Err(format!("{} images, {k} stages", self.n));
        }
        if !(0.0..=1.0).contains(&self.error) {
            return Err(format!("error {} is not a fraction in [0, 1]", self.error));
        }
        for (name, len) in [
            ("exit_fraction", self.exit_fraction.len()),
            ("exit_accuracy", self.exit_accuracy.len()),
            ("stage_costs", self.stage_costs.len()),
        ] {
            if len != k {
                return Err(format!("{name} has {len} entries for {k} stages"));
            }
        }
        if let Some(f) = self
            .exit_fraction
            .iter()
            .find(|f| !(0.0..=1.0).contains(*f))
        {
            return Err(format!("exit fraction {f} is not in [0, 1]"));
        }
        let per_image = [
            ("sample_exits", self.sample_exits.len()),
            ("sample_correct", self.sample_correct.len()),
            ("sample_predictions", self.sample_predictions.len()),
        ];
        for (name, len) in per_image {
            if len != 0 && len != self.n {
                return Err(format!("{name} has {len} entries for {} images", self.n));
            }
        }
        if let Some((i, v)) = self.sample_correct.iter().enumerate().find(|(_, &v)| v > 1) {
            return Err(format!(
                "sample_correct[{i}] is {v}: per-image correctness is 0 or 1"
            ));
        }
        if let Some((i, v)) = self
            .sample_exits
            .iter()
            .enumerate()
            .find(|(_, &v)| v as usize >= k)
        {
            return Err(format!(
                "sample_exits[{i}] is {v}: stages are 0..{} in a {k}-stage cascade",
                k - 1
            ));
        }
        if !self.sample_exits.is_empty() {
            let mut count = vec![0usize; k];
            for &e in &self.sample_exits {
                count[e as usize] += 1;
            }
            for (t, (&c, &f)) in count.iter().zip(&self.exit_fraction).enumerate() {
                if (c as f64 / self.n as f64 - f).abs() > 1e-9 {
                    return Err(format!(
                        "exit_fraction[{t}] is {f}, but {c} of the {} per-image exits are at stage {t}",
                        self.n
                    ));
                }
            }
        }
        Ok(())
    }

    /// Writes the header and this report's row as CSV to `path`, atomically.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let csv_err = |source| Error::Csv {
            path: path.to_path_buf(),
            source,
        };
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(self.csv_header()).map_err(csv_err)?;
        w.write_record(self.csv_record()).map_err(csv_err)?;
        let bytes = w
            .into_inner()
            .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
        cascade_env::fsutil::write_atomic(path, &bytes).map_err(|e| Error::io(path, e))
    }
}

/// [`ReplayBackend::record`] of a split an agent trains on: the stage outputs of
/// `backend` in memory, named only by `split` (the data set and cascade
/// are "recorded", costs in the backend's own units).
pub(crate) fn record_split(backend: &mut dyn StageBackend, split: &str) -> Result<ReplayBackend> {
    let meta = TraceMeta {
        dataset: "recorded".into(),
        split: split.into(),
        cascade: "recorded".into(),
        cost_unit: "raw".into(),
        num_classes: 0,
    };
    Ok(ReplayBackend::record(backend, meta, 1024)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_trace_equals_the_source() {
        let mut src = ReplayBackend::synthetic(&cascade_env::SyntheticTraceConfig {
            num_samples: 37,
            ..Default::default()
        })
        .unwrap();
        let meta = TraceMeta {
            dataset: "d".into(),
            split: "s".into(),
            cascade: "c".into(),
            cost_unit: "u".into(),
            num_classes: 0,
        };
        let rec = ReplayBackend::record(&mut src, meta, 8).unwrap();
        assert_eq!(rec.labels(), src.labels());
        assert_eq!(rec.stage_costs(), src.stage_costs());
        for t in 0..3 {
            assert_eq!(rec.stage_features(t), src.stage_features(t));
            assert_eq!(rec.stage_probs(t), src.stage_probs(t));
        }
        assert_eq!(rec.meta().num_classes, 10);
        assert_eq!(rec.meta().split, "s");
    }

    #[test]
    fn eval_config_refuses_zero_envs() {
        let cfg = EvalConfig {
            num_envs: 0,
            ..Default::default()
        };
        assert!(cfg.validate().is_err());
    }
}
