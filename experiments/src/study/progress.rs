//! Progress output of a study.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress output: a bar over work units on a terminal, plain lines
/// otherwise, nothing when quiet.
pub(super) struct Reporter {
    pub(super) bar: ProgressBar,
    on: bool,
}

impl Reporter {
    pub(super) fn new(on: bool, len: usize) -> Self {
        let bar = if on && std::io::stderr().is_terminal() {
            let b = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "study [{elapsed_precise}] {bar:30} {pos}/{len} units {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        } else {
            ProgressBar::hidden()
        };
        Reporter { bar, on }
    }

    pub(super) fn say(&self, line: impl AsRef<str>) {
        if !self.on {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line.as_ref());
        }
    }

    /// Runs `f` with the bar cleared, so that the bars of pretraining and
    /// agent training draw alone.
    pub(super) fn quietly<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }
}
