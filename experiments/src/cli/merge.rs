//! `cascade merge RUN_DIR`: joins the shard results of a study
//! (`results.shard-i-of-n.csv`) into `results.csv`, then redraws the
//! figures and rewrites `summary.md`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// `cascade merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The run folder (holding config.json and the shard results).
    pub run_dir: PathBuf,
    /// Only join the results; do not redraw figures or the summary.
    #[arg(long)]
    pub no_report: bool,
}

/// Runs `cascade merge`.
pub fn run(args: &MergeArgs) -> anyhow::Result<()> {
    let dir = &args.run_dir;
    let m = crate::results::merge_run(dir)
        .with_context(|| format!("merging the results of {}", dir.display()))?;
    for key in &m.conflicts {
        eprintln!("warning: {key} appears in two files with different numbers; the first was kept");
    }
    println!(
        "merged {} shard file(s) into {}: {} rows ({} new)",
        m.shard_files.len(),
        dir.join(crate::results::RESULTS_FILE).display(),
        m.rows,
        m.added
    );
    if !args.no_report {
        super::plot::run(&super::plot::PlotArgs {
            run_dir: dir.clone(),
            gallery: None,
        })?;
    }
    Ok(())
}
