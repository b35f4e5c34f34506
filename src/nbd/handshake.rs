//! The fixed-newstyle handshake: greeting, client flags, then option haggling (EXPORT_NAME,
//! GO, INFO, LIST, ABORT, STRUCTURED_REPLY, SET/LIST_META_CONTEXT) until the client enters
//! the transmission phase, aborts or goes away.

use std::io::{self, Read, Write};

use super::proto::*;
use super::request::discard;
use super::Export;

/// What the server tells clients about its one export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportInfo {
    pub name: String,
    pub description: String,
}

/// The outcome of a successful handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// Structured replies were negotiated.
    pub structured: bool,
    /// The `base:allocation` metadata context is selected (block status allowed).
    pub base_allocation: bool,
    /// The export's name (the canonical one, also when the client asked for the default "").
    pub export_name: String,
}

/// Most option data read into memory; longer options are skipped and refused.
pub const MAX_OPTION_DATA: u32 = 64 * 1024;

/// Fixed newstyle negotiation on a fresh connection. Ok(None): the client aborted
/// (NBD_OPT_ABORT) or disconnected during negotiation; Err: I/O error or protocol violation
/// (bad magic etc.) — the caller just drops the connection.
pub fn handshake(
    r: &mut dyn Read,
    w: &mut dyn Write,
    export: &dyn Export,
    info: &ExportInfo,
) -> io::Result<Option<Negotiated>> {
    let mut h = Haggle {
        w,
        export,
        info,
        no_zeroes: false,
        structured: false,
        base_allocation: false,
    };
    match h.run(r) {
        Err(e) if is_disconnect(&e) => Ok(None),
        other => other,
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The state of option haggling on one connection.
struct Haggle<'a> {
    w: &'a mut dyn Write,
    export: &'a dyn Export,
    info: &'a ExportInfo,
    no_zeroes: bool,
    structured: bool,
    base_allocation: bool,
}

/// What one option leads to.
enum Next {
    Continue,
    Abort,
    Transmit,
}

impl Haggle<'_> {
    fn run(&mut self, r: &mut dyn Read) -> io::Result<Option<Negotiated>> {
        let mut greeting = Vec::with_capacity(18);
        greeting.extend_from_slice(&NBDMAGIC.to_be_bytes());
        greeting.extend_from_slice(&IHAVEOPT.to_be_bytes());
        greeting.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        self.w.write_all(&greeting)?;
        self.w.flush()?;

        let client_flags = read_u32(r)?;
        let known = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;
        if client_flags & !known != 0 {
            return Err(invalid(format!("unknown client flags {client_flags:#x}")));
        }
        self.no_zeroes = client_flags & FLAG_C_NO_ZEROES != 0;

        loop {
            let mut head = [0u8; 16];
            r.read_exact(&mut head)?;
            let magic = u64::from_be_bytes(head[0..8].try_into().unwrap());
            if magic != IHAVEOPT {
                return Err(invalid(format!("bad option magic {magic:#018x}")));
            }
            let opt = u32::from_be_bytes(head[8..12].try_into().unwrap());
            let len = u32::from_be_bytes(head[12..16].try_into().unwrap());
            if len > MAX_OPTION_DATA {
                if opt == OPT_EXPORT_NAME {
                    return Err(invalid(format!("export name of {len} bytes")));
                }
                discard(r, len as u64)?;
                let msg = format!("option data of {len} bytes is too long");
                self.error(opt, REP_ERR_TOO_BIG, &msg)?;
                continue;
            }
            let mut data = vec![0u8; len as usize];
            r.read_exact(&mut data)?;
            match self.option(opt, &data)? {
                Next::Continue => {}
                Next::Abort => return Ok(None),
                Next::Transmit => {
                    return Ok(Some(Negotiated {
                        structured: self.structured,
                        base_allocation: self.structured && self.base_allocation,
                        export_name: self.info.name.clone(),
                    }))
                }
            }
        }
    }

    fn option(&mut self, opt: u32, data: &[u8]) -> io::Result<Next> {
        match opt {
            OPT_EXPORT_NAME => {
                if !self.is_ours(data) {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "the client asked for export {:?}, which does not exist",
                            String::from_utf8_lossy(data)
                        ),
                    ));
                }
                let mut v = Vec::with_capacity(134);
                v.extend_from_slice(&self.export.size().to_be_bytes());
                v.extend_from_slice(&self.flags().to_be_bytes());
                if !self.no_zeroes {
                    v.extend_from_slice(&[0u8; 124]);
                }
                self.w.write_all(&v)?;
                self.w.flush()?;
                return Ok(Next::Transmit);
            }
            OPT_ABORT => {
                // The client may already be gone; it need not read the ACK.
                let _ = self.reply(opt, REP_ACK, &[]);
                return Ok(Next::Abort);
            }
            OPT_LIST if !data.is_empty() => {
                self.error(opt, REP_ERR_INVALID, "LIST takes no data")?
            }
            OPT_LIST => {
                let name = self.info.name.as_bytes();
                let desc = clip_string(&self.info.description).as_bytes();
                let len = (name.len() as u32).to_be_bytes();
                self.reply(opt, REP_SERVER, &[&len, name, desc])?;
                self.reply(opt, REP_ACK, &[])?;
            }
            OPT_STARTTLS => self.error(opt, REP_ERR_UNSUP, "TLS is not supported")?,
            OPT_STRUCTURED_REPLY if !data.is_empty() => {
                self.error(opt, REP_ERR_INVALID, "STRUCTURED_REPLY takes no data")?
            }
            OPT_STRUCTURED_REPLY => {
                self.structured = true;
                self.reply(opt, REP_ACK, &[])?;
            }
            OPT_INFO | OPT_GO => return self.info_or_go(opt, data),
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => self.meta_context(opt, data)?,
            _ => self.error(opt, REP_ERR_UNSUP, "unsupported option")?,
        }
        Ok(Next::Continue)
    }

    fn info_or_go(&mut self, opt: u32, data: &[u8]) -> io::Result<Next> {
        let Some((name, requests)) = parse_info_request(data) else {
            self.error(opt, REP_ERR_INVALID, "malformed INFO/GO request")?;
            return Ok(Next::Continue);
        };
        if !self.is_ours(name) {
            self.error(opt, REP_ERR_UNKNOWN, "no such export")?;
            return Ok(Next::Continue);
        }
        let size = self.export.size().to_be_bytes();
        let flags = self.flags().to_be_bytes();
        self.reply(opt, REP_INFO, &[&INFO_EXPORT.to_be_bytes(), &size, &flags])?;
        let [min, pref, max] = [MIN_BLOCK, PREFERRED_BLOCK, MAX_PAYLOAD].map(u32::to_be_bytes);
        self.reply(
            opt,
            REP_INFO,
            &[&INFO_BLOCK_SIZE.to_be_bytes(), &min, &pref, &max],
        )?;
        if requests.contains(&INFO_NAME) {
            let name = self.info.name.as_bytes();
            self.reply(opt, REP_INFO, &[&INFO_NAME.to_be_bytes(), name])?;
        }
        if requests.contains(&INFO_DESCRIPTION) && !self.info.description.is_empty() {
            let desc = clip_string(&self.info.description).as_bytes();
            self.reply(opt, REP_INFO, &[&INFO_DESCRIPTION.to_be_bytes(), desc])?;
        }
        self.reply(opt, REP_ACK, &[])?;
        Ok(if opt == OPT_GO {
            Next::Transmit
        } else {
            Next::Continue
        })
    }

    fn meta_context(&mut self, opt: u32, data: &[u8]) -> io::Result<()> {
        let set = opt == OPT_SET_META_CONTEXT;
        if set {
            // SET replaces the selection, even when it fails.
            self.base_allocation = false;
        }
        let Some((name, queries)) = parse_meta_request(data) else {
            return self.error(opt, REP_ERR_INVALID, "malformed meta context request");
        };
        if set && !self.structured {
            return self.error(
                opt,
                REP_ERR_INVALID,
                "structured replies must be negotiated first",
            );
        }
        if !self.is_ours(name) {
            return self.error(opt, REP_ERR_UNKNOWN, "no such export");
        }
        let base = BASE_ALLOCATION.as_bytes();
        let found = if set {
            queries.contains(&base)
        } else {
            queries.is_empty() || queries.iter().any(|q| *q == base || *q == b"base:")
        };
        if found {
            let id = if set { BASE_ALLOCATION_ID } else { 0 };
            self.reply(opt, REP_META_CONTEXT, &[&id.to_be_bytes(), base])?;
            self.base_allocation |= set;
        }
        self.reply(opt, REP_ACK, &[])
    }

    fn is_ours(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.info.name.as_bytes()
    }

    fn flags(&self) -> u16 {
        transmission_flags(self.export.writable(), self.structured)
    }

    fn error(&mut self, opt: u32, kind: u32, message: &str) -> io::Result<()> {
        self.reply(opt, kind, &[message.as_bytes()])
    }

    /// Sends one option reply whose data is the concatenation of `data`.
    fn reply(&mut self, opt: u32, kind: u32, data: &[&[u8]]) -> io::Result<()> {
        let len: usize = data.iter().map(|d| d.len()).sum();
        let mut v = Vec::with_capacity(20 + len);
        v.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
        v.extend_from_slice(&opt.to_be_bytes());
        v.extend_from_slice(&kind.to_be_bytes());
        v.extend_from_slice(&(len as u32).to_be_bytes());
        data.iter().for_each(|d| v.extend_from_slice(d));
        self.w.write_all(&v)?;
        self.w.flush()
    }
}

fn read_u32(r: &mut dyn Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbd::export::MemExport;

    /// A client's byte stream.
    struct Client(Vec<u8>);

    impl Client {
        fn new(flags: u32) -> Client {
            Client(flags.to_be_bytes().to_vec())
        }
        fn opt(mut self, opt: u32, data: &[u8]) -> Client {
            let head = [IHAVEOPT.to_be_bytes(), [0; 8]].concat();
            self.0.extend_from_slice(&head[..8]);
            self.0.extend_from_slice(&opt.to_be_bytes());
            self.0.extend_from_slice(&(data.len() as u32).to_be_bytes());
            self.0.extend_from_slice(data);
            self
        }
    }

    fn go(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut v = (name.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        infos
            .iter()
            .for_each(|i| v.extend_from_slice(&i.to_be_bytes()));
        v
    }

    fn meta(name: &str, queries: &[&str]) -> Vec<u8> {
        let mut v = (name.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            v.extend_from_slice(&(q.len() as u32).to_be_bytes());
            v.extend_from_slice(q.as_bytes());
        }
        v
    }

    type Replies = Vec<(u32, u32, Vec<u8>)>;

    /// Runs the handshake on `c` against a 1 MiB export; returns its result, the option
    /// replies, and whatever the server wrote after them.
    fn run(c: &Client, writable: bool) -> (io::Result<Option<Negotiated>>, Replies, Vec<u8>) {
        let export = MemExport::new(vec![0; 1 << 20], writable);
        let info = ExportInfo {
            name: "disk".into(),
            description: "a test disk".into(),
        };
        let mut out = Vec::new();
        let res = handshake(&mut &c.0[..], &mut out, &export, &info);
        assert_eq!(
            out[..16],
            [NBDMAGIC.to_be_bytes(), IHAVEOPT.to_be_bytes()].concat()
        );
        assert_eq!(out[16..18], [0, 3]);
        let (mut rest, mut replies) = (&out[18..], Vec::new());
        while rest.len() >= 20 && rest[..8] == OPT_REPLY_MAGIC.to_be_bytes() {
            let word = |i: usize| u32::from_be_bytes(rest[i..i + 4].try_into().unwrap());
            let (opt, kind, len) = (word(8), word(12), word(16) as usize);
            replies.push((opt, kind, rest[20..20 + len].to_vec()));
            rest = &rest[20 + len..];
        }
        (res, replies, rest.to_vec())
    }

    fn kinds(r: &Replies) -> Vec<u32> {
        r.iter().map(|x| x.1).collect()
    }

    const FIXED: u32 = FLAG_C_FIXED_NEWSTYLE;
    const ACK: u32 = REP_ACK;
    const INFO: u32 = REP_INFO;
    const META: u32 = REP_META_CONTEXT;
    const INVAL: u32 = REP_ERR_INVALID;
    const UNSUP: u32 = REP_ERR_UNSUP;
    const UNKNOWN: u32 = REP_ERR_UNKNOWN;

    #[test]
    fn go_with_structured_replies_and_base_allocation() {
        let c = Client::new(FIXED | FLAG_C_NO_ZEROES)
            .opt(OPT_STRUCTURED_REPLY, &[])
            .opt(
                OPT_SET_META_CONTEXT,
                &meta("disk", &["x-a:b", "base:allocation"]),
            )
            .opt(OPT_GO, &go("", &[INFO_NAME, INFO_DESCRIPTION, 77]));
        let (res, r, rest) = run(&c, false);
        let neg = res.unwrap().unwrap();
        assert!(neg.structured && neg.base_allocation);
        assert_eq!(neg.export_name, "disk");
        assert!(rest.is_empty());
        assert_eq!(kinds(&r), [ACK, META, ACK, INFO, INFO, INFO, INFO, ACK]);
        assert_eq!(r[1].2, b"\0\0\0\x01base:allocation");
        let infos: Vec<&[u8]> = r[3..7].iter().map(|x| &x.2[..]).collect();
        let flags = FLAG_HAS_FLAGS | FLAG_READ_ONLY | FLAG_SEND_DF;
        let flags = flags | FLAG_CAN_MULTI_CONN | FLAG_SEND_CACHE;
        let export = [&[0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0][..], &flags.to_be_bytes()].concat();
        let block = [0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 0x02, 0, 0, 0];
        for want in [&export[..], &block, b"\0\x01disk", b"\0\x02a test disk"] {
            assert!(infos.contains(&want), "{want:?} not in {infos:?}");
        }
    }

    #[test]
    fn info_then_go_without_structured_replies() {
        let c = Client::new(FIXED)
            .opt(OPT_INFO, &go("disk", &[]))
            .opt(OPT_GO, &go("disk", &[]));
        let (res, r, _) = run(&c, true);
        let want = Negotiated {
            export_name: "disk".into(),
            ..Default::default()
        };
        assert_eq!(res.unwrap().unwrap(), want);
        assert_eq!(kinds(&r), [INFO, INFO, ACK, INFO, INFO, ACK]);
        let flags = u16::from_be_bytes(r[0].2[10..12].try_into().unwrap());
        assert_eq!(flags, transmission_flags(true, false));
        assert_eq!(flags & (FLAG_READ_ONLY | FLAG_SEND_DF), 0);
        assert_ne!(flags & FLAG_SEND_WRITE_ZEROES, 0);
    }

    #[test]
    fn export_name_with_and_without_zeroes() {
        for (flags, pad) in [(FIXED, 124), (FIXED | FLAG_C_NO_ZEROES, 0), (0, 124)] {
            let (res, r, rest) = run(&Client::new(flags).opt(OPT_EXPORT_NAME, b"disk"), false);
            assert!(r.is_empty());
            assert_eq!(res.unwrap().unwrap().export_name, "disk");
            assert_eq!(rest.len(), 10 + pad);
            assert_eq!(rest[..8], (1u64 << 20).to_be_bytes());
            assert_eq!(rest[8..10], transmission_flags(false, false).to_be_bytes());
        }
        // The default export "" is ours too; an unknown name closes the connection.
        let c = Client::new(FIXED).opt(OPT_EXPORT_NAME, b"");
        assert!(run(&c, false).0.unwrap().is_some());
        let (res, _, rest) = run(&Client::new(FIXED).opt(OPT_EXPORT_NAME, b"nope"), false);
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(rest.is_empty());
    }

    #[test]
    fn unknown_export_for_info_go_and_meta() {
        let c = Client::new(FIXED)
            .opt(OPT_STRUCTURED_REPLY, &[])
            .opt(OPT_INFO, &go("other", &[]))
            .opt(OPT_GO, &go("other", &[]))
            .opt(OPT_SET_META_CONTEXT, &meta("other", &["base:allocation"]))
            .opt(OPT_LIST_META_CONTEXT, &meta("other", &[]));
        let (res, r, _) = run(&c, false);
        assert!(res.unwrap().is_none(), "EOF after the options");
        assert_eq!(kinds(&r), [ACK, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN]);
    }

    #[test]
    fn list_abort_unknown_and_starttls() {
        let c = Client::new(FIXED)
            .opt(OPT_LIST, &[])
            .opt(OPT_LIST, b"x")
            .opt(OPT_STARTTLS, &[])
            .opt(4, &[])
            .opt(11, b"whatever")
            .opt(0xdead_beef, &[1, 2, 3])
            .opt(OPT_ABORT, b"ignored")
            .opt(OPT_GO, &go("", &[]));
        let (res, r, rest) = run(&c, false);
        assert!(res.unwrap().is_none());
        assert!(rest.is_empty(), "nothing after ABORT's ACK");
        let want = [REP_SERVER, ACK, INVAL, UNSUP, UNSUP, UNSUP, UNSUP, ACK];
        assert_eq!(kinds(&r), want);
        assert_eq!(r[0].2, b"\0\0\0\x04diska test disk");
        assert_eq!((r[6].0, r[7].0), (0xdead_beef, OPT_ABORT));
    }

    #[test]
    fn meta_contexts() {
        let c = Client::new(FIXED)
            // SET before STRUCTURED_REPLY is invalid; LIST is allowed.
            .opt(OPT_SET_META_CONTEXT, &meta("", &["base:allocation"]))
            .opt(OPT_LIST_META_CONTEXT, &meta("", &[]))
            .opt(OPT_STRUCTURED_REPLY, b"data")
            .opt(OPT_STRUCTURED_REPLY, &[])
            .opt(OPT_LIST_META_CONTEXT, &meta("disk", &["base:"]))
            .opt(
                OPT_LIST_META_CONTEXT,
                &meta("disk", &["qemu:x", "base:nope"]),
            )
            .opt(OPT_SET_META_CONTEXT, &meta("", &["base:"]))
            .opt(OPT_SET_META_CONTEXT, &meta("", &["base:allocation"]))
            .opt(OPT_LIST_META_CONTEXT, &meta("", &["base:allocation"])[..20])
            .opt(OPT_GO, &go("", &[]));
        let (res, r, _) = run(&c, false);
        let want = [
            INVAL, META, ACK, INVAL, ACK, META, ACK, ACK, ACK, META, ACK, INVAL,
        ];
        assert_eq!(kinds(&r)[..12], want);
        assert_eq!(
            r[1].2, b"\0\0\0\0base:allocation",
            "LIST gives context id 0"
        );
        let neg = res.unwrap().unwrap();
        assert!(neg.structured && neg.base_allocation);
    }

    #[test]
    fn failed_or_empty_set_meta_context_clears_the_selection() {
        for last in [vec![1, 2], meta("", &[])] {
            let c = Client::new(FIXED)
                .opt(OPT_STRUCTURED_REPLY, &[])
                .opt(OPT_SET_META_CONTEXT, &meta("", &["base:allocation"]))
                .opt(OPT_SET_META_CONTEXT, &last)
                .opt(OPT_EXPORT_NAME, b"");
            let neg = run(&c, false).0.unwrap().unwrap();
            assert!(neg.structured && !neg.base_allocation);
        }
    }

    #[test]
    fn malformed_info_requests() {
        let good = go("disk", &[INFO_NAME]);
        let c = Client::new(FIXED)
            .opt(OPT_GO, &good[..5])
            .opt(OPT_INFO, &good[..good.len() - 1])
            .opt(OPT_GO, &[good.clone(), vec![0]].concat())
            .opt(OPT_INFO, &[]);
        let (res, r, _) = run(&c, false);
        assert!(res.unwrap().is_none());
        assert_eq!(kinds(&r), [INVAL; 4]);
    }

    #[test]
    fn protocol_violations_and_disconnects() {
        // Unknown client flags; a bad option magic.
        let e = run(&Client::new(4), false).0.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut c = Client::new(FIXED);
        c.0.extend_from_slice(&[0u8; 16]);
        let e = run(&c, false).0.unwrap_err();
        assert!(e.to_string().contains("option magic"), "{e}");
        // Disconnects: before the flags, inside them, inside an option, after a reply.
        assert!(run(&Client(vec![]), false).0.unwrap().is_none());
        assert!(run(&Client(vec![0, 0]), false).0.unwrap().is_none());
        let c = Client::new(FIXED).opt(OPT_GO, &go("disk", &[]));
        let cut = Client(c.0[..c.0.len() - 3].to_vec());
        assert!(run(&cut, false).0.unwrap().is_none());
        let c = Client::new(FIXED).opt(OPT_LIST, &[]);
        assert!(run(&c, false).0.unwrap().is_none());
        // A huge export name for EXPORT_NAME ends the connection without reading it.
        let mut c = Client::new(FIXED).opt(OPT_EXPORT_NAME, &[]);
        let n = c.0.len();
        c.0[n - 4..].copy_from_slice(&(MAX_OPTION_DATA + 1).to_be_bytes());
        let e = run(&c, false).0.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn oversized_options_are_skipped_and_refused() {
        let big = vec![7u8; MAX_OPTION_DATA as usize + 1];
        let c = Client::new(FIXED)
            .opt(OPT_GO, &big)
            .opt(99, &big)
            .opt(OPT_LIST, &big[..MAX_OPTION_DATA as usize])
            .opt(OPT_GO, &go("", &[]));
        let (res, r, _) = run(&c, false);
        assert!(res.unwrap().is_some());
        let want = [REP_ERR_TOO_BIG, REP_ERR_TOO_BIG, INVAL, INFO, INFO, ACK];
        assert_eq!(kinds(&r), want);
    }

    #[test]
    fn handshake_over_a_socket_pair() {
        use std::os::unix::net::UnixStream;
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let export = MemExport::new(vec![0; 4096], false);
            handshake(&mut b.try_clone()?, &mut b, &export, &ExportInfo::default())
        });
        let mut greeting = [0u8; 18];
        a.read_exact(&mut greeting).unwrap();
        let c = Client::new(FIXED | FLAG_C_NO_ZEROES).opt(OPT_EXPORT_NAME, b"");
        a.write_all(&c.0).unwrap();
        let mut rest = [0u8; 10];
        a.read_exact(&mut rest).unwrap();
        assert_eq!(rest[..8], 4096u64.to_be_bytes());
        assert!(t.join().unwrap().unwrap().is_some());
    }
}
