//! Plays CascadeStopping-v0 over a trace file with a fixed action sequence
//! and prints each finished episode as one JSON line (sample, stop stage,
//! prediction, label, loss, cost, return). The Python package's tests
//! compare its env against these lines, so the reference is this crate's
//! own env, not a re-implementation.
//!
//! ```text
//! cargo run -p cascade-env --example replay_returns -- TRACE.safetensors \
//!     --actions 1,0,0,1,1,0 [--seed 0] [--alpha 0.1] [--loss zero-one] \
//!     [--cost cumulative] [--prediction argmax]
//! ```
//! The first episode starts with `reset(Some(seed))`, each later one with
//! `reset(None)`, as a Gymnasium loop does; actions are taken in order
//! (0 = Stop, 1 = Forward) and an episode cut short by the end of the list
//! is not printed. Loss, cost and prediction take the names of the Python
//! package (`zero-one`/`cross-entropy`, `cumulative`/`exit`,
//! `argmax`/`sample`). An error of the env (an illegal action) is printed
//! on stderr with exit status 1.

use cascade_env::{Action, OptimalStoppingEnv, ReplayBackend, ResetOptions, RewardSpec};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("replay_returns: {e}");
        std::process::exit(1);
    }
}

fn run() -> AnyResult<()> {
    let mut trace = None;
    let mut actions = Vec::new();
    let mut seed = 0u64;
    let mut spec = serde_json::json!({});
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--actions" => {
                for a in value("--actions")?.split(',').filter(|s| !s.is_empty()) {
                    let i: usize = a.trim().parse()?;
                    actions.push(Action::from_index(i).ok_or(format!("action {i} not 0 or 1"))?);
                }
            }
            "--seed" => seed = value("--seed")?.parse()?,
            "--alpha" => spec["alpha"] = value("--alpha")?.parse::<f64>()?.into(),
            "--loss" | "--cost" | "--prediction" => {
                let v = value(&arg)?.replace('-', "_");
                spec[&arg[2..]] = v.into();
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}").into()),
            s => trace = Some(s.to_string()),
        }
    }
    let trace = trace.ok_or("usage: replay_returns TRACE --actions 1,0,... [options]")?;
    let spec: RewardSpec = serde_json::from_value(spec)?;
    let backend = ReplayBackend::load(trace.as_ref())?;
    let mut env = OptimalStoppingEnv::new(backend, spec)?;
    let mut actions = actions.into_iter().peekable();
    let mut first = true;
    while actions.peek().is_some() {
        let (_, info) = env.reset(first.then_some(seed), ResetOptions::default())?;
        first = false;
        let mut ret = 0.0;
        for action in actions.by_ref() {
            let step = env.step(action)?;
            ret += step.reward;
            if step.terminated {
                let line = serde_json::json!({
                    "sample": info.sample,
                    "stop_stage": step.obs.stage,
                    "prediction": step.info.prediction,
                    "label": step.info.label,
                    "loss": step.info.loss,
                    "cost": step.info.cost,
                    "return": ret,
                });
                println!("{line}");
                break;
            }
        }
    }
    Ok(())
}
