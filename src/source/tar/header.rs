//! One 512-byte tar header block: its checksum, its numeric fields (octal, or GNU base-256 for
//! large or negative values), its name (with the ustar prefix) and its type flag.

use anyhow::{bail, Result};

/// The size of a tar block; headers and data are padded to it.
pub const BLOCK: usize = 512;

/// Which header layout the block uses (from its magic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// POSIX ustar (`ustar\0` `00`): the name may have a prefix.
    Ustar,
    /// GNU (`ustar  \0`): atime/ctime and the old sparse map instead of the prefix.
    Gnu,
    /// Version 7 (no magic).
    V7,
}

/// The sparse fields of an old GNU header.
pub struct GnuSparse {
    /// Up to 4 (offset, length) pairs.
    pub map: Vec<(u64, u64)>,
    /// Whether extension blocks with more pairs follow the header.
    pub extended: bool,
    /// The file's size.
    pub real_size: u64,
}

/// A header block whose checksum was verified.
pub struct Header<'a> {
    pub raw: &'a [u8; BLOCK],
    pub format: Format,
}

/// True when every byte of the block is zero (an end-of-archive marker).
pub fn is_zero(block: &[u8; BLOCK]) -> bool {
    block.iter().all(|&b| b == 0)
}

impl<'a> Header<'a> {
    /// Checks the block's checksum (the unsigned sum, or the signed one old tars wrote).
    pub fn parse(raw: &'a [u8; BLOCK]) -> Result<Self> {
        let Some(stored) = octal(&raw[148..156]) else {
            bail!("corrupt header (unreadable checksum field)");
        };
        let (mut unsigned, mut signed) = (0u64, 0i64);
        for (i, &b) in raw.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += b as u64;
            signed += b as i8 as i64;
        }
        if stored != unsigned && stored as i64 != signed {
            bail!("corrupt header (checksum mismatch)");
        }
        let format = match (&raw[257..263], &raw[263..265]) {
            (b"ustar\0", _) => Format::Ustar,
            (b"ustar ", b" \0") => Format::Gnu,
            _ => Format::V7,
        };
        Ok(Header { raw, format })
    }

    pub fn typeflag(&self) -> u8 {
        self.raw[156]
    }

    /// The name field, with the ustar prefix joined in front when there is one.
    pub fn path(&self) -> Vec<u8> {
        let name = cstr(&self.raw[0..100]);
        if self.format == Format::Ustar {
            // star's variant keeps times after a 131-byte prefix and ends with "tar\0".
            let end = if &self.raw[508..512] == b"tar\0" {
                476
            } else {
                500
            };
            let prefix = cstr(&self.raw[345..end]);
            if !prefix.is_empty() {
                let mut p = prefix.to_vec();
                p.push(b'/');
                p.extend_from_slice(name);
                return p;
            }
        }
        name.to_vec()
    }

    pub fn link_name(&self) -> Vec<u8> {
        cstr(&self.raw[157..257]).to_vec()
    }

    pub fn mode(&self) -> Result<u64> {
        self.unsigned(100..108, "mode")
    }

    pub fn uid(&self) -> Result<u64> {
        self.unsigned(108..116, "uid")
    }

    pub fn gid(&self) -> Result<u64> {
        self.unsigned(116..124, "gid")
    }

    pub fn size(&self) -> Result<u64> {
        self.unsigned(124..136, "size")
    }

    pub fn mtime(&self) -> Result<i64> {
        self.signed(136..148, "mtime")
    }

    pub fn dev_major(&self) -> Result<u64> {
        self.unsigned(329..337, "devmajor")
    }

    pub fn dev_minor(&self) -> Result<u64> {
        self.unsigned(337..345, "devminor")
    }

    /// The GNU header's atime and ctime (zero when not recorded).
    pub fn gnu_times(&self) -> Result<(i64, i64)> {
        if self.format != Format::Gnu {
            return Ok((0, 0));
        }
        Ok((
            self.signed(345..357, "atime")?,
            self.signed(357..369, "ctime")?,
        ))
    }

    /// The old GNU sparse map of this header.
    pub fn gnu_sparse(&self) -> Result<GnuSparse> {
        Ok(GnuSparse {
            map: sparse_pairs(&self.raw[386..482], 4)?,
            extended: self.raw[482] != 0,
            real_size: self.unsigned(483..495, "realsize")?,
        })
    }

    fn unsigned(&self, r: std::ops::Range<usize>, what: &str) -> Result<u64> {
        match number(&self.raw[r]) {
            Some(n) if n >= 0 => Ok(n as u64),
            _ => bail!("corrupt header (invalid {what} field)"),
        }
    }

    fn signed(&self, r: std::ops::Range<usize>, what: &str) -> Result<i64> {
        number(&self.raw[r]).ok_or_else(|| anyhow::anyhow!("corrupt header (invalid {what} field)"))
    }
}

/// The (offset, length) pairs of an old GNU sparse map area of `n` 24-byte slots (an empty
/// slot ends the list).
pub fn sparse_pairs(area: &[u8], n: usize) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for i in 0..n {
        let slot = &area[i * 24..i * 24 + 24];
        if slot[0] == 0 {
            break;
        }
        match (number(&slot[..12]), number(&slot[12..])) {
            (Some(o), Some(l)) if o >= 0 && l >= 0 => out.push((o as u64, l as u64)),
            _ => bail!("corrupt header (invalid sparse map)"),
        }
    }
    Ok(out)
}

/// The bytes before the first NUL.
fn cstr(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// A numeric field: GNU base-256 (first byte 0x80 positive, 0xff negative, two's complement)
/// or octal digits with leading spaces and a NUL or space terminator. An empty field is 0.
fn number(f: &[u8]) -> Option<i64> {
    match f.first() {
        Some(&0x80) | Some(&0xff) => {
            let neg = f[0] == 0xff;
            let body = &f[1..];
            // At most 8 significant bytes fit an i64.
            let skip = body.len().saturating_sub(8);
            let fill = if neg { 0xff } else { 0 };
            if body[..skip].iter().any(|&b| b != fill) {
                return None;
            }
            let mut v: i64 = if neg { -1 } else { 0 };
            for &b in &body[skip..] {
                v = (v << 8) | b as i64;
            }
            if neg != (v < 0) {
                return None;
            }
            Some(v)
        }
        _ => octal(f).and_then(|v| i64::try_from(v).ok()),
    }
}

fn octal(f: &[u8]) -> Option<u64> {
    let s = cstr(f);
    let s = s.trim_ascii();
    let mut v: u64 = 0;
    for &c in s {
        if !(b'0'..=b'7').contains(&c) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((c - b'0') as u64)?;
    }
    Some(v)
}

/// Bytes of padding after `n` bytes of data, up to the next block boundary.
pub fn padding(n: u64) -> u64 {
    (BLOCK as u64 - n % BLOCK as u64) % BLOCK as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_base256_numbers() {
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b"   755 \0"), Some(0o755));
        assert_eq!(number(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(number(b"12345670123\0"), Some(0o12345670123));
        assert_eq!(number(b"0009\0"), None);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[8..].copy_from_slice(&4_294_967_294u32.to_be_bytes());
        assert_eq!(number(&big), Some(4_294_967_294));
        let mut neg = [0xffu8; 12];
        neg[11] = 0xfe;
        assert_eq!(number(&neg), Some(-2));
        let mut huge = [0u8; 12];
        huge[0] = 0x80;
        huge[2] = 1;
        assert_eq!(number(&huge), None);
    }

    fn block(name: &[u8], prefix: &[u8], magic: &[u8; 8]) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[..name.len()].copy_from_slice(name);
        b[345..345 + prefix.len()].copy_from_slice(prefix);
        b[257..265].copy_from_slice(magic);
        b[156] = b'0';
        b[100..108].copy_from_slice(b"0000644\0");
        b[148..156].fill(b' ');
        let sum: u64 = b.iter().map(|&c| c as u64).sum();
        b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        b
    }

    #[test]
    fn checksum_prefix_and_formats() {
        let b = block(b"name", b"some/prefix", b"ustar\x0000");
        let h = Header::parse(&b).unwrap();
        assert_eq!(h.format, Format::Ustar);
        assert_eq!(h.path(), b"some/prefix/name");
        assert_eq!(h.mode().unwrap(), 0o644);
        let b = block(b"name", b"", b"ustar  \0");
        assert_eq!(Header::parse(&b).unwrap().format, Format::Gnu);
        let mut bad = block(b"name", b"", b"ustar  \0");
        bad[0] = b'N';
        assert!(Header::parse(&bad)
            .err()
            .unwrap()
            .to_string()
            .contains("checksum"));
    }

    #[test]
    fn padding_to_blocks() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
    }
}
