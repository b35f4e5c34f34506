//! One TLS connection: the server side of the handshake, then the session's bytes, read by the
//! connection's thread and written by its worker threads at the same time.
//!
//! An OpenSSL stream cannot be used by two threads at once, and a blocking one would hold its
//! lock while waiting for the network. So the socket is non-blocking, every OpenSSL call is
//! made under one lock held only for that call, and the waiting (poll for readable or
//! writable, as OpenSSL asks) happens with the lock released. A reader waiting for a request
//! thus never keeps a worker from sending a reply, nor the other way round. Replies stay whole
//! because the session writes each one under its own writer lock. OpenSSL reads the socket
//! only in `SSL_read` once the handshake is done (renegotiation is off), so a reader told to
//! wait for more bytes can wait on the socket.

use std::io::{self, IoSlice, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use openssl::ssl::{ErrorCode, Ssl, SslAcceptor, SslStream};
use rustix::event::{poll, PollFd, PollFlags};

use crate::nbd::server::{stalled, Stream};

/// Most plaintext bytes handed to OpenSSL in one call (the lock is held that long).
const WRITE_CHUNK: usize = 256 << 10;
/// A TLS record's most plaintext: small pieces of a reply are gathered up to this.
const RECORD: usize = 16 << 10;

/// The TLS session of one connection, shared by its reader and writer.
pub struct TlsConn {
    ssl: Mutex<SslStream<Stream>>,
    /// The same socket, to wait on without the lock.
    sock: Stream,
}

/// Runs the server side of the TLS handshake on `stream` (made non-blocking), giving up at
/// `deadline` (the NBD handshake's).
pub fn accept(
    stream: Stream,
    acceptor: &SslAcceptor,
    deadline: Instant,
) -> io::Result<Arc<TlsConn>> {
    stream.set_nonblocking(true)?;
    let sock = stream.try_clone()?;
    let ssl = Ssl::new(acceptor.context()).map_err(|e| tls_error("starting TLS", e.into()))?;
    let mut s = SslStream::new(ssl, stream).map_err(|e| tls_error("starting TLS", e.into()))?;
    loop {
        match s.accept() {
            Ok(()) => break,
            Err(e) => match e.code() {
                ErrorCode::WANT_READ => {
                    wait(&sock, PollFlags::IN, Some(deadline), "the TLS handshake")?
                }
                ErrorCode::WANT_WRITE => {
                    wait(&sock, PollFlags::OUT, Some(deadline), "the TLS handshake")?
                }
                _ => return Err(tls_error("TLS handshake", e)),
            },
        }
    }
    Ok(Arc::new(TlsConn {
        ssl: Mutex::new(s),
        sock,
    }))
}

impl TlsConn {
    fn lock(&self) -> MutexGuard<'_, SslStream<Stream>> {
        crate::sync::lock(&self.ssl)
    }

    /// A reader; `deadline`: reads give up then (during the NBD handshake).
    pub fn reader(self: &Arc<Self>, deadline: Option<Instant>) -> TlsReader {
        TlsReader {
            conn: Arc::clone(self),
            deadline,
        }
    }

    /// A writer; a write that makes no progress for `stall` fails.
    pub fn writer(self: &Arc<Self>, stall: Duration) -> TlsWriter {
        TlsWriter {
            conn: Arc::clone(self),
            stall,
        }
    }

    /// The PSK identity the client used, if any.
    pub fn psk_identity(&self) -> Option<String> {
        let s = self.lock();
        s.ssl()
            .psk_identity()
            .map(|id| String::from_utf8_lossy(id).into_owned())
    }

    /// Sends close_notify if the socket takes it now (the connection is ending anyway).
    pub fn close(&self) {
        let _ = self.lock().shutdown();
    }
}

/// Waits until `sock` is ready for `flags` (or has an error or hang-up, which the next
/// OpenSSL call reports), or fails at `deadline`.
fn wait(sock: &Stream, flags: PollFlags, deadline: Option<Instant>, what: &str) -> io::Result<()> {
    loop {
        let timeout = match deadline {
            None => None,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{what}: timed out"),
                    ));
                }
                Some(
                    rustix::event::Timespec::try_from(left).unwrap_or(rustix::event::Timespec {
                        tv_sec: i64::MAX,
                        tv_nsec: 0,
                    }),
                )
            }
        };
        let mut fds = [PollFd::new(sock, flags)];
        match poll(&mut fds, timeout.as_ref()) {
            Ok(0) => continue, // timed out: the deadline check above decides
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn tls_error(what: &str, e: openssl::ssl::Error) -> io::Error {
    if let Some(io) = e.io_error() {
        return io::Error::new(io.kind(), format!("{what}: {io}"));
    }
    let detail = match e.ssl_error() {
        Some(stack) => stack
            .errors()
            .iter()
            .map(|x| x.reason().unwrap_or("unknown error").to_string())
            .collect::<Vec<_>>()
            .join("; "),
        None => e.to_string(),
    };
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {detail}"))
}

/// The reading side of a [`TlsConn`].
pub struct TlsReader {
    conn: Arc<TlsConn>,
    /// While set, no read waits past it.
    pub deadline: Option<Instant>,
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let r = self.conn.lock().ssl_read(buf);
            match r {
                Ok(n) => return Ok(n),
                Err(e) => match e.code() {
                    ErrorCode::ZERO_RETURN => return Ok(0),
                    ErrorCode::WANT_READ => {
                        wait(&self.conn.sock, PollFlags::IN, self.deadline, "reading")?
                    }
                    ErrorCode::WANT_WRITE => {
                        wait(&self.conn.sock, PollFlags::OUT, self.deadline, "reading")?
                    }
                    ErrorCode::SYSCALL if e.io_error().is_none() => return Ok(0),
                    _ => return Err(tls_error("TLS", e)),
                },
            }
        }
    }
}

/// The writing side of a [`TlsConn`].
pub struct TlsWriter {
    conn: Arc<TlsConn>,
    stall: Duration,
}

impl TlsWriter {
    /// Hands `buf` to OpenSSL until it takes some of it; after a WANT_WRITE, the same bytes are
    /// offered again, as OpenSSL requires.
    fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let r = self.conn.lock().ssl_write(buf);
            match r {
                Ok(n) => return Ok(n),
                Err(e) => {
                    let flags = match e.code() {
                        ErrorCode::WANT_WRITE => PollFlags::OUT,
                        ErrorCode::WANT_READ => PollFlags::IN,
                        _ => return Err(tls_error("TLS", e)),
                    };
                    let deadline = Instant::now() + self.stall;
                    wait(&self.conn.sock, flags, Some(deadline), "sending").map_err(|e| match e
                        .kind()
                    {
                        io::ErrorKind::TimedOut => stalled(self.stall),
                        _ => e,
                    })?;
                }
            }
        }
    }
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.write_some(&buf[..buf.len().min(WRITE_CHUNK)])
    }

    /// A reply's header and its data go out in one record when the header is small, rather
    /// than a record of 16 bytes and then the data.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut bufs = bufs.iter().filter(|b| !b.is_empty());
        let Some(first) = bufs.next() else {
            return Ok(0);
        };
        if first.len() >= RECORD {
            return self.write(first);
        }
        let mut gathered = Vec::with_capacity(RECORD);
        gathered.extend_from_slice(first);
        for b in bufs {
            let n = b.len().min(RECORD - gathered.len());
            gathered.extend_from_slice(&b[..n]);
            if gathered.len() == RECORD {
                break;
            }
        }
        self.write_some(&gathered)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
