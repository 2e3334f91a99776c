//! `cascade paired A B`: the difference in error between two evaluations
//! of the same split (`eval_SPLIT.json` of `cascade eval`, a study's agent
//! folders, or a run's packed `outcomes.jsonl.gz#NAME`), with a 95%
//! paired-bootstrap interval over the images.

use cascade_agents::AgentFolder;
use std::path::{Path, PathBuf};

use anyhow::bail;
use cascade_agents::{EvalReport, AGENT_FILE};
use clap::Args;

/// `cascade paired`.
#[derive(Debug, Args)]
pub struct PairedArgs {
    /// The first evaluation: an eval_SPLIT.json, an agent folder holding
    /// eval_test.json, or `RUN/outcomes.jsonl.gz#NAME` (an evaluation of a
    /// run's packed outcomes: an agent folder such as
    /// `fashion-mnist__ann__budget0.18`, or `static-K`).
    pub a: PathBuf,
    /// The second evaluation, on the same split.
    pub b: PathBuf,
    /// Bootstrap resamples (at least 100).
    #[arg(long, default_value_t = 2000)]
    pub resamples: usize,
    /// Seed of the resampling.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

fn load(path: &Path) -> anyhow::Result<(PathBuf, EvalReport)> {
    // FILE#NAME: evaluation NAME of a packed outcomes file.
    if let Some((file, name)) = path
        .to_str()
        .and_then(|s| s.rsplit_once('#'))
        .filter(|(f, _)| f.ends_with(".jsonl.gz"))
    {
        let file = PathBuf::from(file);
        let r = crate::outcomes::read(&file, name)?;
        return Ok((file.join(name), r));
    }
    let file = if path.is_dir() {
        AgentFolder::new(path).eval_json("test")
    } else {
        path.to_path_buf()
    };
    let r = EvalReport::read_json(&file)?;
    if r.sample_correct.len() != r.n || r.n == 0 {
        bail!(
            "{}: holds no per-image results (written by an older build); evaluate again",
            file.display()
        );
    }
    // An evaluation of an agent folder must still describe the agent in it.
    let agent_dir = file.parent().filter(|d| d.join(AGENT_FILE).is_file());
    if let (Some(ev), Some(agent_dir)) = (&r.evaluated, agent_dir) {
        let now = crate::provenance::agent_hash(agent_dir)?;
        if now != ev.agent_hash {
            bail!(
                "{}: evaluated an agent with content hash {}, but the agent in {} now has hash {now} (trained again since); evaluate it again",
                file.display(),
                ev.agent_hash,
                agent_dir.display()
            );
        }
    }
    Ok((file, r))
}

/// Runs `cascade paired`.
pub fn run(args: &PairedArgs) -> anyhow::Result<()> {
    let (fa, a) = load(&args.a)?;
    let (fb, b) = load(&args.b)?;
    if a.split != b.split || a.n != b.n {
        bail!(
            "{} ({} images of split {}) and {} ({} images of split {}) are not the same images",
            fa.display(),
            a.n,
            a.split,
            fb.display(),
            b.n,
            b.split
        );
    }
    let wrong =
        |r: &EvalReport| -> Vec<f64> { r.sample_correct.iter().map(|&c| 1.0 - c as f64).collect() };
    let (m, lo, hi) =
        crate::compare::paired_bootstrap(&wrong(&a), &wrong(&b), args.resamples, args.seed)?;
    println!(
        "A {}: error {:.2}% at {:.2}% FLOPs\nB {}: error {:.2}% at {:.2}% FLOPs\n\
         A - B: {m:+.2} points, 95% paired-bootstrap interval [{lo:+.2}, {hi:+.2}] \
         ({} images of split {}, {} resamples)",
        a.agent,
        100.0 * a.error,
        a.cost_pct_mean,
        b.agent,
        100.0 * b.error,
        b.cost_pct_mean,
        a.n,
        a.split,
        args.resamples
    );
    Ok(())
}
