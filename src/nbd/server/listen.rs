//! Where the server listens, and the URI that names it: socket activation (LISTEN_PID and
//! LISTEN_FDS, fds from 3), `--socket PATH` (mode 0600, an existing path refused),
//! `--tcp [ADDR:]PORT` (127.0.0.1 unless an address is given), `--run`'s private socket in a
//! fresh directory under TMPDIR, or TCP 127.0.0.1:10809. What we create is removed on drop.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use super::ServeOptions;
use crate::cleanup::{self, TempPathGuard};
use crate::nbd::tls::ServerTls;

/// The NBD port, used when nothing else is asked for.
pub const DEFAULT_PORT: u16 = 10809;

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// A client's connection.
#[derive(Debug)]
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix(l) => l.as_fd(),
            Listener::Tcp(l) => l.as_fd(),
        }
    }
}

impl Listener {
    /// Accepts one connection (TCP_NODELAY set on TCP); also returns who it is, for messages.
    pub fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                Ok((Stream::Unix(s), format!("client on {}", self.describe())))
            }
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                s.set_nonblocking(false)?;
                // Fails only on a connection already gone: its first read will say so.
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), format!("client {peer}")))
            }
        }
    }

    /// The listening address, for messages.
    pub fn describe(&self) -> String {
        match self {
            Listener::Unix(l) => match l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            {
                Some(p) => p.display().to_string(),
                None => "an unnamed Unix socket".into(),
            },
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "a TCP socket".into(), |a| a.to_string()),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
}

impl Stream {
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Tcp(s) => s.set_write_timeout(t),
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(on),
            Stream::Tcp(s) => s.set_nonblocking(on),
        }
    }

    /// Sets (or with `None` clears) both the read and the write timeout.
    pub fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t)),
            Stream::Tcp(s) => s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t)),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write_vectored(bufs),
            Stream::Tcp(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What clients are told to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

/// The listeners, and what to remove when done.
#[derive(Debug)]
pub struct Bound {
    listeners: Vec<Listener>,
    endpoint: Option<Endpoint>,
    /// A socket we bound: removed on drop if the path still holds it (device, inode).
    socket: Option<(PathBuf, u64, u64, TempPathGuard)>,
    /// `--run`'s private directory, removed (when empty) after the socket.
    private_dir: Option<(PathBuf, TempPathGuard)>,
}

impl Bound {
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The NBD URI, written as nbdkit writes it: `nbd+unix:///EXPORT?socket=PATH` or
    /// `nbd://HOST:PORT[/EXPORT]`, with the export name and path percent-encoded. With `tls`
    /// (TLS required), the URI a libnbd client can use as it is: `nbds+unix://` or `nbds://`,
    /// the PSK username before the host and the keys' path in the query
    /// (`nbds+unix://alice@/?socket=PATH&tls-psk-file=FILE`, `…&tls-certificates=DIR`).
    pub fn uri(&self, export: &str, tls: Option<&ServerTls>) -> String {
        let s = if tls.is_some() { "s" } else { "" };
        let user = tls
            .and_then(|t| t.uri_user())
            .map_or_else(String::new, |u| format!("{}@", quote_user(u.as_bytes())));
        let keys = tls.map(|t| {
            let (name, path) = t.uri_keys();
            format!("{name}={}", quote(path.as_os_str().as_bytes()))
        });
        match &self.endpoint {
            Some(Endpoint::Unix(path)) => {
                let mut uri = format!(
                    "nbd{s}+unix://{user}/{}?socket={}",
                    quote(export.as_bytes()),
                    quote(path.as_os_str().as_bytes())
                );
                if let Some(k) = keys {
                    uri = format!("{uri}&{k}");
                }
                uri
            }
            Some(Endpoint::Tcp { host, port }) => {
                let mut uri = format!("nbd{s}://{user}{host}:{port}");
                if !export.is_empty() || keys.is_some() {
                    uri = format!("{uri}/{}", quote(export.as_bytes()));
                }
                if let Some(k) = keys {
                    uri = format!("{uri}?{k}");
                }
                uri
            }
            None => String::from("(a socket-activated socket without a name)"),
        }
    }

    /// The TCP listeners' addresses (empty when serving on Unix sockets only).
    pub fn tcp_addresses(&self) -> Vec<String> {
        self.listeners
            .iter()
            .filter_map(|l| match l {
                Listener::Tcp(t) => Some(
                    t.local_addr()
                        .map_or_else(|_| "TCP".into(), |a| a.to_string()),
                ),
                Listener::Unix(_) => None,
            })
            .collect()
    }

    /// The Unix socket's path, for `$unixsocket`.
    pub fn unix_path(&self) -> Option<String> {
        match &self.endpoint {
            Some(Endpoint::Unix(p)) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        }
    }

    /// The TCP port, for `$port`.
    pub fn tcp_port(&self) -> Option<u16> {
        match &self.endpoint {
            Some(Endpoint::Tcp { port, .. }) => Some(*port),
            _ => None,
        }
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some((path, dev, ino, _guard)) = self.socket.take() {
            let ours =
                std::fs::symlink_metadata(&path).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
            if ours {
                let _ = std::fs::remove_file(&path);
            }
        }
        if let Some((dir, _guard)) = self.private_dir.take() {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// Percent-encodes a URI's user name: all but unreserved characters.
fn quote_user(bytes: &[u8]) -> String {
    quote(bytes).replace('/', "%2F")
}

/// Percent-encodes all but unreserved characters and `/`, as nbdkit does.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Opens the listeners `opts` ask for (socket activation first).
pub fn listen(opts: &ServeOptions) -> anyhow::Result<Bound> {
    let bound = if let Some(b) = activated()? {
        b
    } else if let Some(path) = &opts.socket {
        bind_unix(path, None)?
    } else if let Some(spec) = &opts.tcp {
        let (host, addrs) = parse_tcp(spec)?;
        bind_tcp(host, &addrs)?
    } else if opts.run.is_some() {
        let dir = tempfile::Builder::new()
            .prefix("linuxdisk-mk")
            .tempdir_in(crate::cleanup::temp_dir())
            .with_context(|| {
                format!(
                    "creating a private socket directory in {}",
                    crate::cleanup::temp_dir().display()
                )
            })?
            .keep();
        let guard = cleanup::register(dir.clone());
        let dir = (dir, guard);
        let mut b = bind_unix(&dir.0.join("socket"), Some(&dir.0));
        if let Ok(b) = &mut b {
            b.private_dir = Some(dir);
        } else {
            let _ = std::fs::remove_dir(&dir.0);
        }
        b?
    } else {
        bind_tcp(
            Ipv4Addr::LOCALHOST.to_string(),
            &[SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT))],
        )?
    };
    for l in &bound.listeners {
        match l {
            Listener::Unix(l) => l.set_nonblocking(true),
            Listener::Tcp(l) => l.set_nonblocking(true),
        }
        .with_context(|| format!("making {} non-blocking", l.describe()))?;
    }
    Ok(bound)
}

/// Socket activation: the listening sockets from fd 3 on, when LISTEN_PID is our pid.
fn activated() -> anyhow::Result<Option<Bound>> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok());
    if !ours || count.unwrap_or(0) == 0 {
        return Ok(None);
    }
    let mut fds = listenfd::ListenFd::from_env();
    let mut listeners = Vec::new();
    for i in 0..fds.len() {
        let fd = 3 + i;
        let l = if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            Listener::Tcp(l)
        } else if let Ok(Some(l)) = fds.take_unix_listener(i) {
            Listener::Unix(l)
        } else {
            bail!("socket activation: fd {fd} is not a TCP or Unix stream socket");
        };
        listeners.push(l);
    }
    let endpoint = match &listeners[0] {
        Listener::Unix(l) => l
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| Endpoint::Unix(p.to_path_buf()))),
        Listener::Tcp(l) => l.local_addr().ok().map(|a| Endpoint::Tcp {
            host: uri_host(a.ip()),
            port: a.port(),
        }),
    };
    Ok(Some(Bound {
        listeners,
        endpoint,
        socket: None,
        private_dir: None,
    }))
}

/// Binds a Unix socket at `path` with mode 0600 (umask 0177 around bind); refuses a path
/// that exists. `private`: the directory we made for it (messages differ).
fn bind_unix(path: &Path, private: Option<&Path>) -> anyhow::Result<Bound> {
    use rustix::fs::Mode;
    let what = if private.is_some() {
        "private socket"
    } else {
        "--socket"
    };
    let path = std::path::absolute(path).with_context(|| format!("{what} {}", path.display()))?;
    let exists = || {
        anyhow::anyhow!(
            "{what} {}: already exists (remove it or choose another path)",
            path.display()
        )
    };
    if std::fs::symlink_metadata(&path).is_ok() {
        return Err(exists());
    }
    let old = rustix::process::umask(Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(&path);
    rustix::process::umask(old);
    let listener = match bound {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(exists()),
        Err(e) => {
            return Err(e).with_context(|| format!("listening on Unix socket {}", path.display()))
        }
    };
    let guard = cleanup::register(path.clone());
    let meta = std::fs::symlink_metadata(&path)
        .with_context(|| format!("listening on Unix socket {}", path.display()))?;
    Ok(Bound {
        listeners: vec![Listener::Unix(listener)],
        endpoint: Some(Endpoint::Unix(path.clone())),
        socket: Some((path, meta.dev(), meta.ino(), guard)),
        private_dir: None,
    })
}

/// Parses `--tcp [ADDR:]PORT`: `PORT` (127.0.0.1), `[IPV6]:PORT`, `IPV4:PORT` or
/// `HOST:PORT` (every address HOST resolves to). Returns the host as URIs write it.
pub fn parse_tcp(spec: &str) -> anyhow::Result<(String, Vec<SocketAddr>)> {
    let port = |p: &str| {
        p.parse::<u16>()
            .with_context(|| format!("--tcp {spec}: invalid port {p:?}"))
    };
    if let Ok(p) = spec.parse::<u16>() {
        return Ok((
            Ipv4Addr::LOCALHOST.to_string(),
            vec![SocketAddr::from((Ipv4Addr::LOCALHOST, p))],
        ));
    }
    if let Some(rest) = spec.strip_prefix('[') {
        let Some((addr, p)) = rest.split_once("]:") else {
            bail!("--tcp {spec}: expected [IPV6-ADDRESS]:PORT");
        };
        let ip: std::net::Ipv6Addr = addr
            .parse()
            .with_context(|| format!("--tcp {spec}: invalid IPv6 address {addr:?}"))?;
        let p = port(p)?;
        return Ok((format!("[{ip}]"), vec![SocketAddr::from((ip, p))]));
    }
    let Some((host, p)) = spec.rsplit_once(':') else {
        bail!("--tcp {spec}: expected PORT or ADDRESS:PORT");
    };
    if host.is_empty() {
        bail!("--tcp {spec}: missing address before ':' (give PORT alone for 127.0.0.1)");
    }
    if host.contains(':') {
        bail!("--tcp {spec}: write an IPv6 address in brackets: [ADDRESS]:PORT");
    }
    let p = port(p)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((uri_host(ip), vec![SocketAddr::new(ip, p)]));
    }
    let addrs: Vec<SocketAddr> = (host, p)
        .to_socket_addrs()
        .with_context(|| format!("--tcp {spec}: resolving {host}"))?
        .collect();
    if addrs.is_empty() {
        bail!("--tcp {spec}: {host} has no address");
    }
    Ok((host.to_string(), addrs))
}

fn uri_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

/// Binds every address (only the first for port 0, so that all share one port); addresses
/// the machine lacks are skipped as long as one binds.
fn bind_tcp(host: String, addrs: &[SocketAddr]) -> anyhow::Result<Bound> {
    let addrs = if addrs.first().is_some_and(|a| a.port() == 0) {
        &addrs[..1]
    } else {
        addrs
    };
    let mut listeners = Vec::new();
    let mut first_err = None;
    for a in addrs {
        match TcpListener::bind(a) {
            Ok(l) => listeners.push(Listener::Tcp(l)),
            Err(e) => {
                let skippable = matches!(e.kind(), io::ErrorKind::AddrNotAvailable)
                    || e.raw_os_error() == Some(rustix::io::Errno::AFNOSUPPORT.raw_os_error());
                if !skippable || addrs.len() == 1 {
                    return Err(e).with_context(|| format!("listening on TCP {a}"));
                }
                first_err.get_or_insert((*a, e));
            }
        }
    }
    let port = match listeners.first() {
        Some(Listener::Tcp(l)) => l.local_addr().context("the TCP listener's address")?.port(),
        _ => {
            let (a, e) = first_err.expect("an error for every address");
            return Err(e).with_context(|| format!("listening on TCP {a}"));
        }
    };
    Ok(Bound {
        listeners,
        endpoint: Some(Endpoint::Tcp { host, port }),
        socket: None,
        private_dir: None,
    })
}
