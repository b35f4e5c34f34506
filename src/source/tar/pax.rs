//! PAX extended headers: the `LEN KEY=VALUE\n` records of `x` and `g` headers, and the values
//! this reader uses (path, linkpath, times with nanoseconds, ids, size, device numbers,
//! `SCHILY.xattr.*`, `SCHILY.acl.*`, the GNU sparse keywords). Values are bytes.

use anyhow::{bail, Context, Result};

use crate::source::Timestamp;

/// The records of one extended header, in order (GNU sparse 0.0 repeats keys).
pub fn records(data: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break; // padding some writers leave
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .context("corrupt PAX header (record without a length)")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .context("corrupt PAX header (invalid record length)")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            bail!("corrupt PAX header (record length does not match its contents)");
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .context("corrupt PAX header (record without '=')")?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

/// What the extended headers say about one entry (global values first, then the entry's own).
#[derive(Debug, Default, Clone)]
pub struct Extended {
    pub path: Option<Vec<u8>>,
    pub linkpath: Option<Vec<u8>>,
    pub size: Option<u64>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub mtime: Option<Timestamp>,
    pub atime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
    pub dev_major: Option<u64>,
    pub dev_minor: Option<u64>,
    /// `SCHILY.xattr.NAME` values by NAME, in header order (a repeated name: the last wins).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub acl_access: Option<Vec<u8>>,
    pub acl_default: Option<Vec<u8>>,
    pub sparse: SparseKeys,
}

/// The GNU sparse keywords (formats 0.0, 0.1 and 1.0).
#[derive(Debug, Default, Clone)]
pub struct SparseKeys {
    pub major: Option<u64>,
    pub minor: Option<u64>,
    pub name: Option<Vec<u8>>,
    /// `GNU.sparse.realsize` (1.0) or `GNU.sparse.size` (0.x).
    pub real_size: Option<u64>,
    /// 0.1: `GNU.sparse.map`; 0.0: the `GNU.sparse.offset`/`numbytes` pairs.
    pub map: Option<Vec<(u64, u64)>>,
    pending_offset: Option<u64>,
}

impl SparseKeys {
    /// Whether any sparse keyword was seen.
    pub fn present(&self) -> bool {
        self.major.is_some() || self.map.is_some() || self.real_size.is_some()
    }
}

impl Extended {
    /// Applies the records of one header. An empty value removes the keyword (POSIX).
    pub fn apply(&mut self, recs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let before = self.xattrs.len();
        for (k, v) in recs {
            self.set(k, v)
                .with_context(|| format!("PAX record {}", String::from_utf8_lossy(k)))?;
        }
        if self.xattrs.len() != before {
            self.drop_replaced_xattrs();
        }
        Ok(())
    }

    /// Keeps only the last value of each xattr name, in one pass (a header of many records
    /// must not cost their square).
    fn drop_replaced_xattrs(&mut self) {
        let mut seen = std::collections::HashSet::new();
        let mut kept: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(self.xattrs.len());
        for x in std::mem::take(&mut self.xattrs).into_iter().rev() {
            if seen.insert(x.0.clone()) {
                kept.push(x);
            }
        }
        kept.reverse();
        self.xattrs = kept;
    }

    fn set(&mut self, key: &[u8], v: &[u8]) -> Result<()> {
        let empty = v.is_empty();
        let opt_bytes = || (!empty).then(|| v.to_vec());
        match key {
            b"path" => self.path = opt_bytes(),
            b"linkpath" => self.linkpath = opt_bytes(),
            b"size" => self.size = opt(empty, || decimal(v))?,
            b"uid" => self.uid = opt(empty, || decimal(v))?,
            b"gid" => self.gid = opt(empty, || decimal(v))?,
            b"mtime" => self.mtime = opt(empty, || time(v))?,
            b"atime" => self.atime = opt(empty, || time(v))?,
            b"ctime" => self.ctime = opt(empty, || time(v))?,
            b"SCHILY.devmajor" => self.dev_major = opt(empty, || decimal(v))?,
            b"SCHILY.devminor" => self.dev_minor = opt(empty, || decimal(v))?,
            b"SCHILY.acl.access" => self.acl_access = opt_bytes(),
            b"SCHILY.acl.default" => self.acl_default = opt_bytes(),
            b"GNU.sparse.major" => self.sparse.major = opt(empty, || decimal(v))?,
            b"GNU.sparse.minor" => self.sparse.minor = opt(empty, || decimal(v))?,
            b"GNU.sparse.name" => self.sparse.name = opt_bytes(),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => {
                self.sparse.real_size = opt(empty, || decimal(v))?
            }
            b"GNU.sparse.map" => self.sparse.map = Some(number_list(v)?),
            b"GNU.sparse.offset" => self.sparse.pending_offset = Some(decimal(v)?),
            b"GNU.sparse.numbytes" => {
                let off = self
                    .sparse
                    .pending_offset
                    .take()
                    .context("GNU.sparse.numbytes without GNU.sparse.offset")?;
                self.sparse
                    .map
                    .get_or_insert_with(Vec::new)
                    .push((off, decimal(v)?));
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    self.xattrs.push((name.to_vec(), v.to_vec()));
                }
            }
        }
        Ok(())
    }
}

fn opt<T>(empty: bool, f: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
    if empty {
        Ok(None)
    } else {
        f().map(Some)
    }
}

/// A non-negative decimal number.
pub fn decimal(v: &[u8]) -> Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("invalid number {:?}", String::from_utf8_lossy(v)))
}

/// A comma-separated list of (offset, length) numbers.
fn number_list(v: &[u8]) -> Result<Vec<(u64, u64)>> {
    let nums = v
        .split(|&b| b == b',')
        .map(decimal)
        .collect::<Result<Vec<u64>>>()?;
    if nums.len() % 2 != 0 {
        bail!("odd number of values in the sparse map");
    }
    Ok(nums.chunks(2).map(|c| (c[0], c[1])).collect())
}

/// A PAX time: `[-]SECONDS[.FRACTION]`, the fraction truncated to nanoseconds. A negative value
/// is the real number, so `-1.25` is 1.25 s before the epoch (sec -2, nsec 750000000).
pub fn time(v: &[u8]) -> Result<Timestamp> {
    let bad = || anyhow::anyhow!("invalid time {:?}", String::from_utf8_lossy(v));
    let (neg, body) = match v.strip_prefix(b"-") {
        Some(b) => (true, b),
        None => (false, v),
    };
    let (int, frac) = match body.iter().position(|&b| b == b'.') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &b""[..]),
    };
    if int.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let sec = decimal(int).map_err(|_| bad())?;
    let sec = i64::try_from(sec).map_err(|_| bad())?;
    let mut nsec = 0u32;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |d| (d - b'0') as u32);
    }
    Ok(if !neg {
        Timestamp { sec, nsec }
    } else if nsec == 0 {
        Timestamp { sec: -sec, nsec }
    } else {
        Timestamp {
            sec: -sec - 1,
            nsec: 1_000_000_000 - nsec,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, v: &[u8]) -> Vec<u8> {
        let body = [k.as_bytes(), b"=", v, b"\n"].concat();
        let mut n = body.len() + 2;
        if n.to_string().len() + 1 + body.len() != n {
            n += 1;
        }
        let mut r = format!("{n} ").into_bytes();
        r.extend_from_slice(&body);
        assert_eq!(r.len(), n);
        r
    }

    #[test]
    fn records_are_length_delimited_bytes() {
        let mut d = rec("path", b"a/b");
        d.extend(rec("SCHILY.xattr.user.bin", b"x\ny=\0z"));
        let r = records(&d).unwrap();
        assert_eq!(r[0], (b"path".to_vec(), b"a/b".to_vec()));
        assert_eq!(
            r[1],
            (b"SCHILY.xattr.user.bin".to_vec(), b"x\ny=\0z".to_vec())
        );
        let mut e = Extended::default();
        e.apply(&r).unwrap();
        assert_eq!(e.xattrs, vec![(b"user.bin".to_vec(), b"x\ny=\0z".to_vec())]);
        assert!(records(b"99 path=x\n").is_err());
        assert!(records(b"abc").is_err());
    }

    #[test]
    fn a_repeated_xattr_keeps_its_last_value() {
        let x = |n: &str, v: &str| (format!("SCHILY.xattr.{n}").into_bytes(), v.into());
        let mut e = Extended::default();
        e.apply(&[x("user.a", "1"), x("user.b", "2"), x("user.a", "3")])
            .unwrap();
        e.apply(&[x("user.b", "4")]).unwrap();
        let want = |n: &str, v: &str| (n.as_bytes().to_vec(), v.as_bytes().to_vec());
        assert_eq!(e.xattrs, [want("user.a", "3"), want("user.b", "4")]);
    }

    #[test]
    fn empty_value_unsets_a_global_keyword() {
        let mut e = Extended::default();
        e.apply(&[(b"uid".to_vec(), b"5".to_vec())]).unwrap();
        assert_eq!(e.uid, Some(5));
        e.apply(&[(b"uid".to_vec(), vec![])]).unwrap();
        assert_eq!(e.uid, None);
    }

    #[test]
    fn times_with_nanoseconds_and_before_1970() {
        let t = |s: &str| time(s.as_bytes()).unwrap();
        assert_eq!(
            t("1700000000"),
            Timestamp {
                sec: 1700000000,
                nsec: 0
            }
        );
        assert_eq!(
            t("1.5"),
            Timestamp {
                sec: 1,
                nsec: 500_000_000
            }
        );
        assert_eq!(
            t("2.1234567899"),
            Timestamp {
                sec: 2,
                nsec: 123_456_789
            }
        );
        assert_eq!(
            t("-1.25"),
            Timestamp {
                sec: -2,
                nsec: 750_000_000
            }
        );
        assert_eq!(t("-7"), Timestamp { sec: -7, nsec: 0 });
        assert!(time(b"x").is_err());
        assert!(time(b"1.x").is_err());
        assert!(time(b".5").is_err());
    }

    #[test]
    fn sparse_keywords_of_formats_0_0_and_0_1() {
        let mut e = Extended::default();
        e.apply(&[
            (b"GNU.sparse.size".to_vec(), b"100".to_vec()),
            (b"GNU.sparse.offset".to_vec(), b"0".to_vec()),
            (b"GNU.sparse.numbytes".to_vec(), b"10".to_vec()),
            (b"GNU.sparse.offset".to_vec(), b"50".to_vec()),
            (b"GNU.sparse.numbytes".to_vec(), b"5".to_vec()),
        ])
        .unwrap();
        assert_eq!(e.sparse.map, Some(vec![(0, 10), (50, 5)]));
        let mut e = Extended::default();
        e.apply(&[(b"GNU.sparse.map".to_vec(), b"0,10,50,5".to_vec())])
            .unwrap();
        assert_eq!(e.sparse.map, Some(vec![(0, 10), (50, 5)]));
        assert!(e.sparse.present());
    }
}
