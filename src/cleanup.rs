//! Temporary files: where they go ([`temp_dir`]: TMPDIR, or /var/tmp as nbdkit) and that they
//! never outlive the process. What SIGINT, SIGTERM and SIGHUP do: by default remove registered
//! temporary files and exit; while serving, run the server's own action instead.
//!
//! Owners of a temporary file that must not outlive the process [`register`] its path while it
//! exists and keep the returned [`TempPathGuard`]; [`install_signal_handlers`] starts one thread
//! that, on a signal, removes every registered path and exits with status 128 + signal number.
//!
//! Exiting promptly: the kernel frees an unlinked file's blocks and page cache when its last
//! descriptor closes, and waits for the pages already under writeback first — 1.5 to 2.5 s for
//! the 1.5 to 3 GiB of a big image being written, all spent in the exiting process. Big open
//! files registered with [`hand_over_on_signal`] are therefore passed, on a signal, to a helper
//! process (`cat`, in its own process group) that holds them until this process has exited and
//! then closes them: the names are gone at once, the space follows in the background.
//! A long-running job that shuts down by itself (the NBD server) installs an action with
//! [`on_signal`]: while its [`SignalActionGuard`] lives, each signal calls the action instead.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// TMPDIR, or /var/tmp as nbdkit uses: where the filesystem being built or served, the
/// copy-on-write overlay, a spooled tar stream and a private socket's directory go.
pub fn temp_dir() -> PathBuf {
    std::env::var_os("TMPDIR")
        .filter(|s| !s.is_empty())
        .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from)
}

/// Registered paths, each with the id of the guard that owns it.
static REGISTRY: Mutex<Vec<(u64, PathBuf)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static INSTALLED: Mutex<bool> = Mutex::new(false);
/// Open files handed to a helper on a signal, each with the id of its guard.
static OPEN: Mutex<Vec<(u64, Arc<File>)>> = Mutex::new(Vec::new());

/// What a signal does instead of the default, with the id of the guard that installed it.
type Action = Arc<dyn Fn(i32) + Send + Sync>;
/// Installed actions, innermost last; the last one runs.
static ACTIONS: Mutex<Vec<(u64, Action)>> = Mutex::new(Vec::new());

fn actions() -> MutexGuard<'static, Vec<(u64, Action)>> {
    crate::sync::lock(&ACTIONS)
}

fn registry() -> MutexGuard<'static, Vec<(u64, PathBuf)>> {
    // A panic while holding the lock leaves the list itself consistent.
    crate::sync::lock(&REGISTRY)
}

/// Starts the signal thread (once; later calls do nothing). On SIGINT, SIGTERM or SIGHUP it
/// runs the action installed with [`on_signal`] if there is one; otherwise it clears the progress
/// bar, removes every registered path, then exits the process with 128 + the signal number.
pub fn install_signal_handlers() -> anyhow::Result<()> {
    let mut installed = crate::sync::lock(&INSTALLED);
    if *installed {
        return Ok(());
    }
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing handlers for SIGINT, SIGTERM and SIGHUP")?;
    std::thread::Builder::new()
        .name("cleanup-signals".into())
        .spawn(move || {
            for signo in signals.forever() {
                // Clone the action out: it may install or drop guards itself.
                let action = actions().last().map(|(_, a)| Arc::clone(a));
                match action {
                    Some(action) => action(signo),
                    None => {
                        crate::progress::clear();
                        remove_all();
                        hand_over_open_files();
                        std::process::exit(128 + signo);
                    }
                }
            }
        })
        .context("starting the signal handling thread")?;
    *installed = true;
    Ok(())
}

/// Removes every registered path (ignoring errors: the file may already be gone) and empties the
/// registry, newest first so that a file goes before the directory registered to hold it
/// (directories are removed when empty). Holds the lock until the process exits.
fn remove_all() {
    let mut reg = registry();
    for (_, path) in reg.drain(..).rev() {
        if std::fs::remove_file(&path).is_err() {
            let _ = std::fs::remove_dir(&path);
        }
    }
    // Keep the lock: if the process is about to exit, nobody may rename a file in the meantime.
    std::mem::forget(reg);
}

/// Registers `file` (open, its name already registered or unlinked) to be handed over on a
/// signal: see the module's documentation. Until the returned guard is dropped.
pub fn hand_over_on_signal(file: &Arc<File>) -> OpenFileGuard {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    open_files().push((id, Arc::clone(file)));
    OpenFileGuard { id }
}

/// Keeps a file registered with [`hand_over_on_signal`].
#[derive(Debug)]
#[must_use = "dropping the guard unregisters the file at once"]
pub struct OpenFileGuard {
    id: u64,
}

impl Drop for OpenFileGuard {
    fn drop(&mut self) {
        open_files().retain(|(id, _)| *id != self.id);
    }
}

fn open_files() -> MutexGuard<'static, Vec<(u64, Arc<File>)>> {
    crate::sync::lock(&OPEN)
}

/// Starts, for each registered open file, a `cat` in its own process group (so a Ctrl-C at the
/// terminal does not reach it) whose stdout is the file and whose stdin is a socket this process
/// holds: when this process exits, `cat` reads end-of-file and exits, and the file's last close
/// happens there. Best effort: if `cat` cannot start, the file is released here as before.
fn hand_over_open_files() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let files = open_files();
    for (_, file) in files.iter() {
        let (Ok((ours, theirs)), Ok(out)) = (UnixStream::pair(), file.try_clone()) else {
            continue;
        };
        let spawned = Command::new("cat")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(out))
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        if spawned.is_ok() {
            // Our end closes when the process exits, and not before.
            std::mem::forget(ours);
        }
    }
    std::mem::forget(files);
}

/// Makes SIGINT, SIGTERM and SIGHUP call `action(signal number)` on the signal thread, instead
/// of removing temporary files and exiting, until the returned guard is dropped. The action
/// runs once per signal and should only start the shutdown (set a flag, wake a loop), not wait
/// for it. Guards nest: the newest live action runs.
pub fn on_signal(action: impl Fn(i32) + Send + Sync + 'static) -> SignalActionGuard {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    actions().push((id, Arc::new(action)));
    SignalActionGuard { id }
}

/// Keeps a signal action installed; dropping it restores the previous behaviour.
#[derive(Debug)]
#[must_use = "dropping the guard uninstalls the action at once"]
pub struct SignalActionGuard {
    id: u64,
}

impl Drop for SignalActionGuard {
    fn drop(&mut self) {
        actions().retain(|(id, _)| *id != self.id);
    }
}

/// Registers `path` for removal on a signal until the returned guard is dropped or committed.
/// An empty directory may be registered too (the files in it registered after it).
pub fn register(path: PathBuf) -> TempPathGuard {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    registry().push((id, path));
    TempPathGuard { id }
}

/// Keeps a path registered for removal on a signal. Dropping it unregisters the path without
/// deleting the file: the owner deletes or renames it.
#[derive(Debug)]
#[must_use = "dropping the guard unregisters the path at once"]
pub struct TempPathGuard {
    id: u64,
}

impl TempPathGuard {
    /// Runs `f` (typically the rename of the temp file into place) while holding the registry
    /// lock, so a signal cannot remove the file half-way, then unregisters the path.
    pub fn commit<F: FnOnce() -> io::Result<()>>(self, f: F) -> io::Result<()> {
        let mut reg = registry();
        let result = f();
        reg.retain(|(id, _)| *id != self.id);
        drop(reg);
        // Already unregistered; Drop would only take the lock again.
        std::mem::forget(self);
        result
    }
}

impl Drop for TempPathGuard {
    fn drop(&mut self) {
        registry().retain(|(id, _)| *id != self.id);
    }
}

/// `e` without the temporary file's name that the `tempfile` crate appends ("… at path
/// \".out.img.d7gEr8.tmp\""): messages name the user's paths, never our temp files.
pub fn without_temp_path(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::from(e.kind()),
    }
}

/// The currently registered paths (for tests and diagnostics).
pub fn registered() -> Vec<PathBuf> {
    registry().iter().map(|(_, p)| p.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    fn count(p: &Path) -> usize {
        registered().iter().filter(|x| x.as_path() == p).count()
    }

    #[test]
    fn register_and_unregister() {
        let a = PathBuf::from("/nonexistent/cleanup-test-a");
        let b = PathBuf::from("/nonexistent/cleanup-test-b");
        let ga = register(a.clone());
        let gb = register(b.clone());
        let ga2 = register(a.clone());
        assert_eq!((count(&a), count(&b)), (2, 1));
        drop(ga);
        assert_eq!((count(&a), count(&b)), (1, 1));
        drop(gb);
        assert_eq!((count(&a), count(&b)), (1, 0));
        drop(ga2);
        assert_eq!(count(&a), 0);
    }

    #[test]
    fn temp_file_names_are_left_out_of_errors() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let e = tempfile::Builder::new()
            .prefix(".secret-temp-name")
            .tempfile_in(&gone)
            .unwrap_err();
        assert!(e.to_string().contains(".secret-temp-name"), "{e}");
        let plain = without_temp_path(e);
        assert_eq!(plain.kind(), io::ErrorKind::NotFound);
        assert!(!plain.to_string().contains("secret"), "{plain}");
    }

    #[test]
    fn commit_runs_under_the_lock_and_unregisters() {
        let p = PathBuf::from("/nonexistent/cleanup-test-commit");
        let g = register(p.clone());
        assert_eq!(count(&p), 1);
        // The lock is held while f runs: another thread cannot take it.
        let ok = g.commit(|| {
            let locked = std::thread::spawn(|| REGISTRY.try_lock().is_err())
                .join()
                .unwrap();
            assert!(locked);
            Ok(())
        });
        assert!(ok.is_ok());
        assert_eq!(count(&p), 0);
        let g = register(p.clone());
        let err = g.commit(|| Err(io::Error::other("boom"))).unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(count(&p), 0);
    }

    const CHILD_ENV: &str = "LINUXDISK_MK_CLEANUP_CHILD";

    /// Runs only as a child of `signal_removes_files_and_exits`: registers a file, then kills itself.
    #[test]
    fn signal_child() {
        let Some(path) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        install_signal_handlers().unwrap();
        install_signal_handlers().unwrap();
        let _guard = register(PathBuf::from(path));
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_secs(30));
        panic!("still alive after SIGTERM");
    }

    #[test]
    fn signal_removes_files_and_exits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("victim.tmp");
        std::fs::write(&path, b"x").unwrap();
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "cleanup::tests::signal_child",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .output()
            .unwrap();
        assert_eq!(status.status.code(), Some(143), "{status:?}");
        assert!(!path.exists());
    }

    const ACTION_CHILD_ENV: &str = "LINUXDISK_MK_CLEANUP_ACTION_CHILD";

    /// Runs only as a child of `signal_action_replaces_exit`: with an action installed, two
    /// signals reach the action (the innermost one); without, the default removes and exits.
    #[test]
    fn signal_action_child() {
        use rustix::process::{getpid, kill_process, Signal};
        use std::sync::mpsc;
        use std::time::Duration;
        let Some(path) = std::env::var_os(ACTION_CHILD_ENV) else {
            return;
        };
        install_signal_handlers().unwrap();
        // A directory and a file in it: the default removes the file, then the directory.
        let dir = PathBuf::from(path);
        let _dir = register(dir.clone());
        let _file = register(dir.join("socket"));
        let (tx, rx) = mpsc::channel();
        let outer_tx = tx.clone();
        let outer = on_signal(move |_| outer_tx.send("outer").unwrap());
        let inner =
            on_signal(move |signo| tx.send(if signo == 15 { "inner" } else { "?" }).unwrap());
        kill_process(getpid(), Signal::TERM).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("inner"));
        drop(inner);
        kill_process(getpid(), Signal::INT).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("outer"));
        drop(outer);
        kill_process(getpid(), Signal::HUP).unwrap();
        std::thread::sleep(Duration::from_secs(30));
        panic!("still alive after SIGHUP");
    }

    #[test]
    fn signal_action_replaces_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("socket"), b"x").unwrap();
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "cleanup::tests::signal_action_child",
                "--test-threads=1",
            ])
            .env(ACTION_CHILD_ENV, &path)
            .output()
            .unwrap();
        assert_eq!(status.status.code(), Some(128 + 1), "{status:?}");
        assert!(!path.exists());
    }
}
