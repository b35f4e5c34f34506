//! The fixed-newstyle handshake: greeting, client flags, then option haggling (EXPORT_NAME,
//! GO, INFO, LIST, ABORT, STARTTLS, STRUCTURED_REPLY, SET/LIST_META_CONTEXT) until the client
//! enters the transmission phase, asks for TLS, aborts or goes away.
//!
//! TLS follows the protocol document: with TLS required, every option before NBD_OPT_STARTTLS
//! but ABORT is answered NBD_REP_ERR_TLS_REQD (EXPORT_NAME, which cannot be refused, ends the
//! connection); after the ACK to STARTTLS the caller runs the TLS handshake and calls
//! [`negotiate`] again with [`Tls::Active`]: the haggling starts again inside TLS, with nothing
//! negotiated before it kept. The client's flags are sent once, before any option.

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

/// Where a connection stands with TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// The server has no TLS: STARTTLS is unsupported.
    Off,
    /// TLS is optional (`--tls=on`): STARTTLS is accepted, and so is everything else.
    Offered,
    /// TLS is required (`--tls=require`) and not started: only STARTTLS and ABORT are answered.
    Required,
    /// Inside TLS: a second STARTTLS is invalid.
    Active,
}

/// What the client sent before its first option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    /// NBD_FLAG_C_NO_ZEROES: no 124 bytes of padding after NBD_OPT_EXPORT_NAME's reply.
    pub no_zeroes: bool,
}

/// How option haggling ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client entered the transmission phase.
    Transmit(Negotiated),
    /// STARTTLS was acknowledged: the TLS handshake comes next, on the same socket.
    StartTls,
    /// The client aborted (NBD_OPT_ABORT) or disconnected.
    Ended,
}

/// Asked before a client enters the transmission phase: `Err(why)` refuses it (GO is
/// answered NBD_REP_ERR_POLICY with `why` and the haggling goes on; EXPORT_NAME, which has no
/// error reply, ends the connection). The caller says why on its side.
pub type Admit<'a> = &'a mut dyn FnMut() -> Result<(), String>;

/// Most option data read into memory; longer options are skipped and refused.
pub const MAX_OPTION_DATA: u32 = 64 * 1024;

/// The whole handshake of a server without TLS that admits every client (unit tests, fuzzing,
/// test servers). Ok(None): the client aborted (NBD_OPT_ABORT) or disconnected during
/// negotiation; Err: I/O error or protocol violation (bad magic etc.) — the caller just drops
/// the connection.
pub fn handshake(
    r: &mut dyn Read,
    w: &mut dyn Write,
    export: &dyn Export,
    info: &ExportInfo,
) -> io::Result<Option<Negotiated>> {
    let Some(flags) = greet(r, w)? else {
        return Ok(None);
    };
    match negotiate(r, w, export, info, flags, Tls::Off, &mut || Ok(()))? {
        Outcome::Transmit(neg) => Ok(Some(neg)),
        Outcome::StartTls => unreachable!("STARTTLS is refused without TLS"),
        Outcome::Ended => Ok(None),
    }
}

/// Sends the greeting and reads the client's flags. Ok(None): the client went away.
pub fn greet(r: &mut dyn Read, w: &mut dyn Write) -> io::Result<Option<ClientFlags>> {
    let mut run = || -> io::Result<ClientFlags> {
        let mut greeting = Vec::with_capacity(18);
        greeting.extend_from_slice(&NBDMAGIC.to_be_bytes());
        greeting.extend_from_slice(&IHAVEOPT.to_be_bytes());
        greeting.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        w.write_all(&greeting)?;
        w.flush()?;
        let client_flags = read_u32(r)?;
        let known = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;
        if client_flags & !known != 0 {
            return Err(invalid(format!("unknown client flags {client_flags:#x}")));
        }
        Ok(ClientFlags {
            no_zeroes: client_flags & FLAG_C_NO_ZEROES != 0,
        })
    };
    match run() {
        Err(e) if is_disconnect(&e) => Ok(None),
        other => other.map(Some),
    }
}

/// Option haggling from a fresh state (at the start, or again inside TLS) until the client
/// enters the transmission phase, asks for TLS, aborts or goes away; `admit` is asked before
/// it enters the transmission phase. Err: I/O error or protocol violation.
pub fn negotiate(
    r: &mut dyn Read,
    w: &mut dyn Write,
    export: &dyn Export,
    info: &ExportInfo,
    flags: ClientFlags,
    tls: Tls,
    admit: Admit<'_>,
) -> io::Result<Outcome> {
    let mut h = Haggle {
        w,
        export,
        info,
        tls,
        admit,
        no_zeroes: flags.no_zeroes,
        structured: false,
        base_allocation: false,
    };
    match h.run(r) {
        Err(e) if is_disconnect(&e) => Ok(Outcome::Ended),
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
    tls: Tls,
    admit: Admit<'a>,
    no_zeroes: bool,
    structured: bool,
    base_allocation: bool,
}

/// What one option leads to.
enum Next {
    Continue,
    Abort,
    StartTls,
    Transmit,
}

impl Haggle<'_> {
    fn run(&mut self, r: &mut dyn Read) -> io::Result<Outcome> {
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
            let next = if self.tls == Tls::Required {
                self.before_tls(opt, &data)?
            } else {
                self.option(opt, &data)?
            };
            match next {
                Next::Continue => {}
                Next::Abort => return Ok(Outcome::Ended),
                Next::StartTls => return Ok(Outcome::StartTls),
                Next::Transmit => {
                    return Ok(Outcome::Transmit(Negotiated {
                        structured: self.structured,
                        base_allocation: self.structured && self.base_allocation,
                        export_name: self.info.name.clone(),
                    }))
                }
            }
        }
    }

    /// An option while TLS is required and not started: STARTTLS and ABORT are answered, the
    /// rest refused with NBD_REP_ERR_TLS_REQD; EXPORT_NAME (no error reply) ends the connection.
    fn before_tls(&mut self, opt: u32, data: &[u8]) -> io::Result<Next> {
        match opt {
            OPT_STARTTLS | OPT_ABORT => self.option(opt, data),
            OPT_EXPORT_NAME => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the client asked for the export without TLS, which --tls=require forbids \
                 (NBD_OPT_EXPORT_NAME cannot be refused); dropped",
            )),
            _ => {
                let msg = "TLS is required: send NBD_OPT_STARTTLS first";
                self.error(opt, REP_ERR_TLS_REQD, msg)?;
                Ok(Next::Continue)
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
                if (self.admit)().is_err() {
                    return Ok(Next::Abort); // no error reply exists: just close
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
            OPT_STARTTLS => return self.starttls(opt, data),
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

    fn starttls(&mut self, opt: u32, data: &[u8]) -> io::Result<Next> {
        match self.tls {
            Tls::Off => self.error(opt, REP_ERR_UNSUP, "TLS is not supported")?,
            Tls::Active => self.error(opt, REP_ERR_INVALID, "TLS is already in use")?,
            _ if !data.is_empty() => self.error(opt, REP_ERR_INVALID, "STARTTLS takes no data")?,
            Tls::Offered | Tls::Required => {
                self.reply(opt, REP_ACK, &[])?;
                return Ok(Next::StartTls);
            }
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
        if opt == OPT_GO {
            if let Err(why) = (self.admit)() {
                self.error(opt, REP_ERR_POLICY, &why)?;
                return Ok(Next::Continue);
            }
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
mod tests;
