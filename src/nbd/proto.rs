//! NBD wire constants (magics, options, replies, flags, commands, error numbers) as given by
//! the protocol document, the layouts of option payloads, and the mapping from `io::Error` to
//! NBD error numbers.

use std::io;

use rustix::io::Errno;

/// `NBDMAGIC`, first thing the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: sent by the server after NBDMAGIC, and by the client before each option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Transmission flags.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_FUA: u16 = 1 << 3;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const FLAG_SEND_DF: u16 = 1 << 7;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub const FLAG_SEND_CACHE: u16 = 1 << 10;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;

// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
const REP_ERR: u32 = 1 << 31;
pub const REP_ERR_UNSUP: u32 = REP_ERR + 1;
pub const REP_ERR_POLICY: u32 = REP_ERR + 2;
pub const REP_ERR_INVALID: u32 = REP_ERR + 3;
pub const REP_ERR_TLS_REQD: u32 = REP_ERR + 5;
pub const REP_ERR_UNKNOWN: u32 = REP_ERR + 6;
pub const REP_ERR_TOO_BIG: u32 = REP_ERR + 9;

// NBD_REP_INFO types.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

// Structured replies.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

// base:allocation.
pub const STATE_HOLE: u32 = 1;
pub const STATE_ZERO: u32 = 2;
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The metadata context id this server gives `base:allocation`.
pub const BASE_ALLOCATION_ID: u32 = 1;

// Error numbers on the wire.
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

// Size constraints advertised with NBD_INFO_BLOCK_SIZE and enforced on requests.
pub const MIN_BLOCK: u32 = 1;
pub const PREFERRED_BLOCK: u32 = 4096;
/// Largest READ or WRITE payload accepted (32 MiB).
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// The longest string (export name, description, error message) this server sends or accepts.
pub const MAX_STRING: usize = 4096;

/// The NBD error number for an I/O error from an export.
pub fn errno_of(e: &io::Error) -> u32 {
    if let Some(raw) = e.raw_os_error() {
        let errno = Errno::from_raw_os_error(raw);
        return match errno {
            Errno::PERM | Errno::ACCESS | Errno::ROFS => EPERM,
            Errno::NOMEM => ENOMEM,
            Errno::INVAL => EINVAL,
            Errno::NOSPC | Errno::DQUOT | Errno::FBIG => ENOSPC,
            Errno::OVERFLOW => EOVERFLOW,
            Errno::NOTSUP => ENOTSUP,
            Errno::SHUTDOWN => ESHUTDOWN,
            _ => EIO,
        };
    }
    match e.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => EPERM,
        io::ErrorKind::InvalidInput => EINVAL,
        io::ErrorKind::OutOfMemory => ENOMEM,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge => {
            ENOSPC
        }
        io::ErrorKind::Unsupported => ENOTSUP,
        _ => EIO,
    }
}

/// The transmission flags for an export; `structured`: whether DF can be offered.
pub fn transmission_flags(writable: bool, structured: bool) -> u16 {
    let mut f = FLAG_HAS_FLAGS | FLAG_CAN_MULTI_CONN | FLAG_SEND_CACHE;
    if structured {
        f |= FLAG_SEND_DF;
    }
    if writable {
        f |= FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES;
    } else {
        f |= FLAG_READ_ONLY;
    }
    f
}

/// True for the errors a client going away causes (EOF, reset, broken pipe).
pub fn is_disconnect(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// `s` cut to at most [`MAX_STRING`] bytes, on a character boundary.
pub fn clip_string(s: &str) -> &str {
    if s.len() <= MAX_STRING {
        return s;
    }
    let mut end = MAX_STRING;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Takes the first `n` bytes off `data`.
fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Some(head)
}

fn take_u32(data: &mut &[u8]) -> Option<u32> {
    take(data, 4).map(|b| u32::from_be_bytes(b.try_into().unwrap()))
}

fn take_u16(data: &mut &[u8]) -> Option<u16> {
    take(data, 2).map(|b| u16::from_be_bytes(b.try_into().unwrap()))
}

/// INFO/GO data: name length, name, number of requests, requests; nothing after.
pub fn parse_info_request(mut data: &[u8]) -> Option<(&[u8], Vec<u16>)> {
    let d = &mut data;
    let name_len = take_u32(d)? as usize;
    let name = take(d, name_len)?;
    let n = take_u16(d)? as usize;
    if d.len() != 2 * n {
        return None;
    }
    let requests = (0..n).map(|_| take_u16(d)).collect::<Option<Vec<u16>>>()?;
    Some((name, requests))
}

/// LIST/SET_META_CONTEXT data: export name, then counted queries; nothing after.
pub fn parse_meta_request(mut data: &[u8]) -> Option<(&[u8], Vec<&[u8]>)> {
    let d = &mut data;
    let name_len = take_u32(d)? as usize;
    let name = take(d, name_len)?;
    let n = take_u32(d)?;
    let mut queries = Vec::new();
    for _ in 0..n {
        let len = take_u32(d)? as usize;
        queries.push(take(d, len)?);
    }
    if !d.is_empty() {
        return None;
    }
    Some((name, queries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(e: Errno) -> io::Error {
        io::Error::from_raw_os_error(e.raw_os_error())
    }

    #[test]
    fn os_errors_map_to_nbd_numbers() {
        assert_eq!(errno_of(&os(Errno::PERM)), EPERM);
        assert_eq!(errno_of(&os(Errno::ROFS)), EPERM);
        assert_eq!(errno_of(&os(Errno::IO)), EIO);
        assert_eq!(errno_of(&os(Errno::NOMEM)), ENOMEM);
        assert_eq!(errno_of(&os(Errno::INVAL)), EINVAL);
        assert_eq!(errno_of(&os(Errno::NOSPC)), ENOSPC);
        assert_eq!(errno_of(&os(Errno::DQUOT)), ENOSPC);
        assert_eq!(errno_of(&os(Errno::FBIG)), ENOSPC);
        assert_eq!(errno_of(&os(Errno::OVERFLOW)), EOVERFLOW);
        assert_eq!(errno_of(&os(Errno::NOTSUP)), ENOTSUP);
        assert_eq!(errno_of(&os(Errno::SHUTDOWN)), ESHUTDOWN);
        assert_eq!(errno_of(&os(Errno::NOENT)), EIO);
    }

    #[test]
    fn error_kinds_map_to_nbd_numbers() {
        let k = |k: io::ErrorKind| errno_of(&io::Error::new(k, "x"));
        assert_eq!(k(io::ErrorKind::InvalidInput), EINVAL);
        assert_eq!(k(io::ErrorKind::PermissionDenied), EPERM);
        assert_eq!(k(io::ErrorKind::OutOfMemory), ENOMEM);
        assert_eq!(k(io::ErrorKind::StorageFull), ENOSPC);
        assert_eq!(k(io::ErrorKind::Unsupported), ENOTSUP);
        assert_eq!(k(io::ErrorKind::Other), EIO);
    }

    #[test]
    fn strings_are_clipped_on_char_boundaries() {
        assert_eq!(clip_string("short"), "short");
        let long = "é".repeat(MAX_STRING);
        let c = clip_string(&long);
        assert!(c.len() <= MAX_STRING && c.len() >= MAX_STRING - 1);
        assert_eq!(clip_string(&"a".repeat(5000)).len(), MAX_STRING);
    }

    #[test]
    fn info_requests_parse_exactly() {
        let good = [&[0, 0, 0, 2][..], b"ab", &[0, 2, 0, 1, 0, 3]].concat();
        assert_eq!(parse_info_request(&good), Some((&b"ab"[..], vec![1, 3])));
        assert_eq!(parse_info_request(&[0; 6]), Some((&b""[..], vec![])));
        for bad in [
            &good[..5],
            &good[..good.len() - 1],
            &[good.clone(), vec![0]].concat(),
        ] {
            assert_eq!(parse_info_request(bad), None, "{bad:?}");
        }
        let mut long_name = good.clone();
        long_name[3] = 200;
        assert_eq!(parse_info_request(&long_name), None);
        assert_eq!(parse_info_request(&[0xff; 8]), None);
    }

    #[test]
    fn meta_requests_parse_exactly() {
        let good = [
            &[0, 0, 0, 1][..],
            b"d",
            &[0, 0, 0, 2, 0, 0, 0, 2],
            b"a:",
            &[0; 4],
        ]
        .concat();
        assert_eq!(
            parse_meta_request(&good),
            Some((&b"d"[..], vec![&b"a:"[..], &b""[..]]))
        );
        assert_eq!(parse_meta_request(&[0; 8]), Some((&b""[..], vec![])));
        for bad in [
            &good[..good.len() - 1],
            &[good.clone(), vec![0]].concat(),
            &[0; 7],
        ] {
            assert_eq!(parse_meta_request(bad), None, "{bad:?}");
        }
        // A query count far beyond the data does not allocate for it.
        assert_eq!(
            parse_meta_request(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        let mut long_query = good.clone();
        long_query[12] = 9;
        assert_eq!(parse_meta_request(&long_query), None);
    }
}
