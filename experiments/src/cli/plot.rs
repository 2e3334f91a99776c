//! `cascade plot RUN_DIR`: redraws every figure of a study's run folder
//! and its `summary.md` from the files in it (`results.csv`, `config.json`,
//! the agents' `train_log.csv`); nothing is trained or evaluated.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// `cascade plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The run folder (holding config.json and results.csv).
    pub run_dir: PathBuf,
}

/// Runs `cascade plot`.
pub fn run(args: &PlotArgs) -> anyhow::Result<()> {
    let dir = &args.run_dir;
    let summary = crate::summary::write_summary(dir)
        .with_context(|| format!("writing the summary of {}", dir.display()))?;
    let figures = crate::figures::draw_all(dir)
        .with_context(|| format!("drawing the figures of {}", dir.display()))?;
    println!("wrote {}", summary.display());
    for f in figures {
        println!(
            "wrote {} and {}",
            f.display(),
            f.with_extension("svg").display()
        );
    }
    Ok(())
}
