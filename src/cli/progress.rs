//! Progress of the long commands (`check`, `bench`) on stderr: an indicatif bar when stderr is a
//! terminal, nothing at all otherwise, so pipes, files and tests see no trace of it.

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar (when the total is known) or a counter of items done, with the failures so far.
pub(crate) struct Progress {
    bar: ProgressBar,
    failed: Cell<u64>,
}

impl Progress {
    /// Progress over `len` items (`None`: a count without a total) called `unit`, drawn on
    /// stderr when it is a terminal.
    pub(crate) fn new(len: Option<usize>, unit: &str) -> Progress {
        Progress::drawn(len, unit, std::io::stderr().is_terminal())
    }

    /// [`Progress::new`] drawn on stderr when `visible`, else hidden.
    fn drawn(len: Option<usize>, unit: &str, visible: bool) -> Progress {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let template = match len {
            Some(_) => format!("{{elapsed_precise}} [{{wide_bar}}] {{pos}}/{{len}} {unit}{{msg}}"),
            None => format!("{{spinner}} {{elapsed_precise}} {{pos}} {unit}{{msg}}"),
        };
        let bar = ProgressBar::with_draw_target(len.map(|n| n as u64), target);
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        if visible {
            bar.enable_steady_tick(Duration::from_millis(250));
        }
        Progress {
            bar,
            failed: Cell::new(0),
        }
    }

    /// Runs `print` (which writes to stdout or stderr) with the bar taken off the screen, so
    /// that lines and bar do not interleave.
    pub(crate) fn println(&self, print: impl FnOnce()) {
        self.bar.suspend(print);
    }

    /// One more item done, which `failed` or not.
    pub(crate) fn inc(&self, failed: bool) {
        if failed {
            self.failed.set(self.failed.get() + 1);
            self.bar
                .set_message(format!(", {} failed", self.failed.get()));
        }
        self.bar.inc(1);
    }

    /// `done` items done so far.
    pub(crate) fn set_done(&self, done: usize) {
        self.bar.set_position(done as u64);
    }

    /// Takes the bar off the screen for good.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    /// A command that ends with an error leaves no bar behind either.
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_hidden_unless_stderr_is_a_terminal() {
        for len in [Some(3), None] {
            let hidden = Progress::drawn(len, "cases", false);
            assert!(hidden.bar.is_hidden());
            hidden.inc(true);
            assert_eq!(hidden.failed.get(), 1);
            assert_eq!(hidden.bar.position(), 1);
        }
    }
}
