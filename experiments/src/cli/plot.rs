//! `cascade plot RUN_DIR`: redraws every figure of a study's run folder
//! and its `summary.md` from the files in it (`results.csv`, `config.json`,
//! the agents' `train_log.csv`); nothing is trained or evaluated. It first
//! removes the temporary files that killed processes left in the folder,
//! unless a study, a shard or a merge is writing to it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// `cascade plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The run folder (holding config.json and results.csv).
    pub run_dir: PathBuf,
    /// The exit gallery's agent and point, `AGENT` or `AGENT@X` (X: the
    /// budget, or the alpha, as in results.csv; e.g. `threshold@0.3`).
    /// Default: the first of ann, backward-induction, threshold, ... at
    /// the study's ablation point (else its middle point).
    #[arg(long, value_name = "AGENT[@X]")]
    pub gallery: Option<String>,
}

/// Runs `cascade plot`.
pub fn run(args: &PlotArgs) -> anyhow::Result<()> {
    let dir = &args.run_dir;
    if !dir.join(crate::study::CONFIG_FILE).is_file() {
        anyhow::bail!(
            "{}: not a run folder (no {})",
            dir.display(),
            crate::study::CONFIG_FILE
        );
    }
    // What killed plots (or runs) left half-written, when no study, shard
    // or merge is writing to the folder.
    crate::lock::clear_leftovers_if_idle(dir)?;
    let summary = crate::summary::write_summary(dir)
        .with_context(|| format!("writing the summary of {}", dir.display()))?;
    let figures = crate::figures::draw_all_with(dir, args.gallery.as_deref())
        .with_context(|| format!("drawing the figures of {}", dir.display()))?;
    println!("wrote {}", summary.display());
    let (packed, n) = crate::outcomes::pack(dir)
        .with_context(|| format!("packing the per-image outcomes of {}", dir.display()))?;
    println!("wrote {} ({n} evaluations)", packed.display());
    let (logs, n) = crate::outcomes::pack_logs(dir)
        .with_context(|| format!("packing the training logs of {}", dir.display()))?;
    println!("wrote {} ({n} training logs)", logs.display());
    for f in figures {
        println!(
            "wrote {} and {}",
            f.display(),
            f.with_extension("svg").display()
        );
    }
    Ok(())
}
