//! Reading and validating transmission-phase requests: the 28-byte header, every check done
//! once before any I/O (command, flags, range, payload size, writability), and reading or
//! discarding a WRITE payload in bounded pieces.

use std::fmt;
use std::io::{self, Read};

use super::buffer::Buffer;
use super::proto;

/// Size of a request header on the wire.
pub const HEADER_LEN: usize = 28;

/// A request header as sent by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

impl Header {
    /// Parses a header; a bad magic is a protocol violation (the connection ends).
    pub fn parse(b: &[u8; HEADER_LEN]) -> io::Result<Header> {
        let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if magic != proto::REQUEST_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad request magic {magic:#010x}"),
            ));
        }
        Ok(Header {
            flags: u16::from_be_bytes([b[4], b[5]]),
            kind: u16::from_be_bytes([b[6], b[7]]),
            cookie: u64::from_be_bytes(b[8..16].try_into().unwrap()),
            offset: u64::from_be_bytes(b[16..24].try_into().unwrap()),
            len: u32::from_be_bytes(b[24..28].try_into().unwrap()),
        })
    }

    /// The header on the wire (as a client sends it).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&proto::REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// True when a payload of `len` bytes follows this header on the wire.
    pub fn has_payload(&self) -> bool {
        self.kind == proto::CMD_WRITE
    }
}

/// What the connection negotiated and what it serves: all validation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub size: u64,
    pub writable: bool,
    pub structured: bool,
    pub block_status: bool,
}

/// A valid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Read {
        offset: u64,
        len: u32,
        df: bool,
    },
    Write {
        offset: u64,
        len: u32,
        fua: bool,
    },
    Disc,
    Flush,
    Trim {
        offset: u64,
        len: u32,
        fua: bool,
    },
    Cache {
        offset: u64,
        len: u32,
    },
    WriteZeroes {
        offset: u64,
        len: u32,
        may_trim: bool,
        fua: bool,
    },
    BlockStatus {
        offset: u64,
        len: u32,
        req_one: bool,
    },
}

/// Why a request is refused: the NBD error number and a short message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub errno: u32,
    pub message: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (NBD error {})", self.message, self.errno)
    }
}

fn reject(errno: u32, message: String) -> Rejection {
    Rejection { errno, message }
}

fn command_name(kind: u16) -> &'static str {
    match kind {
        proto::CMD_READ => "read",
        proto::CMD_WRITE => "write",
        proto::CMD_DISC => "disconnect",
        proto::CMD_FLUSH => "flush",
        proto::CMD_TRIM => "trim",
        proto::CMD_CACHE => "cache",
        proto::CMD_WRITE_ZEROES => "write zeroes",
        proto::CMD_BLOCK_STATUS => "block status",
        _ => "unknown command",
    }
}

/// Checks `h` against what was negotiated: the one place requests are validated.
pub fn validate(h: &Header, lim: &Limits) -> Result<Command, Rejection> {
    use proto::*;
    let name = command_name(h.kind);
    let fua_ok = if lim.writable { CMD_FLAG_FUA } else { 0 };
    let allowed = match h.kind {
        CMD_READ if lim.structured => fua_ok | CMD_FLAG_DF,
        CMD_READ | CMD_WRITE | CMD_FLUSH | CMD_TRIM | CMD_CACHE => fua_ok,
        CMD_BLOCK_STATUS => fua_ok | CMD_FLAG_REQ_ONE,
        CMD_WRITE_ZEROES => fua_ok | CMD_FLAG_NO_HOLE,
        CMD_DISC => return Ok(Command::Disc),
        k => return Err(reject(EINVAL, format!("unknown command {k}"))),
    };
    if h.flags & !allowed != 0 {
        return Err(reject(
            EINVAL,
            format!("{name}: unsupported flags {:#x}", h.flags & !allowed),
        ));
    }
    let (offset, len) = (h.offset, h.len);
    if h.kind == CMD_FLUSH {
        if offset != 0 || len != 0 {
            return Err(reject(EINVAL, "flush: offset and length must be 0".into()));
        }
        return Ok(Command::Flush);
    }
    if (h.kind == CMD_READ || h.kind == CMD_WRITE) && len > MAX_PAYLOAD {
        return Err(reject(
            EINVAL,
            format!("{name}: length {len} is over the {MAX_PAYLOAD}-byte maximum"),
        ));
    }
    match offset.checked_add(len as u64) {
        Some(end) if end <= lim.size => {}
        _ => {
            // As the protocol document says (and nbdkit answers): ENOSPC for writes past the
            // end, EINVAL for reads, trims and the rest.
            let errno = match h.kind {
                CMD_WRITE | CMD_WRITE_ZEROES => ENOSPC,
                _ => EINVAL,
            };
            return Err(reject(
                errno,
                format!(
                "{name}: {len} bytes at offset {offset} are beyond the end of the {}-byte export",
                lim.size
            ),
            ));
        }
    }
    let fua = h.flags & CMD_FLAG_FUA != 0;
    let writes = matches!(h.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    if writes && !lim.writable {
        return Err(reject(EPERM, format!("{name}: the export is read-only")));
    }
    Ok(match h.kind {
        CMD_READ => Command::Read {
            offset,
            len,
            df: h.flags & CMD_FLAG_DF != 0,
        },
        CMD_WRITE => Command::Write { offset, len, fua },
        CMD_TRIM => Command::Trim { offset, len, fua },
        CMD_CACHE => Command::Cache { offset, len },
        CMD_WRITE_ZEROES => Command::WriteZeroes {
            offset,
            len,
            may_trim: h.flags & CMD_FLAG_NO_HOLE == 0,
            fua,
        },
        _ => {
            if !lim.block_status {
                return Err(reject(
                    EINVAL,
                    "block status: no metadata context was negotiated".into(),
                ));
            }
            if len == 0 {
                return Err(reject(EINVAL, "block status: length is 0".into()));
            }
            Command::BlockStatus {
                offset,
                len,
                req_one: h.flags & CMD_FLAG_REQ_ONE != 0,
            }
        }
    })
}

/// Reads the next request header. `Ok(None)`: the client closed the connection between
/// requests; a connection closed inside a header or a bad magic is an error.
pub fn read_header(r: &mut dyn Read) -> io::Result<Option<Header>> {
    let mut buf = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {got} bytes of a request header"),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Header::parse(&buf).map(Some)
}

/// Reads a WRITE payload of `len` bytes (validated: at most [`proto::MAX_PAYLOAD`]) into a
/// pooled buffer (as READ data is: big ones are mappings, given back when dropped).
pub fn read_payload(r: &mut dyn Read, len: u32) -> io::Result<Buffer> {
    debug_assert!(len <= proto::MAX_PAYLOAD);
    let mut buf = Buffer::for_read(len.min(proto::MAX_PAYLOAD) as usize)?;
    r.read_exact(&mut buf).map_err(|e| {
        io::Error::new(e.kind(), format!("reading a {len}-byte write payload: {e}"))
    })?;
    Ok(buf)
}

/// Reads and drops `len` bytes (the payload of a refused WRITE) through a small buffer.
pub fn discard(r: &mut dyn Read, len: u64) -> io::Result<()> {
    let mut scratch = [0u8; 16 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(scratch.len() as u64) as usize;
        r.read_exact(&mut scratch[..n]).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("skipping the {len}-byte payload of a refused write: {e}"),
            )
        })?;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbd::proto::*;

    fn header(flags: u16, kind: u16, offset: u64, len: u32) -> Header {
        Header {
            flags,
            kind,
            cookie: 42,
            offset,
            len,
        }
    }

    const RO: Limits = Limits {
        size: 1 << 20,
        writable: false,
        structured: true,
        block_status: true,
    };
    const RW: Limits = Limits {
        writable: true,
        ..RO
    };
    const SIMPLE: Limits = Limits {
        structured: false,
        block_status: false,
        ..RW
    };

    fn errno(h: Header, lim: &Limits) -> u32 {
        validate(&h, lim).unwrap_err().errno
    }

    #[test]
    fn header_round_trip_and_bad_magic() {
        let h = header(CMD_FLAG_FUA, CMD_WRITE, 4096, 512);
        let mut bytes = h.encode();
        let got = read_header(&mut &bytes[..]).unwrap().unwrap();
        assert_eq!(got, h);
        assert!(got.has_payload());
        bytes[..4].copy_from_slice(&0x12560953u32.to_be_bytes());
        let e = read_header(&mut &bytes[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("magic"));
    }

    #[test]
    fn eof_between_requests_is_clean_but_not_inside_one() {
        assert_eq!(read_header(&mut &[][..]).unwrap(), None);
        let bytes = header(0, CMD_READ, 0, 1).encode();
        let e = read_header(&mut &bytes[..27]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn valid_commands() {
        let ok = |h, lim| validate(&h, lim).unwrap();
        assert_eq!(
            ok(header(CMD_FLAG_DF, CMD_READ, 0, 4096), &RO),
            Command::Read {
                offset: 0,
                len: 4096,
                df: true
            }
        );
        // A zero-length read is allowed, even at the very end.
        assert_eq!(
            ok(header(0, CMD_READ, 1 << 20, 0), &RO),
            Command::Read {
                offset: 1 << 20,
                len: 0,
                df: false
            }
        );
        assert_eq!(ok(header(0, CMD_DISC, 0, 0), &RO), Command::Disc);
        assert_eq!(ok(header(0, CMD_FLUSH, 0, 0), &RO), Command::Flush);
        assert_eq!(
            ok(header(CMD_FLAG_FUA, CMD_WRITE, 512, 512), &RW),
            Command::Write {
                offset: 512,
                len: 512,
                fua: true
            }
        );
        assert_eq!(
            ok(header(CMD_FLAG_NO_HOLE, CMD_WRITE_ZEROES, 0, 8), &RW),
            Command::WriteZeroes {
                offset: 0,
                len: 8,
                may_trim: false,
                fua: false
            }
        );
        assert_eq!(
            ok(header(0, CMD_WRITE_ZEROES, 0, 8), &RW),
            Command::WriteZeroes {
                offset: 0,
                len: 8,
                may_trim: true,
                fua: false
            }
        );
        assert_eq!(
            ok(header(0, CMD_TRIM, 0, 1 << 20), &RW),
            Command::Trim {
                offset: 0,
                len: 1 << 20,
                fua: false
            }
        );
        assert_eq!(
            ok(header(0, CMD_CACHE, 10, 10), &RO),
            Command::Cache {
                offset: 10,
                len: 10
            }
        );
        assert_eq!(
            ok(header(CMD_FLAG_REQ_ONE, CMD_BLOCK_STATUS, 0, 1 << 20), &RO),
            Command::BlockStatus {
                offset: 0,
                len: 1 << 20,
                req_one: true
            }
        );
    }

    #[test]
    fn effect_lengths_over_the_payload_limit_are_fine_without_payload() {
        let big = Limits {
            size: 1 << 40,
            ..RW
        };
        let len = MAX_PAYLOAD + 1;
        assert!(validate(&header(0, CMD_BLOCK_STATUS, 0, len), &big).is_ok());
        assert!(validate(&header(0, CMD_TRIM, 0, len), &big).is_ok());
        assert!(validate(&header(0, CMD_WRITE_ZEROES, 0, len), &big).is_ok());
        assert!(validate(&header(0, CMD_CACHE, 0, len), &big).is_ok());
        assert_eq!(errno(header(0, CMD_READ, 0, len), &big), EINVAL);
        assert_eq!(errno(header(0, CMD_WRITE, 0, len), &big), EINVAL);
        assert!(validate(&header(0, CMD_READ, 0, MAX_PAYLOAD), &big).is_ok());
    }

    #[test]
    fn ranges_beyond_the_export_or_overflowing() {
        assert_eq!(errno(header(0, CMD_READ, 1 << 20, 1), &RO), EINVAL);
        assert_eq!(errno(header(0, CMD_READ, (1 << 20) + 1, 0), &RO), EINVAL);
        assert_eq!(errno(header(0, CMD_READ, u64::MAX, 2), &RO), EINVAL);
        assert_eq!(errno(header(0, CMD_TRIM, 1 << 20, 1), &RW), EINVAL);
        assert_eq!(errno(header(0, CMD_BLOCK_STATUS, 1 << 20, 1), &RO), EINVAL);
        assert_eq!(errno(header(0, CMD_CACHE, u64::MAX, 1), &RO), EINVAL);
        let r = validate(&header(0, CMD_READ, 1 << 20, 1), &RO).unwrap_err();
        assert!(r.message.contains("beyond the end"), "{r}");
    }

    #[test]
    fn writes_beyond_the_export_are_enospc() {
        assert_eq!(errno(header(0, CMD_WRITE, 1 << 20, 1), &RW), ENOSPC);
        assert_eq!(errno(header(0, CMD_WRITE, (1 << 20) - 1, 2), &RW), ENOSPC);
        assert_eq!(errno(header(0, CMD_WRITE, u64::MAX - 1, 4), &RW), ENOSPC);
        assert_eq!(errno(header(0, CMD_WRITE_ZEROES, 1 << 20, 1), &RW), ENOSPC);
        // The range is checked before writability, as nbdkit does.
        assert_eq!(errno(header(0, CMD_WRITE, 1 << 20, 1), &RO), ENOSPC);
        // Right up to the end is fine.
        assert!(validate(&header(0, CMD_WRITE, (1 << 20) - 1, 1), &RW).is_ok());
    }

    #[test]
    fn writes_on_a_read_only_export_are_eperm() {
        assert_eq!(errno(header(0, CMD_WRITE, 0, 512), &RO), EPERM);
        assert_eq!(errno(header(0, CMD_TRIM, 0, 512), &RO), EPERM);
        assert_eq!(errno(header(0, CMD_WRITE_ZEROES, 0, 512), &RO), EPERM);
        assert_eq!(
            errno(header(CMD_FLAG_NO_HOLE, CMD_WRITE_ZEROES, 0, 1), &RO),
            EPERM
        );
    }

    #[test]
    fn unknown_commands_and_flags() {
        assert_eq!(errno(header(0, 8, 0, 0), &RW), EINVAL);
        assert_eq!(errno(header(0, 0xffff, 0, 0), &RW), EINVAL);
        let r = validate(&header(0, 99, 0, 0), &RW).unwrap_err();
        assert!(r.message.contains("unknown command 99"));
        // Flags not meant for the command.
        assert_eq!(errno(header(CMD_FLAG_DF, CMD_WRITE, 0, 1), &RW), EINVAL);
        assert_eq!(errno(header(CMD_FLAG_REQ_ONE, CMD_READ, 0, 1), &RW), EINVAL);
        assert_eq!(errno(header(CMD_FLAG_NO_HOLE, CMD_TRIM, 0, 1), &RW), EINVAL);
        assert_eq!(errno(header(1 << 4, CMD_WRITE_ZEROES, 0, 1), &RW), EINVAL);
        assert_eq!(errno(header(1 << 15, CMD_READ, 0, 1), &RW), EINVAL);
        // FUA only when advertised (writable exports).
        assert_eq!(errno(header(CMD_FLAG_FUA, CMD_READ, 0, 1), &RO), EINVAL);
        assert!(validate(&header(CMD_FLAG_FUA, CMD_READ, 0, 1), &RW).is_ok());
        // DF only with structured replies.
        assert_eq!(errno(header(CMD_FLAG_DF, CMD_READ, 0, 1), &SIMPLE), EINVAL);
        // Flags are checked before writability.
        assert_eq!(errno(header(CMD_FLAG_DF, CMD_WRITE, 0, 1), &RO), EINVAL);
    }

    #[test]
    fn flush_needs_zero_offset_and_length() {
        assert_eq!(errno(header(0, CMD_FLUSH, 1, 0), &RW), EINVAL);
        assert_eq!(errno(header(0, CMD_FLUSH, 0, 1), &RW), EINVAL);
        assert_eq!(
            validate(&header(0, CMD_FLUSH, 0, 0), &RW),
            Ok(Command::Flush)
        );
    }

    #[test]
    fn block_status_needs_a_context_and_a_length() {
        assert_eq!(errno(header(0, CMD_BLOCK_STATUS, 0, 512), &SIMPLE), EINVAL);
        let no_ctx = Limits {
            block_status: false,
            ..RO
        };
        let r = validate(&header(0, CMD_BLOCK_STATUS, 0, 512), &no_ctx).unwrap_err();
        assert!(r.message.contains("metadata context"));
        assert_eq!(errno(header(0, CMD_BLOCK_STATUS, 0, 0), &RO), EINVAL);
    }

    #[test]
    fn payloads_are_read_or_discarded() {
        let data: Vec<u8> = (0..50_000u32).map(|i| i as u8).collect();
        let mut r = &data[..];
        assert_eq!(read_payload(&mut r, 3).unwrap()[..], [0, 1, 2]);
        discard(&mut r, 40_000).unwrap();
        assert_eq!(
            read_payload(&mut r, 2).unwrap()[..],
            [data[40_003], data[40_004]]
        );
        let e = discard(&mut r, 1 << 40).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("refused write"));
        let e = read_payload(&mut &data[..10], 11).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(discard(&mut &data[..0], 0).is_ok());
    }
}
