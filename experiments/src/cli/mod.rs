//! The `cascade` command line: one module per subcommand, each exposing an
//! `Args` struct (clap) and a `run` function.

use clap::{Parser, Subcommand};

pub mod aggregate;
pub mod bench;
pub mod compare_traces;
pub mod data;
pub mod eval;
pub mod export_trace;
pub mod flops;
pub mod merge;
pub mod paired;
pub mod plot;
pub mod pretrain;
pub mod traces;
pub mod train;

/// cascade-rl: cascades of deep classifiers as an optimal-stopping MDP.
#[derive(Debug, Parser)]
#[command(name = "cascade", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug); errors are always printed.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and preview data sets.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Analytic MACs and parameters of a model (per layer) or of a cascade preset.
    Flops(flops::FlopsArgs),
    /// Train every stage of a cascade preset; write checkpoints and the static table.
    Pretrain(pretrain::PretrainArgs),
    /// Time one training step and one inference batch of each stage of a preset
    /// (--epoch: one real training epoch of each).
    Bench(bench::BenchArgs),
    /// Record every stage's outputs on a split into a replay trace file.
    ExportTrace(export_trace::ExportTraceArgs),
    /// Train a stopping agent (reinforce, threshold, static-K, oracle) on a pretrained cascade
    /// or on recorded traces (--train-trace, --val-trace).
    Train(train::TrainArgs),
    /// Evaluate a saved agent on a split; write its report as JSON and CSV.
    Eval(eval::EvalArgs),
    /// Fit and compare every agent that needs only recorded outputs on a
    /// trace triple (train, val, test); write results, summary and figures.
    CompareTraces(compare_traces::CompareTracesArgs),
    /// Redraw a study's figures and summary from its run folder.
    Plot(plot::PlotArgs),
    /// Join a sharded study's results into results.csv and redraw its report.
    Merge(merge::MergeArgs),
    /// One table over runs of a study that differ only in the cascade seed.
    Aggregate(aggregate::AggregateArgs),
    /// The error difference of two evaluations of the same images, with a
    /// paired-bootstrap interval.
    Paired(paired::PairedArgs),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(&self) -> anyhow::Result<()> {
        crate::log::set_verbosity(self.verbose);
        match &self.command {
            Command::Data(cmd) => data::run(cmd),
            Command::Flops(args) => flops::run(args),
            Command::Pretrain(args) => pretrain::run(args),
            Command::Bench(args) => bench::run(args),
            Command::ExportTrace(args) => export_trace::run(args),
            Command::Train(args) => train::run(args),
            Command::Eval(args) => eval::run(args),
            Command::CompareTraces(args) => compare_traces::run(args),
            Command::Plot(args) => plot::run(args),
            Command::Merge(args) => merge::run(args),
            Command::Aggregate(args) => aggregate::run(args),
            Command::Paired(args) => paired::run(args),
        }
    }
}
