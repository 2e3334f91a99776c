//! `joint_vs_frozen`: the project's main experiment. Pretrains a cascade
//! (or reuses the one in the run folder), then, for every alpha and seed,
//! trains the REINFORCE stopping policy on the frozen classifiers and
//! jointly with them, calibrates the threshold baseline on validation,
//! evaluates everything (plus the static stages and the oracle) on the test
//! split, and writes results.csv, summary.md and the figures.
//!
//! `joint_vs_frozen` alone runs the default study (about 3 minutes on two
//! cores); `--preset quick|fmnist|cifar10` picks another. See
//! experiments/README.md and `joint_vs_frozen --help`.

use cascade_experiments::study::{args::run_and_report, JointVsFrozenArgs};
use clap::Parser;

fn main() {
    cascade_experiments::run_main(|| {
        let (cfg, opts) = JointVsFrozenArgs::parse().resolve()?;
        Ok(run_and_report(&cfg, &opts)?)
    });
}
