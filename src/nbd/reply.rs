//! Answers to valid requests: runs a command against the export and builds its whole reply,
//! simple or as structured chunks (OFFSET_DATA, OFFSET_HOLE for zero ranges, BLOCK_STATUS,
//! ERROR, NONE), then writes it in one go.

use std::io::{self, IoSlice, Write};

use super::buffer::Buffer;
use super::proto::{self, errno_of, REPLY_FLAG_DONE, STATE_HOLE, STATE_ZERO};
use super::request::Command;
use super::Export;

/// Zero ranges shorter than this go out as data in READ replies.
const MIN_HOLE: u64 = 4096;
/// Most descriptors in one block-status reply.
const MAX_DESCRIPTORS: usize = 1 << 16;

/// Runs a validated command against `export` and builds its reply (`payload`: WRITE data).
pub fn answer(
    export: &dyn Export,
    structured: bool,
    cookie: u64,
    cmd: Command,
    payload: &[u8],
) -> Reply {
    let e = export;
    // Runs `f` unless the length is 0, then flushes for FUA.
    let run = |len: u64, fua: bool, f: &dyn Fn() -> io::Result<()>| {
        if len > 0 {
            f()?;
            if fua {
                e.flush()?;
            }
        }
        Ok(())
    };
    let (what, result) = match cmd {
        Command::Read { offset, len, df } => return read(e, structured, cookie, offset, len, df),
        Command::BlockStatus {
            offset,
            len,
            req_one,
        } => return block_status(e, cookie, offset, len, req_one),
        Command::Write { offset, fua, .. } => {
            let n = payload.len() as u64;
            ("write", run(n, fua, &|| e.write_at(payload, offset)))
        }
        Command::Trim { offset, len, fua } => {
            let n = len as u64;
            ("trim", run(n, fua, &|| e.trim(offset, n)))
        }
        Command::WriteZeroes {
            offset,
            len,
            may_trim,
            fua,
        } => {
            let n = len as u64;
            (
                "write zeroes",
                run(n, fua, &|| e.write_zeroes(offset, n, may_trim)),
            )
        }
        Command::Flush => ("flush", e.flush()),
        Command::Cache { .. } | Command::Disc => ("cache", Ok(())),
    };
    match result {
        Ok(()) => Reply::simple(cookie, 0),
        Err(err) => Reply::failure(
            structured,
            cookie,
            errno_of(&err),
            &format!("{what}: {err}"),
        ),
    }
}

/// READ: a simple reply with the data, or structured data and hole chunks (one data chunk
/// with DF). Everything is read before anything is sent, so errors are clean.
fn read(e: &dyn Export, structured: bool, cookie: u64, offset: u64, len: u32, df: bool) -> Reply {
    let mut buf = match Buffer::for_read(len as usize) {
        Ok(b) => b,
        Err(err) => {
            let msg = format!("read: no memory for {len} bytes: {err}");
            return Reply::failure(structured, cookie, errno_of(&err), &msg);
        }
    };
    if !structured {
        return match if len == 0 {
            Ok(())
        } else {
            e.read_at(&mut buf, offset)
        } {
            Ok(()) => Reply::simple_read(cookie, buf),
            Err(err) => Reply::simple(cookie, errno_of(&err)),
        };
    }
    let segments = match (len, df) {
        (0, _) => Vec::new(),
        (_, true) => vec![(0, len as u64, false)],
        (_, false) => segments(e, offset, len as u64),
    };
    for &(start, n, zero) in &segments {
        let (s, end) = (start as usize, (start + n) as usize);
        if !zero {
            if let Err(err) = e.read_at(&mut buf[s..end], offset + start) {
                return Reply::error(cookie, errno_of(&err), &format!("read: {err}"));
            }
        }
    }
    let mut reply = Reply::structured_with(buf);
    for (start, n, zero) in segments {
        if zero {
            reply.hole_chunk(cookie, offset + start, n as u32);
        } else {
            reply.data_chunk(cookie, offset + start, start as usize, n as usize);
        }
    }
    reply.done(cookie);
    reply
}

/// Splits `[offset, offset + len)` into (start within the request, length, reads as zeros)
/// runs from the export's extents; short zero runs count as data.
fn segments(e: &dyn Export, offset: u64, len: u64) -> Vec<(u64, u64, bool)> {
    fn push(v: &mut Vec<(u64, u64, bool)>, start: u64, n: u64, zero: bool) {
        match v.last_mut() {
            Some(last) if last.2 == zero => last.1 += n,
            _ => v.push((start, n, zero)),
        }
    }
    let mut raw = Vec::new();
    let mut pos = 0;
    while pos < len {
        let before = pos;
        for x in e.extents(offset + pos, len - pos).unwrap_or_default() {
            let n = x.len.min(len - pos);
            push(&mut raw, pos, n, x.flags & STATE_ZERO != 0);
            pos += n;
            if pos == len {
                break;
            }
        }
        if pos == before {
            // No usable answer: the rest is data.
            push(&mut raw, pos, len - pos, false);
            break;
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    for (start, n, zero) in raw.into_iter().filter(|r| r.1 > 0) {
        push(&mut out, start, n, zero && n >= MIN_HOLE);
    }
    out
}

/// BLOCK_STATUS for base:allocation: the export's extents, clipped to the request.
fn block_status(e: &dyn Export, cookie: u64, offset: u64, len: u32, req_one: bool) -> Reply {
    let extents = match e.extents(offset, len as u64) {
        Ok(v) => v,
        Err(err) => return Reply::error(cookie, errno_of(&err), &format!("block status: {err}")),
    };
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut total = 0u32;
    for x in extents {
        let n = x.len.min((len - total) as u64) as u32;
        let flags = x.flags & (STATE_HOLE | STATE_ZERO);
        if n == 0 {
            continue;
        }
        let full = req_one || out.len() == MAX_DESCRIPTORS;
        match out.last_mut() {
            Some(last) if last.1 == flags => last.0 += n,
            Some(_) if full => break,
            _ => out.push((n, flags)),
        }
        total += n;
        if total == len {
            break;
        }
    }
    if out.is_empty() {
        out.push((len, 0)); // status 0 ("data") is always safe
    }
    let mut reply = Reply::default();
    reply.block_status_chunk(cookie, proto::BASE_ALLOCATION_ID, &out);
    reply.done(cookie);
    reply
}

/// Where a piece of the reply lives: in the header bytes or in the data buffer.
#[derive(Debug, Clone, Copy)]
enum Piece {
    Head(usize, usize),
    Data(usize, usize),
}

/// One complete reply to one request (a simple reply, or all the chunks of a structured one),
/// ready to be written without interleaving with other replies.
#[derive(Debug, Default)]
pub struct Reply {
    head: Vec<u8>,
    data: Buffer,
    pieces: Vec<Piece>,
    /// Index into `head` of the flags field of the last chunk header, to set DONE on it.
    last_chunk_flags: Option<usize>,
}

impl Reply {
    /// A simple reply: `errno` 0 for success.
    pub fn simple(cookie: u64, errno: u32) -> Reply {
        let mut r = Reply::default();
        r.push_head(&simple_header(cookie, errno));
        r
    }

    /// A successful simple reply to a READ, carrying `data`.
    pub fn simple_read(cookie: u64, data: impl Into<Buffer>) -> Reply {
        let data = data.into();
        let mut r = Reply::simple(cookie, 0);
        let len = data.len();
        r.data = data;
        r.pieces.push(Piece::Data(0, len));
        r
    }

    /// A structured reply that is just an error chunk (with a short message), done.
    pub fn error(cookie: u64, errno: u32, message: &str) -> Reply {
        let mut r = Reply::default();
        r.error_chunk(cookie, errno, message);
        r.done(cookie);
        r
    }

    /// An error in whichever form the connection uses.
    pub fn failure(structured: bool, cookie: u64, errno: u32, message: &str) -> Reply {
        if structured {
            Reply::error(cookie, errno, message)
        } else {
            Reply::simple(cookie, errno)
        }
    }

    /// A structured reply whose content chunks refer to `data` (see [`Reply::data_chunk`]).
    pub fn structured_with(data: impl Into<Buffer>) -> Reply {
        let data = data.into();
        Reply {
            data,
            ..Reply::default()
        }
    }

    /// Adds an OFFSET_DATA chunk: the export's bytes at `offset` are `data[start..start + len]`.
    pub fn data_chunk(&mut self, cookie: u64, offset: u64, start: usize, len: usize) {
        self.chunk_header(cookie, proto::REPLY_TYPE_OFFSET_DATA, 8 + len as u32);
        self.push_head(&offset.to_be_bytes());
        self.pieces.push(Piece::Data(start, len));
    }

    /// Adds an OFFSET_HOLE chunk: `len` bytes at `offset` read as zeros.
    pub fn hole_chunk(&mut self, cookie: u64, offset: u64, len: u32) {
        self.chunk_header(cookie, proto::REPLY_TYPE_OFFSET_HOLE, 12);
        self.push_head(&offset.to_be_bytes());
        self.push_head(&len.to_be_bytes());
    }

    /// Adds a BLOCK_STATUS chunk for context `id`: `(length, flags)` descriptors.
    pub fn block_status_chunk(&mut self, cookie: u64, id: u32, extents: &[(u32, u32)]) {
        let len = 4 + 8 * extents.len() as u32;
        self.chunk_header(cookie, proto::REPLY_TYPE_BLOCK_STATUS, len);
        self.push_head(&id.to_be_bytes());
        for (l, f) in extents {
            self.push_head(&l.to_be_bytes());
            self.push_head(&f.to_be_bytes());
        }
    }

    /// Adds an ERROR chunk with `message` (clipped to the protocol's string limit).
    pub fn error_chunk(&mut self, cookie: u64, errno: u32, message: &str) {
        let msg = proto::clip_string(message).as_bytes();
        let errno = if errno == 0 { proto::EIO } else { errno };
        self.chunk_header(cookie, proto::REPLY_TYPE_ERROR, 6 + msg.len() as u32);
        self.push_head(&errno.to_be_bytes());
        self.push_head(&(msg.len() as u16).to_be_bytes());
        self.push_head(msg);
    }

    /// Marks the reply finished: DONE on the last chunk, or a NONE chunk if there is none.
    pub fn done(&mut self, cookie: u64) {
        match self.last_chunk_flags {
            Some(at) => {
                let flags = u16::from_be_bytes([self.head[at], self.head[at + 1]]);
                self.head[at..at + 2].copy_from_slice(&(flags | REPLY_FLAG_DONE).to_be_bytes());
            }
            None => {
                self.chunk_header(cookie, proto::REPLY_TYPE_NONE, 0);
                self.done(cookie);
            }
        }
    }

    /// Total bytes on the wire.
    pub fn wire_len(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match *p {
                Piece::Head(_, n) | Piece::Data(_, n) => n,
            })
            .sum()
    }

    /// Writes the whole reply to `w` (vectored, so header and data go out together), then
    /// flushes `w`.
    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = self
            .pieces
            .iter()
            .map(|p| match *p {
                Piece::Head(s, n) => IoSlice::new(&self.head[s..s + n]),
                Piece::Data(s, n) => IoSlice::new(&self.data[s..s + n]),
            })
            .collect();
        let mut bufs = &mut slices[..];
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            match w.write_vectored(bufs) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the client stopped accepting reply bytes",
                    ))
                }
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        w.flush()
    }

    fn chunk_header(&mut self, cookie: u64, kind: u16, len: u32) {
        self.last_chunk_flags = Some(self.head.len() + 4);
        let mut h = [0u8; 20];
        h[0..4].copy_from_slice(&proto::STRUCTURED_REPLY_MAGIC.to_be_bytes());
        h[6..8].copy_from_slice(&kind.to_be_bytes());
        h[8..16].copy_from_slice(&cookie.to_be_bytes());
        h[16..20].copy_from_slice(&len.to_be_bytes());
        self.push_head(&h);
    }

    /// Appends header bytes, extending the previous header piece when it is adjacent.
    fn push_head(&mut self, bytes: &[u8]) {
        let start = self.head.len();
        self.head.extend_from_slice(bytes);
        if let Some(Piece::Head(s, n)) = self.pieces.last_mut() {
            if *s + *n == start {
                *n += bytes.len();
                return;
            }
        }
        self.pieces.push(Piece::Head(start, bytes.len()));
    }
}

fn simple_header(cookie: u64, errno: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&proto::SIMPLE_REPLY_MAGIC.to_be_bytes());
    h[4..8].copy_from_slice(&errno.to_be_bytes());
    h[8..16].copy_from_slice(&cookie.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(r: &Reply) -> Vec<u8> {
        let mut v = Vec::new();
        r.write_to(&mut v).unwrap();
        assert_eq!(v.len(), r.wire_len());
        v
    }

    fn be16(b: &[u8]) -> u16 {
        u16::from_be_bytes(b[..2].try_into().unwrap())
    }
    fn be32(b: &[u8]) -> u32 {
        u32::from_be_bytes(b[..4].try_into().unwrap())
    }
    fn be64(b: &[u8]) -> u64 {
        u64::from_be_bytes(b[..8].try_into().unwrap())
    }

    #[test]
    fn error_chunk_is_done_and_carries_message() {
        let v = bytes(&Reply::error(5, proto::EINVAL, "bad"));
        assert_eq!(be32(&v), proto::STRUCTURED_REPLY_MAGIC);
        assert_eq!(be16(&v[4..]), REPLY_FLAG_DONE);
        assert_eq!(be16(&v[6..]), proto::REPLY_TYPE_ERROR);
        assert_eq!(be64(&v[8..]), 5);
        assert_eq!(be32(&v[16..]), 9);
        assert_eq!(be32(&v[20..]), proto::EINVAL);
        assert_eq!(be16(&v[24..]), 3);
        assert_eq!(&v[26..], b"bad");
        // A zero errno is never sent in an error chunk; long messages are clipped.
        let v = bytes(&Reply::error(5, 0, &"x".repeat(10_000)));
        assert_eq!(be32(&v[20..]), proto::EIO);
        assert_eq!(be16(&v[24..]) as usize, proto::MAX_STRING);
    }

    /// A writer that takes at most 3 bytes per call and is sometimes interrupted.
    struct Dribble(Vec<u8>, bool);
    impl Write for Dribble {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.1 = !self.1;
            if self.1 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = b.len().min(3);
            self.0.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_and_interrupted_writes_complete_the_reply() {
        let mut r = Reply::structured_with((0..100u8).collect::<Vec<u8>>());
        r.data_chunk(1, 0, 0, 100);
        r.done(1);
        let mut d = Dribble(Vec::new(), false);
        r.write_to(&mut d).unwrap();
        assert_eq!(d.0, bytes(&r));
        let mut full = [0u8; 10];
        let e = r.write_to(&mut &mut full[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    }

    /// An export whose I/O fails and whose extents are fixed (or fail).
    struct Fake(Option<Vec<crate::nbd::Extent>>);

    impl Export for Fake {
        fn size(&self) -> u64 {
            1 << 20
        }
        fn writable(&self) -> bool {
            true
        }
        fn read_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(5))
        }
        fn write_at(&self, _: &[u8], _: u64) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(28))
        }
        fn flush(&self) -> io::Result<()> {
            Err(io::Error::other("flush failed"))
        }
        fn extents(&self, _: u64, _: u64) -> io::Result<Vec<crate::nbd::Extent>> {
            self.0.clone().ok_or_else(|| io::Error::other("no map"))
        }
    }

    fn ext(len: u64, flags: u32) -> crate::nbd::Extent {
        crate::nbd::Extent { len, flags }
    }

    #[test]
    fn export_errors_become_nbd_errors() {
        let e = Fake(None);
        let simple = |cmd| be32(&bytes(&answer(&e, false, 1, cmd, b"x"))[4..]);
        let (offset, len) = (0, 512);
        assert_eq!(
            simple(Command::Read {
                offset,
                len,
                df: false
            }),
            proto::EIO
        );
        assert_eq!(
            simple(Command::Write {
                offset,
                len: 1,
                fua: false
            }),
            proto::ENOSPC
        );
        assert_eq!(simple(Command::Flush), proto::EIO);
        assert_eq!(
            simple(Command::Trim {
                offset,
                len,
                fua: false
            }),
            proto::EPERM
        );
        assert_eq!(simple(Command::Cache { offset, len }), 0);
        // Nothing to do: no call, no flush.
        assert_eq!(
            simple(Command::Trim {
                offset,
                len: 0,
                fua: true
            }),
            0
        );
        let v = bytes(&answer(
            &e,
            false,
            1,
            Command::Write {
                offset,
                len: 0,
                fua: true,
            },
            b"",
        ));
        assert_eq!(be32(&v[4..]), 0);
        // Structured: error chunks with messages (reads fall back to data without extents).
        let chunk = |cmd| {
            let v = bytes(&answer(&e, true, 1, cmd, b""));
            assert_eq!(be16(&v[6..]), proto::REPLY_TYPE_ERROR);
            (
                be32(&v[20..]),
                String::from_utf8_lossy(&v[26..]).into_owned(),
            )
        };
        let (errno, msg) = chunk(Command::Read {
            offset,
            len,
            df: false,
        });
        assert_eq!(errno, proto::EIO);
        assert!(msg.starts_with("read: "), "{msg}");
        let (errno, msg) = chunk(Command::BlockStatus {
            offset,
            len,
            req_one: false,
        });
        assert_eq!((errno, &msg[..]), (proto::EIO, "block status: no map"));
        let (errno, msg) = chunk(Command::Flush);
        assert_eq!((errno, &msg[..]), (proto::EIO, "flush: flush failed"));
    }

    fn descriptors(e: &Fake, len: u32, req_one: bool) -> Vec<(u32, u32)> {
        let cmd = Command::BlockStatus {
            offset: 0,
            len,
            req_one,
        };
        let v = bytes(&answer(e, true, 1, cmd, b""));
        assert_eq!(be16(&v[4..]), REPLY_FLAG_DONE);
        assert_eq!(be32(&v[20..]), proto::BASE_ALLOCATION_ID);
        v[24..]
            .chunks(8)
            .map(|d| (be32(d), be32(&d[4..])))
            .collect()
    }

    #[test]
    fn block_status_is_clipped_merged_and_never_empty() {
        let e = Fake(Some(vec![ext(0, 1), ext(600, 3), ext(600, 7), ext(500, 0)]));
        assert_eq!(descriptors(&e, 1000, false), [(1000, 3)]);
        assert_eq!(descriptors(&e, 1500, false), [(1200, 3), (300, 0)]);
        let e = Fake(Some(vec![ext(100, 0), ext(100, 1)]));
        assert_eq!(descriptors(&e, 150, true), [(100, 0)]);
        assert_eq!(descriptors(&e, 50, true), [(50, 0)]);
        assert_eq!(descriptors(&e, 150, false), [(100, 0), (50, 1)]);
        assert_eq!(descriptors(&Fake(Some(vec![])), 77, false), [(77, 0)]);
    }
}
