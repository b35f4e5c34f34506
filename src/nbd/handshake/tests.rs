//! Unit tests of the handshake: option haggling byte for byte, the TLS rules (TLS_REQD before
//! STARTTLS, a fresh start inside TLS, STARTTLS once), admission, protocol violations.

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
    let (replies, rest) = replies(&out[18..]);
    (res, replies, rest)
}

/// The option replies at the start of `out`, and what follows them.
fn replies(out: &[u8]) -> (Replies, Vec<u8>) {
    let (mut rest, mut replies) = (out, Vec::new());
    while rest.len() >= 20 && rest[..8] == OPT_REPLY_MAGIC.to_be_bytes() {
        let word = |i: usize| u32::from_be_bytes(rest[i..i + 4].try_into().unwrap());
        let (opt, kind, len) = (word(8), word(12), word(16) as usize);
        replies.push((opt, kind, rest[20..20 + len].to_vec()));
        rest = &rest[20 + len..];
    }
    (replies, rest.to_vec())
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

/// Runs option haggling (no greeting) on `c`'s options with `tls` and `admit`.
fn haggle(c: &Client, tls: Tls, admit: Admit<'_>) -> (io::Result<Outcome>, Replies, Vec<u8>) {
    let export = MemExport::new(vec![0; 1 << 20], false);
    let info = ExportInfo {
        name: "disk".into(),
        description: String::new(),
    };
    let mut out = Vec::new();
    let flags = ClientFlags { no_zeroes: true };
    let res = negotiate(&mut &c.0[4..], &mut out, &export, &info, flags, tls, admit);
    let (replies, rest) = replies(&out);
    (res, replies, rest)
}

const TLS_REQD: u32 = REP_ERR_TLS_REQD;

#[test]
fn tls_required_refuses_every_option_before_starttls() {
    let c = Client::new(FIXED)
        .opt(OPT_LIST, &[])
        .opt(OPT_STRUCTURED_REPLY, &[])
        .opt(OPT_INFO, &go("", &[]))
        .opt(OPT_GO, &go("", &[]))
        .opt(OPT_LIST_META_CONTEXT, &meta("", &[]))
        .opt(77, &[])
        .opt(OPT_STARTTLS, b"x")
        .opt(OPT_STARTTLS, &[])
        .opt(OPT_GO, &go("", &[])); // the TLS handshake would come here
    let (res, r, rest) = haggle(&c, Tls::Required, &mut || Ok(()));
    assert_eq!(res.unwrap(), Outcome::StartTls);
    let want = [
        TLS_REQD, TLS_REQD, TLS_REQD, TLS_REQD, TLS_REQD, TLS_REQD, INVAL, ACK,
    ];
    assert_eq!(kinds(&r), want);
    assert!(rest.is_empty(), "nothing after STARTTLS's ACK");
    // ABORT is still answered; EXPORT_NAME, which cannot be refused, ends the connection.
    let c = Client::new(FIXED).opt(OPT_ABORT, &[]);
    let (res, r, _) = haggle(&c, Tls::Required, &mut || Ok(()));
    assert_eq!((res.unwrap(), kinds(&r)), (Outcome::Ended, vec![ACK]));
    let c = Client::new(FIXED).opt(OPT_EXPORT_NAME, b"");
    let (res, r, rest) = haggle(&c, Tls::Required, &mut || Ok(()));
    assert_eq!(res.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    assert!(r.is_empty() && rest.is_empty());
}

#[test]
fn tls_offered_is_optional_and_starttls_is_once() {
    let c = Client::new(FIXED).opt(OPT_GO, &go("", &[]));
    let (res, _, _) = haggle(&c, Tls::Offered, &mut || Ok(()));
    assert!(matches!(res.unwrap(), Outcome::Transmit(_)));
    let c = Client::new(FIXED)
        .opt(OPT_STRUCTURED_REPLY, &[])
        .opt(OPT_STARTTLS, &[]);
    let (res, r, _) = haggle(&c, Tls::Offered, &mut || Ok(()));
    assert_eq!(
        (res.unwrap(), kinds(&r)),
        (Outcome::StartTls, vec![ACK, ACK])
    );
    // Inside TLS: nothing from before is kept, and a second STARTTLS is invalid.
    let c = Client::new(FIXED)
        .opt(OPT_STARTTLS, &[])
        .opt(OPT_GO, &go("", &[]));
    let (res, r, _) = haggle(&c, Tls::Active, &mut || Ok(()));
    assert_eq!(kinds(&r), [INVAL, INFO, INFO, ACK]);
    let Outcome::Transmit(neg) = res.unwrap() else {
        panic!("no transmission inside TLS")
    };
    assert!(!neg.structured);
    // Without TLS, STARTTLS is unsupported.
    let c = Client::new(FIXED).opt(OPT_STARTTLS, &[]);
    let (_, r, _) = haggle(&c, Tls::Off, &mut || Ok(()));
    assert_eq!(kinds(&r), [UNSUP]);
}

#[test]
fn a_refused_admission_answers_go_with_policy_and_ends_export_name() {
    let mut asked = 0;
    let mut full = || {
        asked += 1;
        Err("the server is full".to_string())
    };
    let c = Client::new(FIXED)
        .opt(OPT_INFO, &go("", &[]))
        .opt(OPT_GO, &go("", &[]))
        .opt(OPT_ABORT, &[]);
    let (res, r, _) = haggle(&c, Tls::Off, &mut full);
    assert_eq!(res.unwrap(), Outcome::Ended);
    assert_eq!(kinds(&r), [INFO, INFO, ACK, REP_ERR_POLICY, ACK]);
    assert_eq!(r[3].2, b"the server is full");
    let c = Client::new(FIXED).opt(OPT_EXPORT_NAME, b"");
    let (res, _, rest) = haggle(&c, Tls::Off, &mut full);
    assert_eq!(res.unwrap(), Outcome::Ended);
    assert!(rest.is_empty(), "nothing is sent: the connection just ends");
    assert_eq!(
        asked, 2,
        "INFO does not take a place, GO and EXPORT_NAME do"
    );
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
