//! cascade-experiments: the `cascade` command-line tool and the experiment
//! binaries of cascade-rl. The binaries are thin; the work is here so tests
//! can call it.

pub mod cli;
pub mod compare;
pub mod error;
pub mod figures;
pub mod log;
pub mod results;
pub mod study;
pub mod summary;

/// The body of every binary's `main`: keeps freed memory for reuse
/// ([`cascade_rl::alloc`]), runs `f` and, on failure, prints the whole cause
/// chain on one line to stderr and exits with status 1.
pub fn run_main(f: impl FnOnce() -> anyhow::Result<()>) {
    cascade_rl::alloc::keep_freed_memory();
    if let Err(err) = f() {
        let chain: Vec<String> = err.chain().map(|c| c.to_string()).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(1);
    }
}
