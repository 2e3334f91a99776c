//! Minimal levelled logging for the binaries: `-v` shows info, `-vv` debug.
//! `CASCADE_LOG=info|debug` sets the same from the environment.

use std::sync::atomic::{AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(0);

/// Sets the verbosity from the count of `-v` flags (or `CASCADE_LOG`).
pub fn set_verbosity(count: u8) {
    let env = match std::env::var("CASCADE_LOG").as_deref() {
        Ok("debug") => 2,
        Ok("info") => 1,
        _ => 0,
    };
    LEVEL.store(count.max(env), Ordering::Relaxed);
}

/// The current verbosity: 0 quiet, 1 info, 2 debug.
pub fn verbosity() -> u8 {
    LEVEL.load(Ordering::Relaxed)
}

/// Prints to stderr when `-v` was given.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        if $crate::log::verbosity() >= 1 { eprintln!("[info] {}", format!($($arg)*)); }
    };
}

/// Prints to stderr when `-vv` was given.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::verbosity() >= 2 { eprintln!("[debug] {}", format!($($arg)*)); }
    };
}
