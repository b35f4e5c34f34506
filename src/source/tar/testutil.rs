//! A small in-memory tar writer for the unit tests: ustar headers (checksummed), PAX `x`
//! records, GNU long names, and the end-of-archive blocks.

use super::header::{padding, BLOCK};

pub struct Ar {
    pub bytes: Vec<u8>,
    pub mtime: u64,
}

impl Ar {
    pub fn new() -> Ar {
        Ar {
            bytes: Vec::new(),
            mtime: 1_000_000,
        }
    }

    /// A raw header and its data.
    pub fn raw(&mut self, name: &[u8], flag: u8, mode: u32, link: &[u8], data: &[u8]) -> &mut Ar {
        let mut b = [0u8; BLOCK];
        b[..name.len()].copy_from_slice(name);
        put(&mut b[100..108], mode as u64);
        put(&mut b[108..116], 1000);
        put(&mut b[116..124], 100);
        put(&mut b[124..136], data.len() as u64);
        put(&mut b[136..148], self.mtime);
        b[156] = flag;
        b[157..157 + link.len()].copy_from_slice(link);
        b[257..265].copy_from_slice(b"ustar\x0000");
        put(&mut b[329..337], 0);
        put(&mut b[337..345], 0);
        b[148..156].fill(b' ');
        let sum: u64 = b.iter().map(|&c| c as u64).sum();
        b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        self.bytes.extend_from_slice(&b);
        self.bytes.extend_from_slice(data);
        self.bytes
            .resize(self.bytes.len() + padding(data.len() as u64) as usize, 0);
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Ar {
        self.raw(name.as_bytes(), b'0', 0o644, b"", data)
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Ar {
        self.raw(name.as_bytes(), b'5', mode, b"", b"")
    }

    pub fn link(&mut self, name: &str, target: &str) -> &mut Ar {
        self.raw(name.as_bytes(), b'1', 0o644, target.as_bytes(), b"")
    }

    /// A PAX `x` header for the next entry.
    pub fn pax(&mut self, recs: &[(&str, &[u8])]) -> &mut Ar {
        let mut data = Vec::new();
        for (k, v) in recs {
            let body = [k.as_bytes(), b"=", v, b"\n"].concat();
            let mut n = body.len() + 2;
            while format!("{n} ").len() + body.len() != n {
                n += 1;
            }
            data.extend(format!("{n} ").into_bytes());
            data.extend(body);
        }
        self.raw(b"././@PaxHeader", b'x', 0o644, b"", &data)
    }

    /// A GNU long name record for the next entry.
    pub fn long_name(&mut self, name: &[u8]) -> &mut Ar {
        let mut d = name.to_vec();
        d.push(0);
        self.raw(b"././@LongLink", b'L', 0o644, b"", &d)
    }

    /// The archive with its two end-of-archive blocks.
    pub fn end(&self) -> Vec<u8> {
        let mut v = self.bytes.clone();
        v.resize(v.len() + 2 * BLOCK, 0);
        v
    }
}

fn put(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}\0", v, w = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}
