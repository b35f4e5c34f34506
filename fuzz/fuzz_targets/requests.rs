//! Fuzzes the transmission phase: the first byte picks what was negotiated (structured
//! replies, base:allocation, a writable export), the rest is the client's request stream.
//! With structured replies the server's output must parse as well-formed replies.

#![no_main]

use std::io::{self, Cursor, Write};
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use linuxdisk_mk::nbd::export::MemExport;
use linuxdisk_mk::nbd::handshake::Negotiated;
use linuxdisk_mk::nbd::proto::*;
use linuxdisk_mk::nbd::session::transmission;

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes(b[..2].try_into().unwrap())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

/// Checks a reply stream when structured replies were negotiated (it is then context-free).
fn check_structured(mut out: &[u8]) {
    while !out.is_empty() {
        if be32(out) == SIMPLE_REPLY_MAGIC {
            out = &out[16..];
            continue;
        }
        assert_eq!(be32(out), STRUCTURED_REPLY_MAGIC);
        let (flags, kind, len) = (be16(&out[4..]), be16(&out[6..]), be32(&out[16..]) as usize);
        let p = &out[20..20 + len];
        assert_eq!(flags & !REPLY_FLAG_DONE, 0);
        match kind {
            REPLY_TYPE_NONE => assert!(len == 0 && flags == REPLY_FLAG_DONE),
            REPLY_TYPE_OFFSET_DATA => assert!(len >= 9),
            REPLY_TYPE_OFFSET_HOLE => assert!(len == 12 && be32(&p[8..]) > 0),
            REPLY_TYPE_BLOCK_STATUS => {
                assert!(len >= 12 && (len - 4) % 8 == 0 && flags == REPLY_FLAG_DONE);
                assert!(p[4..].chunks(8).all(|d| be32(d) > 0 && be32(&d[4..]) <= 3));
            }
            REPLY_TYPE_ERROR => {
                assert!(len >= 6 && be32(p) != 0 && be16(&p[4..]) as usize == len - 6);
            }
            k => panic!("unexpected chunk type {k}"),
        }
        out = &out[20 + len..];
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let neg = Negotiated {
        structured: mode & 1 != 0,
        base_allocation: mode & 2 != 0,
        export_name: String::new(),
    };
    let mut content = vec![0u8; 256 << 10];
    content[4096..12288].fill(0xAB);
    content[100_000..100_100].fill(0xCD);
    let export = Arc::new(MemExport::new(content, mode & 4 != 0));
    let out = Shared::default();
    let reader = Box::new(Cursor::new(input.to_vec()));
    let _ = transmission(reader, Box::new(out.clone()), export, &neg);
    if neg.structured {
        check_structured(&out.0.lock().unwrap());
    }
});
