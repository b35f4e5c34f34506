//! The transmission phase of one connection: the calling thread reads and validates requests
//! (and WRITE payloads), up to four worker threads answer them (`reply::answer`) and write each
//! whole reply under the writer's lock; the payload bytes in flight are bounded per connection
//! and across all connections (`budget`).

use crate::sync::lock;
use std::io::{self, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;

use super::budget::{self, Budget, Grant};
use super::buffer::Buffer;
use super::handshake::Negotiated;
use super::proto::EIO;
use super::reply::{answer, Reply};
use super::request::{self, Command, Limits, Rejection};
use super::Export;

/// Worker threads per connection, started as requests arrive.
pub const MAX_WORKERS: usize = 4;
/// Requests waiting for a worker before the reader stops reading.
const QUEUE_DEPTH: usize = 64;

/// The transmission phase until the client sends NBD_CMD_DISC or the read side reaches EOF
/// (the server shuts the read side down on SIGTERM: finish the replies in flight, then
/// return). Replies are written through the writer; several requests may be in flight.
///
/// If the client stops reading replies, the workers block writing and then the reader stops
/// reading; shutting the socket down both ways unblocks everything.
pub fn transmission(
    mut reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    export: Arc<dyn Export>,
    neg: &Negotiated,
) -> io::Result<()> {
    let lim = Limits {
        size: export.size(),
        writable: export.writable(),
        structured: neg.structured,
        block_status: neg.structured && neg.base_allocation,
    };
    let conn = Conn {
        export,
        structured: neg.structured,
        writer: Mutex::new(writer),
        write_error: Mutex::new(None),
        broken: AtomicBool::new(false),
        budget: Budget::new(budget::PER_CONNECTION),
    };
    let (tx, rx) = sync_channel::<Job<'_>>(QUEUE_DEPTH);
    let (c, rx, idle) = (&conn, &Mutex::new(rx), &AtomicUsize::new(0));
    let read = thread::scope(|s| {
        let mut workers = 0;
        let result = loop {
            if c.broken.load(Ordering::Relaxed) {
                break Ok(());
            }
            let job = match next_job(&mut *reader, &lim, &c.budget) {
                Ok(Some(job)) => job,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            if workers < MAX_WORKERS && idle.load(Ordering::SeqCst) == 0 {
                let spawned = thread::Builder::new()
                    .name("nbd-worker".into())
                    .spawn_scoped(s, move || worker(c, rx, idle));
                match spawned {
                    Ok(_) => workers += 1,
                    Err(e) if workers == 0 => break Err(context(e, "starting a worker thread")),
                    Err(_) => {}
                }
            }
            if tx.send(job).is_err() {
                break Err(io::Error::other(
                    "the connection's worker threads have stopped",
                ));
            }
        };
        drop(tx);
        result
    });
    let written = lock(&conn.write_error).take();
    match (read, written) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(e)) => Err(context(e, "writing an NBD reply")),
        (Ok(()), None) => Ok(()),
    }
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

enum Work {
    Run(Command, Buffer),
    Refuse(Rejection),
}

/// A request handed to the workers, with the bytes it holds from the connection's budget and
/// from the global one.
struct Job<'a> {
    cookie: u64,
    work: Work,
    _grants: (Grant<'a>, Grant<'static>),
}

/// Takes `n` bytes from the connection's budget, then from the global one.
fn acquire(budget: &Budget, n: u64) -> (Grant<'_>, Grant<'static>) {
    let own = budget.acquire(n);
    (own, budget::GLOBAL.acquire(n))
}

/// Reads the next request (and its payload). `Ok(None)`: DISC or EOF.
fn next_job<'a>(r: &mut dyn Read, lim: &Limits, budget: &'a Budget) -> io::Result<Option<Job<'a>>> {
    let Some(h) = request::read_header(r).map_err(|e| context(e, "reading NBD requests"))? else {
        return Ok(None);
    };
    let (work, grants) = match request::validate(&h, lim) {
        Ok(Command::Disc) => return Ok(None),
        Ok(cmd @ Command::Write { len, .. }) => {
            let grants = acquire(budget, len as u64);
            (Work::Run(cmd, request::read_payload(r, len)?), grants)
        }
        Ok(cmd @ Command::Read { len, .. }) => (
            Work::Run(cmd, Buffer::default()),
            acquire(budget, len as u64),
        ),
        Ok(cmd) => (Work::Run(cmd, Buffer::default()), acquire(budget, 0)),
        Err(rejection) => {
            if h.has_payload() {
                request::discard(r, h.len as u64)?;
            }
            (Work::Refuse(rejection), acquire(budget, 0))
        }
    };
    Ok(Some(Job {
        cookie: h.cookie,
        work,
        _grants: grants,
    }))
}

fn worker(conn: &Conn, rx: &Mutex<Receiver<Job<'_>>>, idle: &AtomicUsize) {
    loop {
        idle.fetch_add(1, Ordering::SeqCst);
        let job = lock(rx).recv();
        idle.fetch_sub(1, Ordering::SeqCst);
        let Ok(job) = job else { return };
        let (cookie, structured) = (job.cookie, conn.structured);
        // A panicking export fails its request, not the connection (the hook still reports it).
        let reply = panic::catch_unwind(AssertUnwindSafe(|| match job.work {
            Work::Run(cmd, payload) => answer(&*conn.export, structured, cookie, cmd, &payload),
            Work::Refuse(r) => Reply::failure(structured, cookie, r.errno, &r.message),
        }))
        .unwrap_or_else(|_| Reply::failure(structured, cookie, EIO, "internal server error"));
        conn.send(&reply);
    }
}

/// What the workers share.
struct Conn {
    export: Arc<dyn Export>,
    structured: bool,
    writer: Mutex<Box<dyn Write + Send>>,
    write_error: Mutex<Option<io::Error>>,
    broken: AtomicBool,
    budget: Budget,
}

impl Conn {
    /// Writes `reply` whole; after a failed write, replies are dropped.
    fn send(&self, reply: &Reply) {
        let mut w = lock(&self.writer);
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = reply.write_to(&mut **w) {
            self.broken.store(true, Ordering::Relaxed);
            *lock(&self.write_error) = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbd::export::MemExport;
    use crate::nbd::proto::*;
    use std::collections::BTreeMap;

    /// A request on the wire (with `payload` for WRITE).
    fn req(flags: u16, kind: u16, cookie: u64, offset: u64, len: u32, payload: &[u8]) -> Vec<u8> {
        let h = request::Header {
            flags,
            kind,
            cookie,
            offset,
            len,
        };
        [&h.encode()[..], payload].concat()
    }

    /// A writer whose bytes the test reads afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A 64 KiB export: zeros except 0xAB in [8K, 12K) and 0xCD in [40K, 41K).
    fn export(writable: bool) -> Arc<MemExport> {
        let mut v = vec![0u8; 64 << 10];
        v[8 << 10..12 << 10].fill(0xAB);
        v[40 << 10..41 << 10].fill(0xCD);
        Arc::new(MemExport::new(v, writable))
    }

    fn neg(structured: bool, base_allocation: bool) -> Negotiated {
        Negotiated {
            structured,
            base_allocation,
            export_name: String::new(),
        }
    }

    fn run(input: Vec<u8>, e: Arc<dyn Export>, n: &Negotiated) -> (io::Result<()>, Vec<u8>) {
        let (out, r) = (Shared::default(), Box::new(io::Cursor::new(input)));
        let res = transmission(r, Box::new(out.clone()), e, n);
        let bytes = lock(&out.0).clone();
        (res, bytes)
    }

    /// A reply: simple (errno, data) or structured chunks (flags, type, payload).
    #[derive(Debug, Default)]
    struct Got {
        errno: u32,
        data: Vec<u8>,
        chunks: Vec<(u16, u16, Vec<u8>)>,
    }

    fn be32(b: &[u8]) -> u32 {
        u32::from_be_bytes(b[..4].try_into().unwrap())
    }

    /// Parses the server's output; `reads` gives the length of each simple READ reply's data.
    fn parse(mut out: &[u8], reads: &[(u64, u32)]) -> BTreeMap<u64, Got> {
        let mut got: BTreeMap<u64, Got> = BTreeMap::new();
        while !out.is_empty() {
            let cookie = u64::from_be_bytes(out[8..16].try_into().unwrap());
            let g = got.entry(cookie).or_default();
            if be32(out) == SIMPLE_REPLY_MAGIC {
                assert!(g.chunks.is_empty() && g.data.is_empty(), "twice {cookie}");
                g.errno = be32(&out[4..]);
                let n = match reads.iter().find(|r| r.0 == cookie) {
                    Some(&(_, n)) if g.errno == 0 => n as usize,
                    _ => 0,
                };
                g.data = out[16..16 + n].to_vec();
                out = &out[16 + n..];
            } else {
                assert_eq!(be32(out), STRUCTURED_REPLY_MAGIC);
                assert!(g.chunks.last().is_none_or(|c| c.0 & REPLY_FLAG_DONE == 0));
                let (flags, kind) = (be32(&out[4..]) >> 16, be32(&out[4..]) as u16);
                let n = be32(&out[16..]) as usize;
                let chunk = out[20..20 + n].to_vec();
                g.chunks.push((flags as u16, kind, chunk));
                out = &out[20 + n..];
            }
        }
        got
    }

    /// The bytes of a structured READ reply of `len` bytes at `offset` (checks coverage).
    fn assemble(g: &Got, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0x55u8; len];
        let mut covered = 0;
        assert_eq!(g.chunks.last().unwrap().0, REPLY_FLAG_DONE);
        for (_, kind, p) in &g.chunks {
            let at = (u64::from_be_bytes(p[..8].try_into().unwrap()) - offset) as usize;
            let n = match *kind {
                REPLY_TYPE_OFFSET_DATA => {
                    buf[at..at + p.len() - 8].copy_from_slice(&p[8..]);
                    p.len() - 8
                }
                REPLY_TYPE_OFFSET_HOLE => {
                    let n = be32(&p[8..]) as usize;
                    buf[at..at + n].fill(0);
                    n
                }
                k => panic!("unexpected chunk type {k}"),
            };
            covered += n;
        }
        assert_eq!(covered, len);
        buf
    }

    fn structured_errno(g: &Got) -> u32 {
        let (flags, kind, p) = &g.chunks[0];
        let want = (REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 1);
        assert_eq!((*flags, *kind, g.chunks.len()), want);
        be32(p)
    }

    #[test]
    fn simple_replies_and_every_refusal() {
        let e = export(false);
        let input = [
            req(0, CMD_READ, 1, 8 << 10, 8192, &[]),
            req(0, CMD_READ, 2, 64 << 10, 0, &[]),
            req(0, CMD_WRITE, 3, 0, 5, b"hello"),
            req(0, CMD_READ, 4, (64 << 10) - 1, 2, &[]),
            req(0, CMD_READ, 5, 0, MAX_PAYLOAD + 1, &[]),
            req(0, 42, 6, 0, 0, &[]),
            req(CMD_FLAG_DF, CMD_READ, 7, 0, 1, &[]),
            req(0, CMD_BLOCK_STATUS, 8, 0, 512, &[]),
            req(0, CMD_TRIM, 9, 0, 512, &[]),
            req(0, CMD_FLUSH, 10, 0, 0, &[]),
            req(0, CMD_CACHE, 11, 0, 4096, &[]),
            req(0, CMD_DISC, 12, 0, 0, &[]),
            req(0, CMD_READ, 13, 0, 1, &[]), // after DISC: never read
        ]
        .concat();
        let (res, out) = run(input, e.clone(), &neg(false, false));
        res.unwrap();
        let got = parse(&out, &[(1, 8192), (2, 0)]);
        assert!(got.keys().copied().eq(1..=11));
        assert_eq!(got[&1].data, e.content()[8 << 10..16 << 10]);
        let errnos: Vec<u32> = got.values().map(|g| g.errno).collect();
        let (inval, perm) = (EINVAL, EPERM);
        assert_eq!(
            errnos,
            [0, 0, perm, inval, inval, inval, inval, inval, perm, 0, 0]
        );
        assert_eq!(
            e.content()[..5],
            [0; 5],
            "a read-only export is not written"
        );
    }

    #[test]
    fn structured_reads_holes_df_and_errors() {
        let input = [
            req(0, CMD_READ, 1, 0, 64 << 10, &[]),
            req(CMD_FLAG_DF, CMD_READ, 2, 0, 64 << 10, &[]),
            req(0, CMD_READ, 3, 8 << 10, 100, &[]),
            req(0, CMD_READ, 4, 0, 0, &[]),
            req(0, CMD_READ, 5, 1 << 20, 1, &[]),
            req(0, CMD_WRITE, 6, 0, 3, b"abc"),
            req(0, CMD_FLUSH, 7, 0, 0, &[]),
        ]
        .concat();
        let e = export(false);
        let (res, out) = run(input, e.clone(), &neg(true, false));
        res.unwrap();
        let got = parse(&out, &[]);
        let content = e.content();
        assert_eq!(assemble(&got[&1], 0, 64 << 10), content);
        let kinds: Vec<u16> = got[&1].chunks.iter().map(|c| c.1).collect();
        let (d, h) = (REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE);
        assert_eq!(kinds, [h, d, h, d, h]);
        assert_eq!(got[&2].chunks.len(), 1, "DF: one data chunk");
        assert_eq!(assemble(&got[&2], 0, 64 << 10), content);
        assert_eq!(assemble(&got[&3], 8 << 10, 100), [0xAB; 100]);
        assert_eq!(got[&4].chunks, [(REPLY_FLAG_DONE, REPLY_TYPE_NONE, vec![])]);
        assert_eq!(structured_errno(&got[&5]), EINVAL);
        assert_eq!(structured_errno(&got[&6]), EPERM);
        assert!(String::from_utf8_lossy(&got[&6].chunks[0].2[6..]).contains("read-only"));
        assert_eq!(
            (got[&7].errno, got[&7].chunks.len()),
            (0, 0),
            "simple success"
        );
    }

    #[test]
    fn block_status() {
        let input = [
            req(0, CMD_BLOCK_STATUS, 1, 0, 64 << 10, &[]),
            req(CMD_FLAG_REQ_ONE, CMD_BLOCK_STATUS, 2, 4096, 8192, &[]),
            req(0, CMD_BLOCK_STATUS, 3, 9 << 10, 100, &[]),
            req(0, CMD_BLOCK_STATUS, 4, 60 << 10, 8192, &[]),
        ]
        .concat();
        let (res, out) = run(input, export(false), &neg(true, true));
        res.unwrap();
        let got = parse(&out, &[]);
        let descs = |c: u64| {
            let (flags, kind, p) = &got[&c].chunks[0];
            assert_eq!((*flags, *kind), (REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS));
            assert_eq!(be32(p), BASE_ALLOCATION_ID);
            p[4..]
                .chunks(8)
                .map(|d| (be32(d), be32(&d[4..])))
                .collect::<Vec<_>>()
        };
        let hz = STATE_HOLE | STATE_ZERO;
        let k = 1024;
        let want = [
            (8 * k, hz),
            (4 * k, 0),
            (28 * k, hz),
            (4 * k, 0),
            (20 * k, hz),
        ];
        assert_eq!(descs(1), want);
        assert_eq!(descs(2), [(4096, hz)]);
        assert_eq!(descs(3), [(100, 0)]);
        assert_eq!(structured_errno(&got[&4]), EINVAL);
    }

    #[test]
    fn writes_zeroes_trims_and_refused_payloads() {
        let e = export(true);
        let big = vec![1u8; MAX_PAYLOAD as usize + 1];
        let input = [
            req(CMD_FLAG_FUA, CMD_WRITE, 1, 100, 5, b"hello"),
            req(0, CMD_WRITE, 2, (64 << 10) - 2, 4, b"wxyz"),
            req(0, CMD_WRITE, 3, 0, MAX_PAYLOAD + 1, &big),
            req(CMD_FLAG_NO_HOLE, CMD_WRITE_ZEROES, 4, 8 << 10, 1024, &[]),
            req(0, CMD_TRIM, 5, 40 << 10, 1024, &[]),
            req(0, CMD_WRITE, 6, 0, 0, &[]),
            req(0, CMD_FLUSH, 7, 0, 0, &[]),
            req(0, CMD_FLUSH, 8, 1, 0, &[]),
        ]
        .concat();
        let (res, out) = run(input, e.clone(), &neg(false, false));
        res.unwrap();
        let errnos: Vec<u32> = parse(&out, &[]).values().map(|g| g.errno).collect();
        assert_eq!(errnos, [0, ENOSPC, EINVAL, 0, 0, 0, 0, EINVAL]);
        let c = e.content();
        assert_eq!(&c[100..105], b"hello");
        assert_eq!(c[(64 << 10) - 2..], [0, 0]);
        assert_eq!(c[8 << 10..9 << 10], [0; 1024]);
        assert_eq!(c[9 << 10..10 << 10], [0xAB; 1024]);
        assert!(c[40 << 10..41 << 10].iter().all(|&b| b == 0));
    }

    #[test]
    fn protocol_violations_end_the_connection_after_pending_replies() {
        let good = req(0, CMD_READ, 1, 0, 16, &[]);
        let mut bad = req(0, CMD_READ, 2, 0, 16, &[]);
        bad[0] ^= 0xff;
        let input = [good.clone(), bad].concat();
        let (res, out) = run(input, export(false), &neg(false, false));
        assert!(res.unwrap_err().to_string().contains("magic"));
        assert_eq!(parse(&out, &[(1, 16)]).len(), 1);
        // EOF inside a header, inside a payload, inside a refused payload.
        let w = req(0, CMD_WRITE, 3, 0, 8, b"1234");
        for (input, writable) in [(&good[..20], false), (&w[..], true), (&w[..], false)] {
            let (res, _) = run(input.to_vec(), export(writable), &neg(false, false));
            assert_eq!(res.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        }
        // EOF between requests is a normal end.
        assert!(run(good, export(false), &neg(true, true)).0.is_ok());
    }

    #[test]
    fn many_requests_in_flight_each_answered_once() {
        let e = export(false);
        let n = 500u64;
        let input: Vec<u8> = (0..n)
            .flat_map(|i| req(0, CMD_READ, i, (i * 512) % (60 << 10), 4096, &[]))
            .collect();
        let reads: Vec<(u64, u32)> = (0..n).map(|i| (i, 4096)).collect();
        let (res, out) = run(input, e.clone(), &neg(false, false));
        res.unwrap();
        let got = parse(&out, &reads);
        assert_eq!(got.len(), n as usize);
        let c = e.content();
        for (i, g) in got {
            let off = ((i * 512) % (60 << 10)) as usize;
            assert_eq!(g.data, c[off..off + 4096], "cookie {i}");
        }
    }

    /// An export that panics on reads.
    struct Panicky;
    impl Export for Panicky {
        fn size(&self) -> u64 {
            4096
        }
        fn read_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
            panic!("export bug (expected by the test)")
        }
        fn extents(&self, _: u64, len: u64) -> io::Result<Vec<crate::nbd::Extent>> {
            Ok(vec![crate::nbd::Extent { len, flags: 0 }])
        }
    }

    #[test]
    fn a_panicking_export_fails_requests_not_the_connection() {
        let input = (0..20).flat_map(|i| req(0, CMD_READ, i, 0, 512, &[]));
        let input: Vec<u8> = input.collect();
        let (res, out) = run(input, Arc::new(Panicky), &neg(true, false));
        res.unwrap();
        let got = parse(&out, &[]);
        assert_eq!(got.len(), 20);
        assert!(got.values().all(|g| structured_errno(g) == EIO));
    }
}
