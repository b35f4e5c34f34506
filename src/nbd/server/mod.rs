//! The serving process: listeners (`--socket`, `--tcp`, socket activation, `--run`'s private
//! socket), the accept loop with one thread per connection, the handshake timeout, the URI on
//! stderr and the pidfile, and the orderly stop on SIGINT/SIGTERM/SIGHUP or when the `--run`
//! command exits: stop accepting, end every connection's reading side so replies in flight
//! are finished, wait for the connections (bounded), remove the socket we made.

use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use rustix::event::{poll, PollFd, PollFlags};

use super::captive::{Captive, CaptiveEnv, Signaller};
use super::handshake::{handshake, ExportInfo};
use super::session::transmission;
use super::Export;
use crate::cleanup;
use listen::{Bound, Listener, Stream};

mod listen;

/// A client must finish the handshake without pausing longer than this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// On stop, connections get this long to finish their replies in flight...
const STOP_GRACE: Duration = Duration::from_secs(5);
/// ...then their sockets are shut down both ways, and this long more before we give up.
const STOP_FORCE: Duration = Duration::from_secs(1);
/// Connections beyond this many at once are closed as soon as accepted.
pub const MAX_CONNECTIONS: usize = 1024;

/// How and where to serve.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `--socket PATH`: a Unix socket (mode 0600), removed on exit.
    pub socket: Option<PathBuf>,
    /// `--tcp [ADDR:]PORT`: 127.0.0.1 unless an address is given.
    pub tcp: Option<String>,
    /// `--run CMD`: captive mode.
    pub run: Option<String>,
    /// `--export-name NAME` (default "").
    pub export_name: String,
    /// A description for NBD_INFO_DESCRIPTION.
    pub description: String,
    /// `--pidfile FILE`, written once listening.
    pub pidfile: Option<PathBuf>,
    /// `-q`: don't print the URI.
    pub quiet: bool,
}

/// Checks the listener options before the (possibly long) build: a malformed `--tcp` or an
/// existing `--socket` path is an error now rather than after the filesystem is made.
pub fn check_options(opts: &ServeOptions) -> anyhow::Result<()> {
    if let Some(spec) = &opts.tcp {
        listen::parse_tcp(spec)?;
    }
    if let Some(path) = &opts.socket {
        if std::fs::symlink_metadata(path).is_ok() {
            anyhow::bail!(
                "--socket {}: already exists (remove it or choose another path)",
                path.display()
            );
        }
    }
    Ok(())
}

/// Serves `export` until a signal or, with `--run`, until the command exits; returns the exit
/// status for the process: 0 after a signal, the command's status in captive mode.
pub fn serve(export: Arc<dyn Export>, opts: &ServeOptions) -> anyhow::Result<i32> {
    serve_announcing(export, opts, &mut |_| Ok(()))
}

/// [`serve`], calling `listening(uri)` once the server listens, before the pidfile is written
/// and any `--run` command starts (for `--json`); an error from it stops the server.
pub fn serve_announcing(
    export: Arc<dyn Export>,
    opts: &ServeOptions,
    listening: &mut dyn FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<i32> {
    cleanup::install_signal_handlers()?;
    let stop = Arc::new(Stop::new()?);
    let child: Arc<OnceLock<Signaller>> = Arc::new(OnceLock::new());
    let _on_signal = cleanup::on_signal({
        let (stop, child) = (Arc::clone(&stop), Arc::clone(&child));
        move |signo| {
            stop.signalled.store(signo, Ordering::SeqCst);
            stop.trigger();
            // The command may not have had the signal (it was sent to us alone): pass it on.
            if let Some(child) = child.get() {
                child.forward(signo);
            }
        }
    });

    let bound = listen::listen(opts)?;
    let uri = bound.uri(&opts.export_name);
    if opts.run.is_none() && !opts.quiet {
        crate::progress::line(&format!("serving {uri}"));
    }
    listening(&uri)?;
    if let Some(pidfile) = &opts.pidfile {
        write_pidfile(pidfile)?;
    }
    let captive = match &opts.run {
        // A signal before the command started: stop without starting it.
        Some(_) if stop.is_stopped() => None,
        Some(cmd) => {
            let env = CaptiveEnv {
                uri,
                unixsocket: bound.unix_path().unwrap_or_default(),
                port: bound.tcp_port().map(|p| p.to_string()).unwrap_or_default(),
                exportname: opts.export_name.clone(),
            };
            let on_exit = Arc::clone(&stop);
            let c = Captive::spawn(cmd, &env, move || on_exit.trigger())?;
            let _ = child.set(c.signaller());
            // A signal that came while the command was starting was not forwarded: do it now.
            let signo = stop.signalled.load(Ordering::SeqCst);
            if signo != 0 {
                c.signaller().forward(signo);
            }
            Some(c)
        }
        None => None,
    };

    let info = Arc::new(ExportInfo {
        name: opts.export_name.clone(),
        description: opts.description.clone(),
    });
    let conns = Arc::new(Registry::default());
    accept_loop(&bound, &stop, &conns, &export, &info);
    let left = conns.close_all();
    if left > 0 {
        crate::progress::line(&format!(
            "{left} connection(s) did not finish; stopping anyway"
        ));
    }
    let status = match captive {
        Some(c) => c.wait()?,
        None => 0,
    };
    drop(bound); // removes the socket and the private directory, if we made them
    Ok(status)
}

/// Writes our process ID and a newline to `path`, through a temp file renamed into place.
fn write_pidfile(path: &std::path::Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let write = || -> io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".linuxdisk-mk-pid")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(cleanup::without_temp_path)?;
        writeln!(tmp, "{}", std::process::id())?;
        tmp.persist(path)
            .map_err(|e| cleanup::without_temp_path(e.error))?;
        Ok(())
    };
    write().with_context(|| format!("writing the pidfile {}", path.display()))
}

/// The stop request: a flag, and a socket pair whose readable end wakes the accept loop.
struct Stop {
    stopped: AtomicBool,
    /// The last signal that asked us to stop (0: none).
    signalled: AtomicI32,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
}

impl Stop {
    fn new() -> anyhow::Result<Stop> {
        let (wake_tx, wake_rx) = UnixStream::pair().context("creating the stop socket pair")?;
        wake_tx.set_nonblocking(true)?;
        Ok(Stop {
            stopped: AtomicBool::new(false),
            signalled: AtomicI32::new(0),
            wake_tx,
            wake_rx,
        })
    }

    /// Asks the accept loop to stop; callable from any thread, any number of times.
    fn trigger(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = (&self.wake_tx).write(&[1]);
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// Accepts connections until stopped, each served on its own thread.
fn accept_loop(
    bound: &Bound,
    stop: &Stop,
    conns: &Arc<Registry>,
    export: &Arc<dyn Export>,
    info: &Arc<ExportInfo>,
) {
    let listeners = bound.listeners();
    while !stop.is_stopped() {
        let mut fds: Vec<PollFd<'_>> = listeners
            .iter()
            .map(|l| PollFd::new(l, PollFlags::IN))
            .collect();
        fds.push(PollFd::new(&stop.wake_rx, PollFlags::IN));
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                crate::progress::line(&format!("waiting for connections: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        for (listener, _) in listeners.iter().zip(ready).filter(|(_, r)| *r) {
            accept_ready(listener, stop, conns, export, info);
        }
    }
}

/// Accepts what is pending on `listener` (it is non-blocking).
fn accept_ready(
    listener: &Listener,
    stop: &Stop,
    conns: &Arc<Registry>,
    export: &Arc<dyn Export>,
    info: &Arc<ExportInfo>,
) {
    while !stop.is_stopped() {
        let (stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if transient_accept_error(&e) => continue,
            Err(e) => {
                // Out of descriptors or memory: say so, and give connections time to end.
                crate::progress::line(&format!("accepting on {}: {e}", listener.describe()));
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
        };
        let Some(id) = conns.add(&stream) else {
            if !conns.is_closing() {
                crate::progress::line(&format!(
                    "{peer}: refused, {MAX_CONNECTIONS} connections already open"
                ));
            }
            continue;
        };
        let (conns2, export, info) = (Arc::clone(conns), Arc::clone(export), Arc::clone(info));
        let peer2 = peer.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("nbd-conn-{id}"))
            .spawn(move || {
                let _gone = Deregister(&conns2, id);
                if let Err(e) = connection(stream, &export, &info) {
                    log_connection_error(&peer2, &e, conns2.is_closing());
                }
            });
        if let Err(e) = spawned {
            // The closure (and the stream) was dropped: forget the connection.
            conns.remove(id);
            crate::progress::line(&format!("{peer}: cannot start a thread: {e}"));
        }
    }
}

fn transient_accept_error(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
    ) || e.raw_os_error() == Some(Errno::PROTO.raw_os_error())
}

/// One client, start to end: the handshake within [`HANDSHAKE_TIMEOUT`], then transmission.
fn connection(stream: Stream, export: &Arc<dyn Export>, info: &ExportInfo) -> io::Result<()> {
    stream.set_timeouts(Some(HANDSHAKE_TIMEOUT))?;
    let mut reader = BufReader::new(Deadline {
        stream: stream.try_clone()?,
        deadline: Some(Instant::now() + HANDSHAKE_TIMEOUT),
    });
    let mut writer = stream.try_clone()?;
    let neg = match handshake(&mut reader, &mut writer, &**export, info) {
        Ok(Some(neg)) => neg,
        Ok(None) => return Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "handshake not done within {} s; dropped",
                    HANDSHAKE_TIMEOUT.as_secs()
                ),
            ))
        }
        Err(e) => return Err(e),
    };
    reader.get_mut().deadline = None;
    stream.set_timeouts(None)?;
    transmission(Box::new(reader), Box::new(writer), Arc::clone(export), &neg)
}

/// A connection's reading side; while `deadline` is set, no read waits past it (a client
/// trickling bytes cannot hold the handshake open).
struct Deadline {
    stream: Stream,
    deadline: Option<Instant>,
}

impl io::Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        self.stream.read(buf)
    }
}

/// Logs a connection's end unless it is an ordinary disconnect.
fn log_connection_error(peer: &str, e: &io::Error, closing: bool) {
    use io::ErrorKind::*;
    let vanished = matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected
    );
    if !vanished && !closing {
        crate::progress::line(&format!("{peer}: {e}"));
    }
}

/// The open connections: a clone of each socket, to end them on stop. Each connection's
/// thread removes its own entry when it ends, so the registry holds only live ones.
#[derive(Default)]
struct Registry {
    inner: Mutex<RegistryInner>,
    changed: Condvar,
}

#[derive(Default)]
struct RegistryInner {
    next_id: u64,
    live: HashMap<u64, Stream>,
    closing: bool,
}

/// Removes a connection from the registry when its thread ends (even by panic).
struct Deregister<'a>(&'a Registry, u64);

impl Drop for Deregister<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection; `None` when closing, full, or the socket cannot be cloned.
    fn add(&self, stream: &Stream) -> Option<u64> {
        let mut inner = self.lock();
        if inner.closing || inner.live.len() >= MAX_CONNECTIONS {
            return None;
        }
        let handle = stream.try_clone().ok()?;
        let id = inner.next_id;
        inner.next_id += 1;
        inner.live.insert(id, handle);
        Some(id)
    }

    /// Forgets connection `id`; once none are left, idle read buffers are unmapped so memory
    /// comes back down.
    fn remove(&self, id: u64) {
        let none_left = {
            let mut r = self.lock();
            r.live.remove(&id);
            r.live.is_empty()
        };
        if none_left {
            super::buffer::release_idle();
        }
        self.changed.notify_all();
    }

    fn is_closing(&self) -> bool {
        self.lock().closing
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Refuses new connections, shuts down the reading side of every open one (the session
    /// sees end-of-file, finishes its replies in flight and returns), waits for them; after
    /// [`STOP_GRACE`] shuts the rest down both ways. Returns how many were still open.
    fn close_all(&self) -> usize {
        let mut inner = self.lock();
        inner.closing = true;
        for s in inner.live.values() {
            let _ = s.shutdown(std::net::Shutdown::Read);
        }
        inner = self.wait_empty(inner, STOP_GRACE);
        for s in inner.live.values() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        inner = self.wait_empty(inner, STOP_FORCE);
        inner.live.len()
    }

    fn wait_empty<'a>(
        &self,
        mut inner: std::sync::MutexGuard<'a, RegistryInner>,
        limit: Duration,
    ) -> std::sync::MutexGuard<'a, RegistryInner> {
        let deadline = Instant::now() + limit;
        while !inner.live.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        inner
    }
}

#[cfg(test)]
mod tests;
