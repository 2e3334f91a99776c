//! The shared env checker, run against every backend in the tests.
//!
//! [`check_env`] drives a freshly built [`Env`] through seeded episodes and
//! verifies the contract: typed errors for misuse (step before reset, after
//! termination, `Forward` at the last stage: refused, never clamped, and the
//! state unchanged), determinism under a seed, observations inside the
//! observation space, the action mask, the stage/cost progression, and the
//! reward accounting `return == -L(yhat, y) - alpha * Cost(k)` recomputed
//! here from the raw stage costs, independently of the env's own code.
//! [`check_vec_env`] verifies that a [`VecEnv`] behaves exactly like n single
//! envs on the same seeds.

use crate::backend::StageBackend;
use crate::env::{Env, Info, Observation, OptimalStoppingEnv, ResetOptions, Step};
use crate::error::{Error, Result};
use crate::reward::{
    argmax, Action, ActionMask, CostModel, Loss, Prediction, RewardSpec, CROSS_ENTROPY_FLOOR,
};
use crate::rng::EnvRng;
use crate::vector::{AutoReset, VecEnv};

/// Settings of [`check_env`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckConfig {
    /// Seed of the first episode (episode e uses `seed + e`).
    pub seed: u64,
    /// Number of episodes (each is played twice to check determinism).
    pub episodes: usize,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            seed: 0,
            episodes: 30,
        }
    }
}

/// What [`check_env`] exercised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Episodes played (each twice).
    pub episodes: usize,
    /// Steps taken in the first plays.
    pub steps: usize,
    /// Episodes stopped at each stage, `[K]`.
    pub stop_counts: Vec<usize>,
}

fn fail(msg: impl Into<String>) -> Error {
    Error::CheckFailed(msg.into())
}

/// `Cost(k)` recomputed from the raw costs (normalised by the largest).
fn expected_cost(raw: &[f64], model: CostModel, stage: usize) -> f64 {
    let max = raw.iter().copied().fold(0.0, f64::max);
    match model {
        CostModel::Cumulative => raw[..=stage].iter().sum::<f64>() / max,
        CostModel::Exit => raw[stage] / max,
    }
}

/// `L(yhat, y)` recomputed.
fn expected_loss(loss: Loss, probs: &[f32], prediction: u32, label: u32) -> f64 {
    match loss {
        Loss::ZeroOne => (prediction != label) as u8 as f64,
        Loss::CrossEntropy => -(probs[label as usize] as f64).max(CROSS_ENTROPY_FLOOR).ln(),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

type Trajectory = (Observation, Info, Vec<Step>);

/// Checks `env`, which must be freshly built (never reset). Returns what
/// was exercised, or [`Error::CheckFailed`] describing the first violation
/// (or the env's own error, if it failed where it must not).
pub fn check_env<E: Env>(env: &mut E, cfg: &CheckConfig) -> Result<CheckReport> {
    match env.step(Action::Stop) {
        Err(Error::NotReset { .. }) => {}
        Err(e) => {
            return Err(fail(format!(
                "step before reset gave {e:?}, expected Error::NotReset"
            )))
        }
        Ok(_) => {
            return Err(fail(
                "step before reset succeeded (pass a freshly built env)",
            ))
        }
    }
    let model = env.reward_model().clone();
    let spec: RewardSpec = *model.spec();
    let raw = model.raw_stage_costs().to_vec();
    let space = env.observation_space().clone();
    let k = space.num_stages();
    if raw.len() != k {
        return Err(fail(format!("{} stage costs for {k} stages", raw.len())));
    }
    let mut report = CheckReport {
        episodes: cfg.episodes,
        steps: 0,
        stop_counts: vec![0; k],
    };
    for e in 0..cfg.episodes {
        let seed = cfg.seed.wrapping_add(e as u64);
        // Every third episode forwards to the last stage to test the mask.
        let to_end = e % 3 == 0;
        let first = play(env, seed, to_end, &spec, &raw, &space)?;
        let again = play(env, seed, to_end, &spec, &raw, &space)?;
        if first != again {
            return Err(fail(format!(
                "not deterministic: two episodes with seed {seed} and the same actions differ"
            )));
        }
        report.steps += first.2.len();
        report.stop_counts[first.2.last().map_or(0, |s| s.obs.stage)] += 1;
        if let Err(err) = env.step(Action::Stop) {
            if !matches!(err, Error::EpisodeOver { .. }) {
                return Err(fail(format!(
                    "step after termination gave {err:?}, expected Error::EpisodeOver"
                )));
            }
        } else {
            return Err(fail("step after termination succeeded"));
        }
    }
    // An explicit sample is honoured.
    let n_probe = 3;
    for s in 0..n_probe {
        let (_, info) = env.reset(Some(cfg.seed), ResetOptions::sample(s))?;
        if info.sample != s {
            return Err(fail(format!(
                "reset with sample {s} played sample {}",
                info.sample
            )));
        }
    }
    Ok(report)
}

/// One episode with seed `seed`: random legal actions from a checker
/// stream (or always `Forward` to the last stage when `to_end`), checking
/// every step.
fn play<E: Env>(
    env: &mut E,
    seed: u64,
    to_end: bool,
    spec: &RewardSpec,
    raw: &[f64],
    space: &crate::spaces::ObservationSpace,
) -> Result<Trajectory> {
    let k = raw.len();
    let mut policy = EnvRng::new(seed ^ 0x5EED_C4EC);
    let (obs0, info0) = env.reset(Some(seed), ResetOptions::default())?;
    let check_obs = |o: &Observation, what: &str| -> Result<()> {
        if let Some(v) = space.violation(o) {
            return Err(fail(format!("{what}: observation outside the space: {v}")));
        }
        let want = expected_cost(raw, spec.cost, o.stage) as f32;
        if (o.cost_so_far - want).abs() > 1e-6 * want.max(1.0) {
            return Err(fail(format!(
                "{what}: cost_so_far {} at stage index {}, expected {want}",
                o.cost_so_far, o.stage
            )));
        }
        Ok(())
    };
    check_obs(&obs0, "reset")?;
    if obs0.stage != 0 {
        return Err(fail(format!(
            "reset observation at stage {}, expected 0",
            obs0.stage
        )));
    }
    if info0.action_mask != ActionMask::at_stage(0, k) {
        return Err(fail(format!("reset action mask {:?}", info0.action_mask)));
    }
    let mut obs = obs0.clone();
    let mut steps = Vec::new();
    let mut ret = 0.0;
    loop {
        if steps.len() >= k {
            return Err(fail(format!("episode longer than K = {k} steps")));
        }
        let last = obs.stage + 1 == k;
        if last {
            match env.step(Action::Forward) {
                Err(Error::IllegalAction { .. }) => {}
                Err(e) => {
                    return Err(fail(format!(
                        "Forward at the last stage gave {e:?}, expected Error::IllegalAction"
                    )))
                }
                Ok(_) => {
                    return Err(fail(
                        "Forward at the last stage was accepted (it must be an error, not a clamp)",
                    ))
                }
            }
        }
        let forward = !last && (to_end || policy.next_u32() & 1 == 1);
        let action = if forward {
            Action::Forward
        } else {
            Action::Stop
        };
        let step = env.step(action)?;
        ret += step.reward;
        if step.truncated {
            return Err(fail("truncated is set; this env never truncates"));
        }
        check_obs(&step.obs, "step")?;
        if forward {
            if step.terminated || step.reward != 0.0 {
                return Err(fail(format!(
                    "Forward gave reward {} terminated {}",
                    step.reward, step.terminated
                )));
            }
            if step.obs.stage != obs.stage + 1 {
                return Err(fail(format!(
                    "Forward from stage index {} led to stage index {}",
                    obs.stage, step.obs.stage
                )));
            }
            if step.info.action_mask != ActionMask::at_stage(step.obs.stage, k) {
                return Err(fail(format!(
                    "action mask {:?} at stage index {}",
                    step.info.action_mask, step.obs.stage
                )));
            }
            obs = step.obs.clone();
            steps.push(step);
            continue;
        }
        if !step.terminated {
            return Err(fail("Stop did not terminate the episode"));
        }
        if step.obs != obs {
            return Err(fail(
                "the terminal observation differs from the one Stop was taken in",
            ));
        }
        if step.info.action_mask != ActionMask::NONE {
            return Err(fail(
                "the action mask of a terminated episode allows actions",
            ));
        }
        let (Some(pred), Some(label)) = (step.info.prediction, step.info.label) else {
            return Err(fail(
                "a terminated episode's info lacks the prediction or label",
            ));
        };
        let c = space.num_classes as u32;
        if pred >= c || label >= c {
            return Err(fail(format!(
                "prediction {pred} or label {label} not below {c} classes"
            )));
        }
        match spec.prediction {
            Prediction::Argmax if pred != argmax(&obs.probs) => {
                return Err(fail(format!(
                    "prediction {pred} is not the argmax of the probabilities"
                )))
            }
            Prediction::Sample if obs.probs[pred as usize] <= 0.0 => {
                return Err(fail(format!("sampled prediction {pred} has probability 0")))
            }
            _ => {}
        }
        let cost = expected_cost(raw, spec.cost, obs.stage);
        let want = -expected_loss(spec.loss, &obs.probs, pred, label) - spec.alpha * cost;
        if !close(ret, want) {
            return Err(fail(format!(
                "return {ret} != -L - alpha*Cost(k) = {want} (stop at stage index {}, prediction {pred}, label {label})",
                obs.stage
            )));
        }
        if !close(step.info.cost, cost) {
            return Err(fail(format!(
                "info.cost {} != Cost(k) = {cost}",
                step.info.cost
            )));
        }
        steps.push(step);
        return Ok((obs0, info0, steps));
    }
}

/// Settings of [`check_vec_env`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VecCheckConfig {
    /// Number of sub-envs.
    pub num_envs: usize,
    /// Autoreset mode under test.
    pub autoreset: AutoReset,
    /// Number of vector steps.
    pub steps: usize,
    /// Seed (sub-env i uses `seed + i`).
    pub seed: u64,
    /// Largest allowed absolute difference of features and probabilities
    /// (0 for exact; a neural backend batching differently may need ~1e-5).
    pub tolerance: f32,
}

impl Default for VecCheckConfig {
    fn default() -> Self {
        VecCheckConfig {
            num_envs: 8,
            autoreset: AutoReset::NextStep,
            steps: 40,
            seed: 0,
            tolerance: 0.0,
        }
    }
}

fn obs_close(a: &Observation, b: &Observation, tol: f32) -> bool {
    let near = |x: &[f32], y: &[f32]| {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| (p - q).abs() <= tol || p == q)
    };
    a.stage == b.stage
        && a.cost_so_far == b.cost_so_far
        && near(&a.features, &b.features)
        && near(&a.probs, &b.probs)
}

/// Runs a [`VecEnv`] over `backend` with random legal actions, then replays
/// each sub-env's actions in a single [`OptimalStoppingEnv`] over the same
/// backend (seeded `seed + i`, reset with `None` when the sub-env
/// restarts) and checks observations, rewards, terminations and outcomes
/// agree.
pub fn check_vec_env<B: StageBackend>(
    backend: &mut B,
    spec: RewardSpec,
    cfg: &VecCheckConfig,
) -> Result<()> {
    let n = cfg.num_envs;
    // Record the vector run: per step, the done mask before it, the
    // actions, and per sub-env the outputs after it.
    struct Rec {
        done_before: Vec<bool>,
        actions: Vec<Action>,
        obs: Vec<Observation>,
        rewards: Vec<f64>,
        terminated: Vec<bool>,
        outcome: Vec<(u32, u32, u32)>,
    }
    let mut recs = Vec::with_capacity(cfg.steps);
    let reset_obs: Vec<Observation>;
    {
        let mut venv = VecEnv::new(&mut *backend, spec, n, cfg.autoreset)?;
        let k = venv.num_stages();
        let mut policy = EnvRng::new(cfg.seed ^ 0x7EC_C4EC);
        venv.reset(Some(cfg.seed))?;
        reset_obs = (0..n).map(|i| venv.obs().to_observation(i)).collect();
        for _ in 0..cfg.steps {
            let done_before = venv.info().done().to_vec();
            let actions: Vec<Action> = (0..n)
                .map(|i| {
                    let t = venv.obs().stage()[i] as usize;
                    if t + 1 < k && policy.next_u32() & 1 == 1 {
                        Action::Forward
                    } else {
                        Action::Stop
                    }
                })
                .collect();
            let step = venv.step(&actions)?;
            recs.push(Rec {
                done_before,
                actions,
                obs: (0..n).map(|i| step.obs.to_observation(i)).collect(),
                rewards: step.rewards.to_vec(),
                terminated: step.terminated.to_vec(),
                outcome: (0..n)
                    .map(|i| {
                        (
                            step.info.stop_stage()[i],
                            step.info.prediction()[i],
                            step.info.label()[i],
                        )
                    })
                    .collect(),
            });
        }
    }
    let tol = cfg.tolerance;
    for (i, first) in reset_obs.iter().enumerate() {
        let mut env = OptimalStoppingEnv::new(&mut *backend, spec)?;
        let (o, _) = env.reset(
            Some(cfg.seed.wrapping_add(i as u64)),
            ResetOptions::default(),
        )?;
        if !obs_close(&o, first, tol) {
            return Err(fail(format!(
                "sub-env {i}: reset observation differs from a single env's"
            )));
        }
        for (t, r) in recs.iter().enumerate() {
            let here = |what: &str| fail(format!("sub-env {i}, step {t}: {what}"));
            let (obs, reward, terminated) = if r.done_before[i] {
                match cfg.autoreset {
                    AutoReset::NextStep => {
                        (env.reset(None, ResetOptions::default())?.0, 0.0, false)
                    }
                    _ => continue,
                }
            } else {
                let s = env.step(r.actions[i])?;
                if s.terminated {
                    let got = r.outcome[i];
                    let want = (
                        s.obs.stage as u32,
                        s.info.prediction.unwrap_or(u32::MAX),
                        s.info.label.unwrap_or(u32::MAX),
                    );
                    if got != want {
                        return Err(here(&format!(
                            "outcome (stop stage, prediction, label) {got:?}, single env {want:?}"
                        )));
                    }
                }
                if s.terminated && cfg.autoreset == AutoReset::SameStep {
                    (env.reset(None, ResetOptions::default())?.0, s.reward, true)
                } else {
                    (s.obs, s.reward, s.terminated)
                }
            };
            if r.terminated[i] != terminated {
                return Err(here(&format!(
                    "terminated {} vs single env {terminated}",
                    r.terminated[i]
                )));
            }
            if !close(r.rewards[i], reward) {
                return Err(here(&format!(
                    "reward {} vs single env {reward}",
                    r.rewards[i]
                )));
            }
            if !obs_close(&r.obs[i], &obs, tol) {
                return Err(here("observation differs from the single env's"));
            }
        }
    }
    Ok(())
}
