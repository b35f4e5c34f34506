//! The progress display: a bar on stderr (entries scanned and written, bytes copied) when stderr
//! is a terminal and -q was not given; nothing otherwise.

use std::io::IsTerminal;

use std::cell::Cell;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress of the current phase; all methods are cheap no-ops when hidden.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Bytes copied in the current entries phase.
    bytes: Cell<u64>,
}

impl Progress {
    /// Shown only when `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
            b.set_style(
                ProgressStyle::with_template("{prefix:>9} {wide_bar} {msg}")
                    .expect("valid template"),
            );
            b
        });
        Progress {
            bar,
            bytes: Cell::new(0),
        }
    }

    pub fn hidden() -> Progress {
        Progress::new(false)
    }

    /// Starts a phase named `prefix` counting entries (`total` of them if known).
    pub fn start_entries(&self, prefix: &'static str, total: Option<u64>) {
        self.start(
            prefix,
            total,
            "{prefix:>9} {wide_bar} {pos}/{len} entries, {msg}",
        );
    }

    /// Starts a phase counting bytes.
    pub fn start_bytes(&self, prefix: &'static str, total: u64) {
        self.start(
            prefix,
            Some(total),
            "{prefix:>9} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec}",
        );
    }

    fn start(&self, prefix: &'static str, total: Option<u64>, template: &str) {
        if let Some(b) = &self.bar {
            let template = if total.is_some() {
                template.to_string()
            } else {
                "{prefix:>9} {spinner} {pos} entries".to_string()
            };
            b.reset(); // a finished bar draws nothing until reset
            b.set_length(total.unwrap_or(0));
            b.set_message("");
            b.set_prefix(prefix);
            b.set_style(ProgressStyle::with_template(&template).expect("valid template"));
        }
        self.bytes.set(0);
    }

    pub fn inc_entries(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Counts copied bytes; shown as the message during an entries phase.
    pub fn inc_bytes(&self, n: u64) {
        if let Some(b) = &self.bar {
            self.bytes.set(self.bytes.get() + n);
            b.set_message(format!("{} copied", HumanBytes(self.bytes.get())));
        }
    }

    /// Counts bytes in a bytes phase.
    pub fn inc_position(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
