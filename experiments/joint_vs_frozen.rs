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

use cascade_experiments::study::{args::closing_line, run_study, JointVsFrozenArgs};
use clap::Parser;

fn main() {
    cascade_rl::alloc::keep_freed_memory();
    let args = JointVsFrozenArgs::parse();
    if let Err(err) = run(&args) {
        let chain: Vec<String> = err.chain().map(|c| c.to_string()).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(1);
    }
}

fn run(args: &JointVsFrozenArgs) -> anyhow::Result<()> {
    let (cfg, opts) = args.resolve()?;
    let outcome = run_study(&cfg, &opts)?;
    if opts.pretrain_only {
        println!(
            "{}: cascade ready and its outputs recorded; now run the shards (--shard i/n), then `cascade merge {}`",
            outcome.run_dir.display(),
            outcome.run_dir.display()
        );
    } else {
        println!("{}", closing_line(&outcome));
    }
    Ok(())
}
