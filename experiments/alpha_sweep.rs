//! `alpha_sweep`: one stopping agent (threshold, frozen or joint) across
//! alphas, or across cost budgets with `--budget`, on a pretrained cascade:
//! a single error-vs-cost curve, with the static stages and the oracle for
//! reference. Same run-folder conventions as `joint_vs_frozen` (resume,
//! shards, `cascade plot`, `cascade merge`).

use cascade_experiments::study::{args::run_and_report, AlphaSweepArgs};
use clap::Parser;

fn main() {
    cascade_experiments::run_main(|| {
        let (cfg, opts) = AlphaSweepArgs::parse().resolve()?;
        Ok(run_and_report(&cfg, &opts)?)
    });
}
