//! Actions and the reward: [`RewardSpec`] (the serde config) and
//! [`RewardModel`] (the spec compiled against a cascade's stage costs).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::EnvRng;

/// The agent's choice after a stage has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Stop here: predict with the current stage's classifier, end the episode.
    Stop = 0,
    /// Run the next stage (illegal at the last stage).
    Forward = 1,
}

impl Action {
    /// Both actions, in index order (`Stop` = 0, `Forward` = 1).
    pub const ALL: [Action; 2] = [Action::Stop, Action::Forward];

    /// The discrete index: `Stop` = 0, `Forward` = 1.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The action with discrete index `i`, if `i < 2`.
    pub fn from_index(i: usize) -> Option<Action> {
        Action::ALL.get(i).copied()
    }
}

/// Which actions are legal now. At the last stage only `Stop` is; after the
/// episode terminated, neither is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionMask {
    /// `Stop` is legal.
    pub stop: bool,
    /// `Forward` is legal.
    pub forward: bool,
}

impl ActionMask {
    /// The mask at 0-based `stage` of a `num_stages`-stage cascade, for a
    /// running episode.
    pub fn at_stage(stage: usize, num_stages: usize) -> Self {
        ActionMask {
            stop: true,
            forward: stage + 1 < num_stages,
        }
    }

    /// The mask of a terminated episode: nothing is legal.
    pub const NONE: ActionMask = ActionMask {
        stop: false,
        forward: false,
    };

    /// Whether `action` is legal.
    pub fn allows(self, action: Action) -> bool {
        match action {
            Action::Stop => self.stop,
            Action::Forward => self.forward,
        }
    }

    /// As `[stop, forward]`, indexed by [`Action::index`].
    pub fn to_array(self) -> [bool; 2] {
        [self.stop, self.forward]
    }
}

/// The loss `L(yhat, y)` in the stopping reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// 0-1 loss: 1 if the prediction is wrong, else 0.
    #[default]
    ZeroOne,
    /// Cross-entropy `-ln p_k(y)` of the stopping stage's probabilities;
    /// the prediction does not enter it. Probabilities are floored at
    /// [`CROSS_ENTROPY_FLOOR`], so the loss is at most about 27.6.
    CrossEntropy,
}

/// Probabilities below this count as this in the cross-entropy loss, so an
/// underflowed softmax (p = 0 in `f32`) gives a large finite loss.
pub const CROSS_ENTROPY_FLOOR: f64 = 1e-12;

/// How the compute of stopping at stage k is counted.
///
/// Costs are normalised by the largest stage's own cost `F_max` (with
/// `F_1 < ... < F_K`, that is `F_K`), so `alpha` reads as "loss per
/// full-model FLOPs" and a cost reads as a fraction of the largest model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostModel {
    /// `Cost(k) = (F_1 + ... + F_k) / F_max`: the stages are separate
    /// networks and every stage up to k has run on the input. Stopping at
    /// the last stage then costs more than 1 (the largest model plus all
    /// the smaller ones run before it).
    #[default]
    Cumulative,
    /// `Cost(k) = F_k / F_max`: the stages are early-exit branches of one
    /// network and `F_k` is already the cost of reaching exit k (the
    /// trunk's computation is shared). Stopping at the last stage costs 1.
    Exit,
}

/// How the stopping stage turns its probabilities into a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// `yhat ~ p_k(.|x)`, drawn with the env's RNG (the paper's stochastic
    /// classifier).
    Sample,
    /// `yhat = argmax_c p_k(c|x)`, the first maximum on ties.
    #[default]
    Argmax,
}

impl CostModel {
    /// Raw `Cost(k)` of stopping at each stage from the stages' own costs:
    /// the running sum under [`CostModel::Cumulative`], the stage's own
    /// cost under [`CostModel::Exit`].
    ///
    /// # Shapes
    /// `stage_costs: [K]` -> `[K]`.
    pub fn stopping_costs(self, stage_costs: &[f64]) -> Vec<f64> {
        match self {
            CostModel::Cumulative => stage_costs
                .iter()
                .scan(0.0, |acc, &c| {
                    *acc += c;
                    Some(*acc)
                })
                .collect(),
            CostModel::Exit => stage_costs.to_vec(),
        }
    }

    /// Stage costs with a stopping policy's MACs added, so that `Cost(k)`
    /// counts the policy evaluations of an episode that stops at k.
    ///
    /// Under [`CostModel::Cumulative`] (stage t run means policy t
    /// evaluated) `F'_t = F_t + P_t`; under [`CostModel::Exit`] (`F_k` is
    /// the cost of reaching exit k) `F'_k = F_k + P_1 + ... + P_k`. The env
    /// normalises by the largest `F'_t`. Under the cumulative model that is
    /// still `F_K` (learned policies cost nothing at the last stage, where
    /// `pi_K = 1`) as long as every policy evaluation costs less than
    /// `F_K - F_t`, which holds for any real cascade (a policy head is
    /// thousands of MACs, `F_K` millions); under the exit model it grows by
    /// the policy's total, a relative change of the order of the policy's
    /// MACs over `F_K`.
    ///
    /// # Shapes
    /// `stage_costs: [K]`, `policy_macs: [K]` -> `[K]`.
    pub fn with_policy(self, stage_costs: &[f64], policy_macs: &[f64]) -> Result<Vec<f64>> {
        if stage_costs.len() != policy_macs.len() {
            return Err(Error::InvalidArgument(format!(
                "{} stage costs but policy MACs for {} stages",
                stage_costs.len(),
                policy_macs.len()
            )));
        }
        if let Some(p) = policy_macs.iter().find(|p| !(p.is_finite() && **p >= 0.0)) {
            return Err(Error::InvalidArgument(format!(
                "policy MACs must be finite and >= 0, got {p}"
            )));
        }
        let mut acc = 0.0;
        Ok(stage_costs
            .iter()
            .zip(policy_macs)
            .map(|(&f, &p)| match self {
                CostModel::Cumulative => f + p,
                CostModel::Exit => {
                    acc += p;
                    f + acc
                }
            })
            .collect())
    }
}

/// A name as the command line and Python write it: trimmed, lower case,
/// `_` read as `-`.
fn normalise_name(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('_', "-")
}

/// Parses `name` against `(names, value)` pairs; the error names `what`
/// and the first name of every pair.
fn parse_named<T: Copy>(what: &str, name: &str, table: &[(&[&str], T)]) -> Result<T> {
    let n = normalise_name(name);
    table
        .iter()
        .find(|(names, _)| names.contains(&n.as_str()))
        .map(|&(_, v)| v)
        .ok_or_else(|| {
            let expected: Vec<String> =
                table.iter().map(|(ns, _)| format!("{:?}", ns[0])).collect();
            Error::InvalidArgument(format!(
                "unknown {what} {name:?}: expected {}",
                expected.join(" or ")
            ))
        })
}

impl std::str::FromStr for Loss {
    type Err = Error;

    /// `zero-one` (also `0-1`) or `cross-entropy` (also `ce`); case and
    /// `_` for `-` do not matter.
    fn from_str(s: &str) -> Result<Self> {
        parse_named(
            "loss",
            s,
            &[
                (&["zero-one", "0-1"], Loss::ZeroOne),
                (&["cross-entropy", "ce"], Loss::CrossEntropy),
            ],
        )
    }
}

impl std::str::FromStr for CostModel {
    type Err = Error;

    /// `cumulative` or `exit`.
    fn from_str(s: &str) -> Result<Self> {
        parse_named(
            "cost model",
            s,
            &[
                (&["cumulative"], CostModel::Cumulative),
                (&["exit"], CostModel::Exit),
            ],
        )
    }
}

impl std::str::FromStr for Prediction {
    type Err = Error;

    /// `argmax` or `sample`.
    fn from_str(s: &str) -> Result<Self> {
        parse_named(
            "prediction",
            s,
            &[
                (&["argmax"], Prediction::Argmax),
                (&["sample"], Prediction::Sample),
            ],
        )
    }
}

/// The reward of the stopping MDP: `R = -L(yhat, y) - alpha * Cost(k)` on
/// `Stop` at stage k, 0 on `Forward`.
///
/// The default is `alpha = 0.1`, [`Loss::ZeroOne`], [`CostModel::Cumulative`],
/// [`Prediction::Argmax`]: with `alpha = 0.1`, running a cascade whose
/// cumulative cost is about 1.3 full models is worth it only if it fixes at
/// least 13% of the cheap stage's errors, a real trade-off (with `alpha = 0`
/// forwarding to the last stage is always optimal). Experiments sweep alpha.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardSpec {
    /// Price of compute, in loss units per full-model cost (>= 0, finite).
    pub alpha: f64,
    /// The loss `L`.
    pub loss: Loss,
    /// How the cost of stopping at stage k is counted.
    pub cost: CostModel,
    /// How the prediction is made on `Stop`.
    pub prediction: Prediction,
}

impl Default for RewardSpec {
    fn default() -> Self {
        RewardSpec {
            alpha: 0.1,
            loss: Loss::ZeroOne,
            cost: CostModel::Cumulative,
            prediction: Prediction::Argmax,
        }
    }
}

impl RewardSpec {
    /// A spec with the given alpha and defaults for the rest.
    pub fn with_alpha(alpha: f64) -> Self {
        RewardSpec {
            alpha,
            ..Default::default()
        }
    }

    /// Refuses a negative, NaN or infinite alpha.
    pub fn validate(&self) -> Result<()> {
        if !self.alpha.is_finite() || self.alpha < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "reward alpha must be finite and >= 0, got {}",
                self.alpha
            )));
        }
        Ok(())
    }

    /// Validates the spec and the raw stage costs (`F_t`, e.g. MACs) and
    /// precomputes the normalised costs: see [`RewardModel::new`].
    pub fn compile(&self, stage_costs: &[f64]) -> Result<RewardModel> {
        RewardModel::new(*self, stage_costs)
    }
}

/// Checks raw stage costs: non-empty, each finite and > 0.
pub(crate) fn validate_stage_costs(stage_costs: &[f64]) -> std::result::Result<(), String> {
    if stage_costs.is_empty() {
        return Err("the cascade is empty (no stage costs)".into());
    }
    for (t, &c) in stage_costs.iter().enumerate() {
        if !c.is_finite() || c <= 0.0 {
            return Err(format!(
                "stage index {t} has cost {c}; stage costs must be finite and > 0"
            ));
        }
    }
    Ok(())
}

/// A [`RewardSpec`] compiled against a cascade's raw stage costs: the
/// normalised cost table and the stopping reward. The env, the vector env,
/// oracles and evaluations all compute rewards through this one type.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardModel {
    spec: RewardSpec,
    raw_stage_costs: Vec<f64>,
    norm: f64,
    /// `Cost(t+1)` (normalised) for 0-based stage t, under `spec.cost`.
    cost: Vec<f64>,
    /// The same in raw units.
    raw_cost: Vec<f64>,
}

impl RewardModel {
    /// Validates `spec` and `stage_costs` (non-empty, each finite and > 0)
    /// and precomputes `Cost(k)` for every stage.
    pub fn new(spec: RewardSpec, stage_costs: &[f64]) -> Result<Self> {
        spec.validate()?;
        validate_stage_costs(stage_costs).map_err(Error::InvalidArgument)?;
        let norm = stage_costs.iter().copied().fold(0.0, f64::max);
        let raw_cost = spec.cost.stopping_costs(stage_costs);
        let cost = raw_cost.iter().map(|c| c / norm).collect();
        Ok(RewardModel {
            spec,
            raw_stage_costs: stage_costs.to_vec(),
            norm,
            cost,
            raw_cost,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &RewardSpec {
        &self.spec
    }

    /// Number of stages K.
    pub fn num_stages(&self) -> usize {
        self.cost.len()
    }

    /// The raw stage costs `F_t` as given.
    pub fn raw_stage_costs(&self) -> &[f64] {
        &self.raw_stage_costs
    }

    /// The normaliser `F_max` (the largest stage's own cost): the one
    /// place it is computed; evaluations read it from here.
    pub fn normaliser(&self) -> f64 {
        self.norm
    }

    /// A raw cost (e.g. MACs) as a fraction of [`Self::normaliser`].
    #[inline]
    pub fn normalise(&self, raw: f64) -> f64 {
        raw / self.norm
    }

    /// Normalised `Cost(t+1)` of having run up to 0-based `stage`, under the
    /// spec's cost model. This is the observation's `cost_so_far` and the
    /// cost in the stopping reward.
    ///
    /// # Panics
    /// If `stage >= K`.
    #[inline]
    pub fn cost(&self, stage: usize) -> f64 {
        self.cost[stage]
    }

    /// `Cost(t+1)` in raw units (e.g. MACs).
    pub fn raw_cost(&self, stage: usize) -> f64 {
        self.raw_cost[stage]
    }

    /// The loss `L(prediction, label)` given the stopping stage's `probs`
    /// (`[classes]`; only read by cross-entropy).
    #[inline]
    pub fn loss(&self, probs: &[f32], prediction: u32, label: u32) -> f64 {
        match self.spec.loss {
            Loss::ZeroOne => {
                if prediction == label {
                    0.0
                } else {
                    1.0
                }
            }
            Loss::CrossEntropy => cross_entropy(probs, label),
        }
    }

    /// The reward `-L - alpha * Cost(stage+1)` of stopping at `stage`.
    #[inline]
    pub fn stop_reward(&self, stage: usize, probs: &[f32], prediction: u32, label: u32) -> f64 {
        -self.loss(probs, prediction, label) - self.spec.alpha * self.cost[stage]
    }

    /// The prediction from `probs` (`[classes]`) under the spec: argmax, or
    /// one draw from `rng`.
    #[inline]
    pub fn predict(&self, probs: &[f32], rng: &mut EnvRng) -> u32 {
        match self.spec.prediction {
            Prediction::Argmax => argmax(probs),
            Prediction::Sample => sample_class(probs, rng),
        }
    }

    /// The expected stopping reward at `stage` over the prediction (for
    /// sampled predictions, with `probs` renormalised to sum to 1; used by
    /// oracles).
    pub fn expected_stop_reward(&self, stage: usize, probs: &[f32], label: u32) -> f64 {
        let loss = match (self.spec.loss, self.spec.prediction) {
            (Loss::CrossEntropy, _) => cross_entropy(probs, label),
            (Loss::ZeroOne, Prediction::Argmax) => {
                if argmax(probs) == label {
                    0.0
                } else {
                    1.0
                }
            }
            (Loss::ZeroOne, Prediction::Sample) => {
                let total: f64 = probs.iter().map(|&p| p as f64).sum();
                1.0 - probs.get(label as usize).map_or(0.0, |&p| p as f64) / total
            }
        };
        -loss - self.spec.alpha * self.cost[stage]
    }
}

/// `-ln max(p_y, CROSS_ENTROPY_FLOOR)`.
#[inline]
pub(crate) fn cross_entropy(probs: &[f32], label: u32) -> f64 {
    let p = probs.get(label as usize).map_or(0.0, |&p| p as f64);
    -p.max(CROSS_ENTROPY_FLOOR).ln()
}

/// Index of the first maximum of `probs`.
#[inline]
pub fn argmax(probs: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_p = f32::NEG_INFINITY;
    for (j, &p) in probs.iter().enumerate() {
        if p > best_p {
            best = j;
            best_p = p;
        }
    }
    best as u32
}

/// One draw from the categorical `probs` with one uniform from `rng`
/// (inverse CDF). If rounding leaves the draw past the total, the last
/// class with positive probability is taken.
#[inline]
pub(crate) fn sample_class(probs: &[f32], rng: &mut EnvRng) -> u32 {
    let u = rng.next_f64();
    let mut acc = 0.0f64;
    let mut last_positive = None;
    for (j, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            acc += p as f64;
            last_positive = Some(j);
            if u < acc {
                return j as u32;
            }
        }
    }
    last_positive.map_or_else(|| argmax(probs), |j| j as u32)
}

#[cfg(test)]
mod tests {

    #[test]
    fn policy_costs_follow_the_cost_model() {
        let f = [10.0, 100.0, 1000.0];
        let p = [1.0, 2.0, 0.0];
        let cum = CostModel::Cumulative;
        assert_eq!(cum.with_policy(&f, &p).unwrap(), vec![11.0, 102.0, 1000.0]);
        let exit = CostModel::Exit;
        assert_eq!(exit.with_policy(&f, &p).unwrap(), vec![11.0, 103.0, 1003.0]);
        assert!(exit.with_policy(&f, &p[..2]).is_err());
        assert!(exit.with_policy(&f, &[1.0, -1.0, 0.0]).is_err());
        assert!(exit.with_policy(&f, &[1.0, f64::NAN, 0.0]).is_err());
        assert_eq!(cum.stopping_costs(&f), vec![10.0, 110.0, 1110.0]);
        assert_eq!(exit.stopping_costs(&f), f.to_vec());
    }

    #[test]
    fn reward_names_parse_with_aliases_and_refuse_unknown_ones() {
        assert_eq!("zero-one".parse::<Loss>().unwrap(), Loss::ZeroOne);
        assert_eq!(" Zero_One ".parse::<Loss>().unwrap(), Loss::ZeroOne);
        assert_eq!("0-1".parse::<Loss>().unwrap(), Loss::ZeroOne);
        assert_eq!("ce".parse::<Loss>().unwrap(), Loss::CrossEntropy);
        assert_eq!("exit".parse::<CostModel>().unwrap(), CostModel::Exit);
        assert_eq!("SAMPLE".parse::<Prediction>().unwrap(), Prediction::Sample);
        let e = "hinge".parse::<Loss>().unwrap_err().to_string();
        assert!(
            e.contains(r#"unknown loss "hinge": expected "zero-one" or "cross-entropy""#),
            "{e}"
        );
        let e = "flops".parse::<CostModel>().unwrap_err().to_string();
        assert!(e.contains(r#"expected "cumulative" or "exit""#), "{e}");
    }

    use super::*;

    #[test]
    fn default_is_documented() {
        let s = RewardSpec::default();
        assert_eq!(s.alpha, 0.1);
        assert_eq!(s.loss, Loss::ZeroOne);
        assert_eq!(s.cost, CostModel::Cumulative);
        assert_eq!(s.prediction, Prediction::Argmax);
    }

    #[test]
    fn validate_refuses_bad_alpha() {
        for a in [-0.1, f64::NAN, f64::INFINITY] {
            let e = RewardSpec::with_alpha(a).validate().unwrap_err();
            assert!(e.to_string().contains("alpha"), "{e}");
        }
        RewardSpec::with_alpha(0.0).validate().unwrap();
    }

    #[test]
    fn compile_refuses_bad_costs() {
        let s = RewardSpec::default();
        assert!(s.compile(&[]).unwrap_err().to_string().contains("empty"));
        for bad in [
            [1.0, 0.0],
            [1.0, -2.0],
            [1.0, f64::NAN],
            [f64::INFINITY, 1.0],
        ] {
            let e = s.compile(&bad).unwrap_err().to_string();
            assert!(e.contains("cost"), "{e}");
        }
    }

    #[test]
    fn costs_are_normalised_by_the_largest_stage() {
        let raw = [1.0, 4.0, 16.0];
        let cum = RewardSpec::default().compile(&raw).unwrap();
        assert_eq!(
            (0..3).map(|t| cum.cost(t)).collect::<Vec<_>>(),
            vec![0.0625, 0.3125, 1.3125]
        );
        assert_eq!(cum.raw_cost(2), 21.0);
        assert_eq!(cum.normaliser(), 16.0);
        assert_eq!(cum.normalise(cum.raw_cost(1)), cum.cost(1));
        let exit = RewardSpec {
            cost: CostModel::Exit,
            ..Default::default()
        }
        .compile(&raw)
        .unwrap();
        assert_eq!(
            (0..3).map(|t| exit.cost(t)).collect::<Vec<_>>(),
            vec![0.0625, 0.25, 1.0]
        );
    }

    #[test]
    fn stop_reward_values() {
        let m = RewardSpec::with_alpha(0.5).compile(&[1.0, 4.0]).unwrap();
        let probs = [0.2f32, 0.8];
        // Correct: -0 - 0.5 * (1+4)/4.
        assert_eq!(m.stop_reward(1, &probs, 1, 1), -0.625);
        // Wrong at stage 0: -1 - 0.5 * 0.25.
        assert_eq!(m.stop_reward(0, &probs, 1, 0), -1.125);
        let ce = RewardSpec {
            alpha: 0.0,
            loss: Loss::CrossEntropy,
            ..Default::default()
        }
        .compile(&[1.0])
        .unwrap();
        assert!((ce.stop_reward(0, &probs, 0, 1) - (0.8f32 as f64).ln()).abs() < 1e-12);
        // Underflowed probability: floored.
        assert!((ce.loss(&[1.0, 0.0], 0, 1) - 27.631021115928547).abs() < 1e-9);
    }

    #[test]
    fn sampled_predictions_follow_probs() {
        let mut rng = EnvRng::new(0);
        let probs = [0.1f32, 0.0, 0.6, 0.3];
        let mut counts = [0usize; 4];
        for _ in 0..20_000 {
            counts[sample_class(&probs, &mut rng) as usize] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((1_800..2_200).contains(&counts[0]), "{counts:?}");
        assert!((11_600..12_400).contains(&counts[2]), "{counts:?}");
        assert_eq!(argmax(&probs), 2);
        assert_eq!(argmax(&[0.5, 0.5]), 0);
    }

    #[test]
    fn expected_reward_under_sampling() {
        let m = RewardSpec {
            alpha: 0.0,
            prediction: Prediction::Sample,
            ..Default::default()
        }
        .compile(&[1.0])
        .unwrap();
        assert!((m.expected_stop_reward(0, &[0.25, 0.75], 1) + 0.25).abs() < 1e-12);
    }

    #[test]
    fn spec_serde_round_trip_and_defaults() {
        let s = RewardSpec {
            alpha: 0.3,
            loss: Loss::CrossEntropy,
            cost: CostModel::Exit,
            prediction: Prediction::Sample,
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(
            j,
            r#"{"alpha":0.3,"loss":"cross_entropy","cost":"exit","prediction":"sample"}"#
        );
        assert_eq!(serde_json::from_str::<RewardSpec>(&j).unwrap(), s);
        let partial: RewardSpec = serde_json::from_str(r#"{"alpha":0.2}"#).unwrap();
        assert_eq!(partial, RewardSpec::with_alpha(0.2));
        assert!(serde_json::from_str::<RewardSpec>(r#"{"alfa":0.2}"#).is_err());
    }

    #[test]
    fn mask() {
        assert_eq!(ActionMask::at_stage(0, 3).to_array(), [true, true]);
        assert_eq!(ActionMask::at_stage(2, 3).to_array(), [true, false]);
        assert!(!ActionMask::NONE.allows(Action::Stop));
        assert_eq!(Action::from_index(1), Some(Action::Forward));
        assert_eq!(Action::from_index(2), None);
    }
}
