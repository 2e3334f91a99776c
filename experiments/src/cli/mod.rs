//! The `cascade` command line: one module per subcommand, each exposing an
//! `Args` struct (clap) and a `run` function.

use clap::{Parser, Subcommand};

pub mod data;

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
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(&self) -> anyhow::Result<()> {
        crate::log::set_verbosity(self.verbose);
        match &self.command {
            Command::Data(cmd) => data::run(cmd),
        }
    }
}
