//! cascade-experiments: the `cascade` command-line tool and the experiment
//! binaries of cascade-rl. The binaries are thin; the work is here so tests
//! can call it.

pub mod cli;
pub mod error;
pub mod figures;
pub mod log;
pub mod results;
pub mod study;
pub mod summary;
