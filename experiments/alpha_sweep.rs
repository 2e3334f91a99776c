//! `alpha_sweep`: one stopping agent (threshold, frozen or joint) across
//! alphas, or across cost budgets with `--budget`, on a pretrained cascade:
//! a single error-vs-cost curve, with the static stages and the oracle for
//! reference. Same run-folder conventions as `joint_vs_frozen` (resume,
//! shards, `cascade plot`, `cascade merge`).

use cascade_experiments::study::{args::closing_line, run_study, AlphaSweepArgs};
use clap::Parser;

fn main() {
    cascade_rl::alloc::keep_freed_memory();
    let args = AlphaSweepArgs::parse();
    if let Err(err) = run(&args) {
        let chain: Vec<String> = err.chain().map(|c| c.to_string()).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(1);
    }
}

fn run(args: &AlphaSweepArgs) -> anyhow::Result<()> {
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
