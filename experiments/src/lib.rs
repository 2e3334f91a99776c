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
pub mod provenance;
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

/// The cause chain of `err` on one line, `outer: inner: ...`, with each
/// error's `Display` (never `Debug`). A cause whose text its parent already
/// ends with (an I/O error quoted by the error that wraps it) is said once,
/// and so is a path both name (`writing X` over `X: No space left`).
pub fn error_line(err: &anyhow::Error) -> String {
    chain_line(err.chain().map(|c| c.to_string()))
}

/// The line of [`error_line`] for any error and its sources.
pub fn std_error_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut texts = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        texts.push(e.to_string());
        cur = e.source();
    }
    chain_line(texts.into_iter())
}

fn chain_line(texts: impl Iterator<Item = String>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for text in texts {
        let Some(last) = parts.last() else {
            parts.push(text);
            continue;
        };
        if last.ends_with(&text) {
            continue;
        }
        // The longest head `H` of `text` (up to a ": ") that `last` ends
        // with, as a whole word: said once.
        let head = text
            .match_indices(": ")
            .map(|(i, _)| &text[..i])
            .filter(|h| {
                last.strip_suffix(h)
                    .is_some_and(|rest| rest.is_empty() || rest.ends_with([' ', ':', '\'']))
            })
            .last();
        match head {
            Some(h) => {
                let tail = text[h.len() + 2..].to_string();
                parts.push(tail);
            }
            None => parts.push(text),
        }
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

    #[test]
    fn a_path_named_by_two_errors_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let io_text = io.to_string();
        let err = anyhow::Error::from(error::Error::io("/out/agent.json", io))
            .context("writing /out/agent.json");
        assert_eq!(
            error_line(&err),
            format!("writing /out/agent.json: {io_text}")
        );
        // Only a whole path: `/out/b` does not end `/x/out/b`'s head.
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = anyhow::Error::from(error::Error::io("x/out/b", io)).context("reading /out/b");
        assert!(error_line(&err).starts_with("reading /out/b: x/out/b: "));
    }

    #[test]
    fn nested_configuration_errors_say_invalid_configuration_once() {
        let mut p = cascade_rl::presets::Preset::by_name("synthetic-3").unwrap();
        p.stages[1].train.epochs = 0;
        let err = anyhow::Error::from(p.validate().unwrap_err());
        let line = error_line(&err);
        assert_eq!(line.matches("invalid configuration").count(), 1, "{line}");
        assert!(line.contains("stage 2"), "{line}");
    }
}
