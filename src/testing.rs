//! For unit tests that something waits (the NBD server's, `source::readahead`'s): [`Spawned`] runs a
//! closure on a thread of its own, tells when that thread is blocked — its state in /proc is S,
//! asleep in the kernel (a futex, poll, read): an event to wait for instead of sleeping and
//! hoping — and joins it with a bound, so that a thread that never wakes fails the test instead
//! of hanging it.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long to wait for a thread to block or to end: reached only when something is stuck.
const STUCK: Duration = Duration::from_secs(60);

/// A closure running on a thread of its own.
pub struct Spawned<T> {
    tid: i32,
    result: mpsc::Receiver<T>,
    handle: JoinHandle<()>,
}

impl<T: Send + 'static> Spawned<T> {
    pub fn new(f: impl FnOnce() -> T + Send + 'static) -> Spawned<T> {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (tx, result) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            tid_tx
                .send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            let _ = tx.send(f());
        });
        Spawned {
            tid: tid_rx.recv().expect("the thread started"),
            result,
            handle,
        }
    }

    /// Waits until the thread is asleep in the kernel. Panics, naming `what`, if it ends first
    /// (it did not wait).
    pub fn wait_until_blocked(&self, what: &str) {
        let path = format!("/proc/self/task/{}/stat", self.tid);
        let deadline = Instant::now() + STUCK;
        loop {
            assert!(
                !self.handle.is_finished(),
                "{what}: ended instead of waiting"
            );
            let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // "tid (name) S ...": the name may hold spaces and parentheses; the state follows
            // the last ')'.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            if state == Some("S") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not waiting after {STUCK:?} ({stat})"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The closure's result. Panics, naming `what`, if it panicked or is still running after a
    /// minute (the thread is then left behind).
    pub fn join(self, what: &str) -> T {
        match self.result.recv_timeout(STUCK) {
            Ok(v) => v,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still running after {STUCK:?}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = self.handle.join();
                panic!("{what}: panicked")
            }
        }
    }
}
