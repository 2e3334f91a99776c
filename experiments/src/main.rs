//! The `cascade` command-line tool. See `cascade --help`.

use clap::Parser;

fn main() {
    cascade_experiments::run_main(|| cascade_experiments::cli::Cli::parse().run());
}
