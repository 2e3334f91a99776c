//! cascade-experiments: the `cascade` command-line tool and the experiment
//! binaries of cascade-rl. The binaries are thin; the work is here so tests
//! can call it.

pub mod cli;
pub mod compare;
pub mod error;
pub mod figures;
pub mod gallery;
pub mod lock;
pub mod log;
pub mod outcomes;
pub mod results;
pub mod study;
pub mod summary;

/// The body of every binary's `main`: keeps freed memory for reuse
/// ([`cascade_rl::alloc`]), leaves rayon's pool the only one computing
/// ([`cascade_rl::threads`]), runs `f` and, on failure, prints the whole cause
/// chain on one line to stderr and exits with status 1.
pub fn run_main(f: impl FnOnce() -> anyhow::Result<()>) {
    cascade_rl::alloc::keep_freed_memory();
    cascade_rl::threads::single_candle_thread();
    if let Err(err) = f() {
        eprintln!("error: {}", error_line(&err));
        std::process::exit(1);
    }
}

/// The cause chain of `err` on one line, `outer: inner: ...`. A cause whose
/// text its parent already ends with (an I/O error quoted by the error that
/// wraps it) is said once.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|p| p.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_os_error_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let io_text = io.to_string();
        let err = anyhow::Error::from(error::Error::io("/no/such/config.json", io))
            .context("writing the summary of /no/such");
        let line = error_line(&err);
        assert_eq!(
            line,
            format!("writing the summary of /no/such: /no/such/config.json: {io_text}")
        );
        assert_eq!(line.matches(&io_text).count(), 1, "{line}");
    }
}
