//! One client, start to end: the handshake within [`HANDSHAKE_TIMEOUT`] (greeting, option
//! haggling, and with TLS the STARTTLS, the TLS handshake and the haggling again inside it),
//! a place among the sessions, then the transmission phase over the socket or the TLS session.

use std::io::{self, BufReader, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::listen::Stream;
use super::registry::Registry;
use crate::nbd::handshake::{greet, negotiate, ExportInfo, Outcome, Tls};
use crate::nbd::session::transmission;
use crate::nbd::tls::{self, ServerTls, TlsMode};
use crate::nbd::Export;

/// A client must finish the handshake (TLS included) within this long of connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply that the client takes no byte of for this long ends the connection: a client that
/// stops reading must not hold its share of the server's memory for ever.
pub const REPLY_STALL: Duration = Duration::from_secs(60);

/// What every connection shares.
pub struct Shared {
    pub export: Arc<dyn Export>,
    pub info: ExportInfo,
    pub tls: Option<ServerTls>,
    pub conns: Arc<Registry>,
}

/// Serves connection `id` (`peer`, for messages) on `stream` until the client goes or the
/// server stops.
pub fn connection(stream: Stream, id: u64, peer: &str, sh: &Shared) -> io::Result<()> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    stream.set_timeouts(Some(HANDSHAKE_TIMEOUT))?;
    let mut reader = BufReader::new(Deadline {
        stream: stream.try_clone()?,
        deadline: Some(deadline),
    });
    let mut writer = stream;
    let Some(flags) = greet(&mut reader, &mut writer).map_err(in_handshake)? else {
        return Ok(());
    };
    let tls_state = match &sh.tls {
        None => Tls::Off,
        Some(t) if t.mode() == TlsMode::Require => Tls::Required,
        Some(_) => Tls::Offered,
    };
    let mut admit = || {
        let admitted = sh.conns.establish(id);
        if let Err(why) = &admitted {
            crate::progress::line(&format!("{peer}: refused: {why}"));
        }
        admitted
    };
    let export = &*sh.export;
    match negotiate(
        &mut reader,
        &mut writer,
        export,
        &sh.info,
        flags,
        tls_state,
        &mut admit,
    )
    .map_err(in_handshake)?
    {
        Outcome::Ended => Ok(()),
        Outcome::Transmit(neg) => {
            reader.get_mut().deadline = None;
            writer.set_timeouts(None)?;
            writer.set_write_timeout(Some(REPLY_STALL))?;
            let writer = StallGuard(writer);
            transmission(
                Box::new(reader),
                Box::new(writer),
                Arc::clone(&sh.export),
                &neg,
            )
        }
        Outcome::StartTls => {
            if !reader.buffer().is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the client sent bytes after NBD_OPT_STARTTLS before the TLS handshake",
                ));
            }
            drop(reader);
            let acceptor = sh.tls.as_ref().expect("STARTTLS only with TLS").acceptor();
            let conn = tls::accept(writer, acceptor, deadline).map_err(in_handshake)?;
            let mut reader = BufReader::new(conn.reader(Some(deadline)));
            let mut writer = conn.writer(HANDSHAKE_TIMEOUT);
            let outcome = negotiate(
                &mut reader,
                &mut writer,
                export,
                &sh.info,
                flags,
                Tls::Active,
                &mut admit,
            )
            .map_err(in_handshake)?;
            let result = match outcome {
                Outcome::Transmit(neg) => {
                    reader.get_mut().deadline = None;
                    let writer = conn.writer(REPLY_STALL);
                    transmission(
                        Box::new(reader),
                        Box::new(writer),
                        Arc::clone(&sh.export),
                        &neg,
                    )
                }
                Outcome::Ended | Outcome::StartTls => Ok(()),
            };
            conn.close();
            result
        }
    }
}

/// A handshake that ran out of time says so (whichever read or write noticed).
fn in_handshake(e: io::Error) -> io::Error {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        return io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "handshake not done within {} s; dropped",
                HANDSHAKE_TIMEOUT.as_secs()
            ),
        );
    }
    e
}

/// A connection's reading side; while `deadline` is set, no read waits past it (a client
/// trickling bytes cannot hold the handshake open).
struct Deadline {
    stream: Stream,
    deadline: Option<Instant>,
}

impl Read for Deadline {
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

/// The plaintext writing side in the transmission phase: the socket's send timeout
/// ([`REPLY_STALL`]) expiring means the client stopped reading.
struct StallGuard(Stream);

impl StallGuard {
    fn map(e: io::Error) -> io::Error {
        if e.kind() == io::ErrorKind::WouldBlock {
            return stalled(REPLY_STALL);
        }
        e
    }
}

/// The error of a write that made no progress for `stall`: the client stopped reading.
pub fn stalled(stall: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "the client has not taken reply bytes for {} s; dropped",
            stall.as_secs()
        ),
    )
}

impl Write for StallGuard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(Self::map)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs).map_err(Self::map)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Logs a connection's end unless it is an ordinary disconnect.
pub fn log_connection_error(peer: &str, e: &io::Error, closing: bool, evicted: Option<usize>) {
    use io::ErrorKind::*;
    if let Some(max) = evicted {
        crate::progress::line(&format!(
            "{peer}: dropped during its handshake to make room ({max} handshakes in progress, \
             the oldest go first)"
        ));
        return;
    }
    let vanished = matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected
    );
    if !vanished && !closing {
        crate::progress::line(&format!("{peer}: {e}"));
    }
}
