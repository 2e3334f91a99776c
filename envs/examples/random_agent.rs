//! Random legal actions in CascadeStopping-v0 over a trace file, or over the
//! built-in synthetic trace when no path is given (zero setup):
//! `cargo run -p cascade-env --example random_agent [-- TRACE.safetensors]`
use cascade_env::*;

/// Errors print as one `error: ...` line (their `Display`), exit status 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Error> {
    let backend = match std::env::args().nth(1) {
        Some(path) => ReplayBackend::load(path.as_ref())?,
        None => ReplayBackend::synthetic(&SyntheticTraceConfig::default())?,
    };
    println!("{ENV_ID} on {:?}", backend.meta());
    let env = OptimalStoppingEnv::new(backend, RewardSpec::default())?;
    let mut env = RecordEpisodeStatistics::new(env);
    let mut rng = EnvRng::new(0);
    for episode in 0..1000 {
        let (_, mut info) = env.reset((episode == 0).then_some(0), ResetOptions::default())?;
        while let Some(action) = ActionSpace.sample(&mut rng, info.action_mask) {
            info = env.step(action)?.info;
        }
    }
    let mean = |x: Option<f64>| x.unwrap_or(f64::NAN);
    println!(
        "last 100 episodes: return {:.4}, accuracy {:.3}, cost {:.3}",
        mean(env.mean_return()),
        mean(env.accuracy()),
        mean(env.mean_cost())
    );
    Ok(())
}
