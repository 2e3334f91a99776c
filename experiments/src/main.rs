//! The `cascade` command-line tool. See `cascade --help`.

use clap::Parser;

fn main() {
    cascade_rl::alloc::keep_freed_memory();
    let cli = cascade_experiments::cli::Cli::parse();
    if let Err(err) = cli.run() {
        // One line, the whole cause chain, non-zero exit status.
        let chain: Vec<String> = err.chain().map(|c| c.to_string()).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(1);
    }
}
