//! The serving process: listeners (`--socket`, `--tcp`, socket activation, `--run`'s private
//! socket), the accept loop with one thread per connection (`connection`: handshake, TLS,
//! transmission), the connection limits (`registry`), the URI on stderr and the pidfile, and
//! the orderly stop on SIGINT/SIGTERM/SIGHUP or when the `--run` command exits: stop
//! accepting, end every connection's reading side so replies in flight are finished, wait for
//! the connections (bounded), remove the socket we made, and leave the temp files' deletion
//! to a helper (`release`) so that exiting does not wait for it.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use rustix::event::{poll, PollFd, PollFlags};

use super::captive::{Captive, CaptiveEnv, Signaller};
use super::handshake::ExportInfo;
use super::tls::{ServerTls, TlsMode, TlsOptions};
use super::Export;
use crate::cleanup;
use connection::{connection, log_connection_error, Shared};
use listen::{Bound, Listener};
use registry::{Deregister, Registry};

pub use connection::{stalled, HANDSHAKE_TIMEOUT, REPLY_STALL};
pub use listen::Stream;

mod connection;
mod listen;
mod registry;
mod release;

/// `--max-connections` by default: clients in the transmission phase at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How and where to serve.
#[derive(Debug, Clone)]
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
    /// `--tls`, `--tls-certificates`, `--tls-psk`, `--tls-verify-peer`.
    pub tls: TlsOptions,
    /// `--max-connections`: clients in the transmission phase at once.
    pub max_connections: usize,
    /// On the way out, hand the unlinked temp files to a helper that outlives us, so that
    /// exiting does not wait for their deletion (the binary does; unit tests do not).
    pub release_temp_files: bool,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            socket: None,
            tcp: None,
            run: None,
            export_name: String::new(),
            description: String::new(),
            pidfile: None,
            quiet: false,
            tls: TlsOptions::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            release_temp_files: false,
        }
    }
}

/// Checks the listener and TLS options before the (possibly long) build: a malformed `--tcp`,
/// an existing `--socket` path or unreadable keys are an error now rather than after the
/// filesystem is made.
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
    ServerTls::load(&opts.tls)?;
    Ok(())
}

/// Serves `export` until a signal or, with `--run`, until the command exits; returns the exit
/// status for the process: 0 after a signal, the command's status in captive mode.
pub fn serve(export: Arc<dyn Export>, opts: &ServeOptions) -> anyhow::Result<i32> {
    serve_announcing(export, opts, &mut |_| Ok(()))
}

/// [`serve`], calling `listening(uri)` once the server listens and its pidfile is written,
/// before any `--run` command starts (for `--json`); an error from it stops the server.
pub fn serve_announcing(
    export: Arc<dyn Export>,
    opts: &ServeOptions,
    listening: &mut dyn FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<i32> {
    cleanup::install_signal_handlers()?;
    let tls = ServerTls::load(&opts.tls)?;
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
    let required = tls.as_ref().filter(|t| t.mode() == TlsMode::Require);
    let uri = bound.uri(&opts.export_name, required);
    if !opts.quiet {
        if let Some(warning) = exposure_warning(&bound, tls.as_ref()) {
            crate::progress::line(&format!("warning: {warning}"));
        }
    }
    // The pidfile first: once the server says it is serving (a line, --json), it is there.
    if let Some(pidfile) = &opts.pidfile {
        write_pidfile(pidfile)?;
    }
    if opts.run.is_none() && !opts.quiet {
        crate::progress::line(&format!("serving {uri}"));
    }
    listening(&uri)?;
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

    let shared = Arc::new(Shared {
        export,
        info: ExportInfo {
            name: opts.export_name.clone(),
            description: opts.description.clone(),
        },
        tls,
        conns: Arc::new(Registry::new(opts.max_connections.max(1))),
    });
    accept_loop(&bound, &stop, &shared);
    let left = shared.conns.close_all();
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
    if opts.release_temp_files {
        release::temp_files_after_exit();
    }
    Ok(status)
}

/// The one line said at start-up when the server's TCP port lets anyone read the disk: no TLS,
/// optional TLS, or TLS that does not check who the client is.
fn exposure_warning(bound: &Bound, tls: Option<&ServerTls>) -> Option<String> {
    let tcp = bound.tcp_addresses();
    if tcp.is_empty() {
        return None;
    }
    let at = tcp.join(", ");
    let why = match tls {
        None => "serving without TLS",
        Some(t) if t.mode() == TlsMode::On => "TLS is optional (--tls=on)",
        Some(t) if !t.authenticates_clients() => {
            "TLS with certificates but without --tls-verify-peer does not check who clients are"
        }
        Some(_) => return None,
    };
    Some(format!(
        "TCP {at}: {why}: anyone who can reach this port can read the disk"
    ))
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
fn accept_loop(bound: &Bound, stop: &Stop, shared: &Arc<Shared>) {
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
            accept_ready(listener, stop, shared);
        }
    }
}

/// Accepts what is pending on `listener` (it is non-blocking).
fn accept_ready(listener: &Listener, stop: &Stop, shared: &Arc<Shared>) {
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
        let Some(id) = shared.conns.add(&stream) else {
            continue; // closing
        };
        let sh = Arc::clone(shared);
        let peer2 = peer.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("nbd-conn-{id}"))
            .spawn(move || {
                let conns = &sh.conns;
                let _gone = Deregister(conns, id);
                if let Err(e) = connection(stream, id, &peer2, &sh) {
                    let evicted = conns.was_evicted(id).then(|| conns.max_handshakes());
                    log_connection_error(&peer2, &e, conns.is_closing(), evicted);
                }
            });
        if let Err(e) = spawned {
            // The closure (and the stream) was dropped: forget the connection.
            shared.conns.remove(id);
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

#[cfg(test)]
mod tests;
