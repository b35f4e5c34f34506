//! What standard error shows while a job runs: one progress bar per phase (scanning, building,
//! syncing), each labelled, by bytes against the known total where there is one; and the lines
//! printed around it ([`line`], [`warn`]), which suspend the bar so the two never interleave.
//!
//! The bar is drawn only when stderr is a terminal and -q was not given; with -v on a
//! non-terminal, a plain status line is printed every few seconds instead, and with -v each
//! phase ends with a line saying what it did. Writing to stderr never fails a job: errors (a
//! closed pipe, a vanished terminal) are ignored, and no lock is held while writing, so that a
//! blocked stderr (a pipe nobody reads, a terminal stopped with Ctrl-S) cannot keep a signal from
//! ending the process.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// The bar being drawn, if any: [`line`] suspends it, [`clear`] removes it. Held only to read
/// or replace it, never while drawing or writing.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);
/// Set by [`clear`]: the process is exiting, no new bar starts.
static EXITING: AtomicBool = AtomicBool::new(false);
/// How long [`clear`] waits for the bar to be removed (a blocked terminal never lets it).
const CLEAR_WAIT: Duration = Duration::from_millis(200);

/// A phase running this long shows an estimate of the time left.
const ETA_AFTER: Duration = Duration::from_secs(3);

/// How often a plain status line is printed in [`Mode::Lines`].
const LINE_INTERVAL: Duration = Duration::from_secs(5);

fn active() -> MutexGuard<'static, Option<ProgressBar>> {
    crate::sync::lock(&ACTIVE)
}

/// Writes `linuxdisk-mk: MSG` and a newline to stderr, above the bar if one is drawn, ignoring
/// errors: a message must never stop a build.
pub fn line(msg: &str) {
    text(&format!("linuxdisk-mk: {msg}"));
}

/// Writes `text` and a newline to stderr as [`line`] does, without the program's name (the
/// continuation lines of the summary).
pub fn text(text: &str) {
    let write = || {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{text}");
        let _ = err.flush();
    };
    let bar = active().clone();
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// [`line`] with `warning: ` in front.
pub fn warn(msg: &str) {
    line(&format!("warning: {msg}"));
}

/// Removes the bar from the terminal and keeps any other from starting: called on the way out
/// after a signal. Waits at most [`CLEAR_WAIT`]: the bar's own lock may be held by a write that
/// a stopped terminal blocks, and the process must exit all the same.
pub fn clear() {
    EXITING.store(true, Ordering::SeqCst);
    let Some(bar) = active().take() else {
        return;
    };
    let (done, cleared) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("progress-clear".into())
        .spawn(move || {
            bar.finish_and_clear();
            let _ = done.send(());
        });
    if spawned.is_ok() {
        let _ = cleared.recv_timeout(CLEAR_WAIT);
    }
}

/// A byte count as the summary and the progress display print it: binary units with one
/// decimal ("193.2 MiB", "3.0 GiB"), plain bytes below 1 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (shift, unit) in [
            (50, "PiB"),
            (40, "TiB"),
            (30, "GiB"),
            (20, "MiB"),
            (10, "KiB"),
        ] {
            if n >= 1 << shift {
                return write!(f, "{:.1} {unit}", n as f64 / (1u64 << shift) as f64);
            }
        }
        write!(f, "{n} bytes")
    }
}

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A bar on stderr (a terminal).
    Bar,
    /// A status line every few seconds (-v, stderr not a terminal).
    Lines,
    /// Nothing.
    Hidden,
}

impl Mode {
    /// The bar on a terminal unless `quiet`; lines when `verbose` on anything else.
    pub fn for_stderr(quiet: bool, verbose: bool) -> Mode {
        match (quiet, std::io::stderr().is_terminal(), verbose) {
            (true, _, _) => Mode::Hidden,
            (false, true, _) => Mode::Bar,
            (false, false, true) => Mode::Lines,
            (false, false, false) => Mode::Hidden,
        }
    }
}

/// What a phase counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// Entries, total unknown (a scan).
    Entries,
    /// Bytes against `bytes`, entries as a second count against `entries`.
    Bytes { bytes: u64, entries: u64 },
    /// Entries against `entries` (nothing copied: --lazy, or no file data).
    EntriesOf { entries: u64 },
    /// Nothing to count: waiting for the kernel (fsync).
    Wait,
}

/// The current phase.
struct Phase {
    label: &'static str,
    measure: Measure,
    started: Instant,
    bar: Option<ProgressBar>,
    bytes: u64,
    entries: Arc<AtomicU64>,
    last_line: Cell<Instant>,
}

/// Progress of the job's phases; cheap no-ops when hidden. One phase at a time.
pub struct Progress {
    mode: Mode,
    verbose: bool,
    phase: RefCell<Option<Phase>>,
}

impl Progress {
    /// Progress shown as `mode` says; with `verbose`, a line at the end of each phase.
    pub fn new(mode: Mode, verbose: bool) -> Progress {
        Progress {
            mode,
            verbose,
            phase: RefCell::new(None),
        }
    }

    /// Shows nothing.
    pub fn hidden() -> Progress {
        Progress::new(Mode::Hidden, false)
    }

    /// Starts a phase counting entries whose number is not known yet (a scan).
    pub fn start_scan(&self, label: &'static str) {
        self.start(label, Measure::Entries);
    }

    /// Starts a phase that copies `bytes` bytes while making `entries` entries: by bytes, or by
    /// entries when there are no bytes to copy.
    pub fn start_copy(&self, label: &'static str, bytes: u64, entries: u64) {
        let measure = match bytes {
            0 => Measure::EntriesOf { entries },
            _ => Measure::Bytes { bytes, entries },
        };
        self.start(label, measure);
    }

    /// Starts a phase that only waits (syncing to disk).
    pub fn start_wait(&self, label: &'static str) {
        self.start(label, Measure::Wait);
    }

    fn start(&self, label: &'static str, measure: Measure) {
        self.finish();
        let entries = Arc::new(AtomicU64::new(0));
        let draw = self.mode == Mode::Bar && !EXITING.load(Ordering::SeqCst);
        let bar = draw.then(|| bar(label, measure, &entries));
        if let Some(b) = &bar {
            *active() = Some(b.clone());
        }
        let now = Instant::now();
        *self.phase.borrow_mut() = Some(Phase {
            label,
            measure,
            started: now,
            bar,
            bytes: 0,
            entries,
            last_line: Cell::new(now),
        });
    }

    /// Counts `n` entries made or found.
    pub fn inc_entries(&self, n: u64) {
        if self.mode == Mode::Hidden && !self.verbose {
            return;
        }
        if let Some(p) = self.phase.borrow().as_ref() {
            p.entries.fetch_add(n, Ordering::Relaxed);
            if let Some(b) = &p.bar {
                match p.measure {
                    Measure::Entries | Measure::EntriesOf { .. } => b.inc(n),
                    Measure::Bytes { .. } | Measure::Wait => {}
                }
            }
            self.maybe_line(p);
        }
    }

    /// Counts `n` bytes copied.
    pub fn inc_bytes(&self, n: u64) {
        if self.mode == Mode::Hidden && !self.verbose {
            return;
        }
        if let Some(p) = self.phase.borrow_mut().as_mut() {
            p.bytes += n;
            if let (Some(b), Measure::Bytes { .. }) = (&p.bar, p.measure) {
                b.inc(n);
            }
            self.maybe_line(p);
        }
    }

    /// In [`Mode::Lines`], a status line when the last one is old enough.
    fn maybe_line(&self, p: &Phase) {
        if self.mode != Mode::Lines || p.last_line.get().elapsed() < LINE_INTERVAL {
            return;
        }
        p.last_line.set(Instant::now());
        line(&format!("{}: {}", p.label, status(p)));
    }

    /// Ends the current phase: the bar is removed; with -v, a line says what the phase did.
    pub fn finish(&self) {
        let Some(p) = self.phase.borrow_mut().take() else {
            return;
        };
        if let Some(b) = &p.bar {
            *active() = None;
            b.finish_and_clear();
        }
        if self.verbose {
            line(&format!(
                "{}: {} in {:.1} s",
                p.label,
                status(&p),
                p.started.elapsed().as_secs_f64()
            ));
        }
    }
}

impl Drop for Progress {
    /// Clears the bar when the job ends early (an error unwinding through `?`).
    fn drop(&mut self) {
        if let Some(p) = self.phase.get_mut().take() {
            if let Some(b) = p.bar {
                *active() = None;
                b.finish_and_clear();
            }
        }
    }
}

/// What the phase has done so far, in words.
fn status(p: &Phase) -> String {
    let entries = p.entries.load(Ordering::Relaxed);
    match p.measure {
        Measure::Entries => format!("{entries} entries"),
        Measure::EntriesOf { entries: total } => format!("{entries} of {total} entries"),
        Measure::Bytes {
            bytes,
            entries: total,
        } => {
            let done = format!(
                "{} of {} ({:.0}%)",
                ByteSize(p.bytes),
                ByteSize(bytes),
                p.bytes.min(bytes) as f64 * 100.0 / bytes as f64
            );
            match total {
                0 => done,
                _ => format!("{done}, {entries} of {total} entries"),
            }
        }
        Measure::Wait => "done".to_string(),
    }
}

/// The time left as the bar shows it, `elapsed` into the phase: only on long phases (the first
/// seconds' rate says little).
fn eta_text(elapsed: Duration, eta: Duration) -> Option<String> {
    if elapsed < ETA_AFTER {
        return None;
    }
    let s = eta.as_secs();
    Some(match s {
        0..60 => format!(", ETA {s}s"),
        60..3600 => format!(", ETA {}m{:02}s", s / 60, s % 60),
        _ => format!(", ETA {}h{:02}m", s / 3600, s % 3600 / 60),
    })
}

/// A bar for the phase, drawn on stderr.
fn bar(label: &'static str, measure: Measure, entries: &Arc<AtomicU64>) -> ProgressBar {
    let (len, template) = match measure {
        Measure::Entries => (None, "{prefix:>9} {spinner} {entries} entries, {elapsed}"),
        Measure::EntriesOf { entries } => (
            Some(entries),
            "{prefix:>9} {wide_bar} {pos}/{len} entries{eta_long}",
        ),
        Measure::Bytes { bytes, entries: 0 } => (
            Some(bytes),
            "{prefix:>9} {wide_bar} {done}/{total}{eta_long}",
        ),
        Measure::Bytes { bytes, .. } => (
            Some(bytes),
            "{prefix:>9} {wide_bar} {done}/{total}, {entries} entries{eta_long}",
        ),
        Measure::Wait => (None, "{prefix:>9} {spinner} {elapsed}"),
    };
    let total = match measure {
        Measure::Bytes { entries, .. } | Measure::EntriesOf { entries } => Some(entries),
        Measure::Entries | Measure::Wait => None,
    };
    let count = Arc::clone(entries);
    let style = ProgressStyle::with_template(template)
        .expect("valid template")
        .with_key(
            "entries",
            move |_: &ProgressState, w: &mut dyn fmt::Write| {
                let n = count.load(Ordering::Relaxed);
                let _ = match total {
                    Some(t) => write!(w, "{n}/{t}"),
                    None => write!(w, "{n}"),
                };
            },
        )
        .with_key("eta_long", |s: &ProgressState, w: &mut dyn fmt::Write| {
            if let Some(eta) = eta_text(s.elapsed(), s.eta()) {
                let _ = w.write_str(&eta);
            }
        })
        .with_key("done", |s: &ProgressState, w: &mut dyn fmt::Write| {
            let _ = write!(w, "{}", ByteSize(s.pos()));
        })
        .with_key("total", |s: &ProgressState, w: &mut dyn fmt::Write| {
            let _ = write!(w, "{}", ByteSize(s.len().unwrap_or(0)));
        });
    let b = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr_with_hz(8));
    b.set_style(style);
    b.set_prefix(label);
    // Drawn at once: the phase's label shows even if nothing is counted for a while.
    b.tick();
    if len.is_none() {
        // A spinner shows that the job is alive while nothing is counted.
        b.enable_steady_tick(Duration::from_millis(125));
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_one_decimal_and_binary_units() {
        assert_eq!(ByteSize(0).to_string(), "0 bytes");
        assert_eq!(ByteSize(1023).to_string(), "1023 bytes");
        assert_eq!(ByteSize(16 << 10).to_string(), "16.0 KiB");
        assert_eq!(ByteSize(193 << 20).to_string(), "193.0 MiB");
        assert_eq!(ByteSize((3 << 30) + (1 << 29)).to_string(), "3.5 GiB");
        assert_eq!(ByteSize(1 << 50).to_string(), "1.0 PiB");
    }

    #[test]
    fn the_time_left_shows_on_long_phases_only() {
        assert_eq!(
            eta_text(Duration::from_secs(1), Duration::from_secs(90)),
            None
        );
        assert_eq!(
            eta_text(Duration::from_secs(3), Duration::from_secs(90)).as_deref(),
            Some(", ETA 1m30s")
        );
    }

    #[test]
    fn lines_mode_counts_and_says_what_each_phase_did() {
        let p = Progress::new(Mode::Lines, true);
        p.start_copy("building", 1000, 3);
        p.inc_bytes(600);
        p.inc_entries(2);
        let s = status(p.phase.borrow().as_ref().unwrap());
        assert_eq!(s, "600 bytes of 1000 bytes (60%), 2 of 3 entries");
        p.finish();
        assert!(p.phase.borrow().is_none());
    }
}
