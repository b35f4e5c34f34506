//! Where an image's files are: an OCI image layout directory on disk, or the tree of an archive
//! read already (an OCI archive, a `docker save` archive), whose files are ranges of its spool.
//! Paths come from the image's own JSON, so they are looked up strictly below the image's root
//! (no `..`, no absolute path; symlinks inside an archive followed only within it). Blobs are
//! checked against their digests ([`Digest`]) before anything reads them.

use std::cell::RefCell;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use sha2::Digest as _;

use crate::source::tar::path::components;
use crate::source::{display, secret, Entry, Kind, Origin, Spool, Tree};

/// Most bytes of JSON read from one file of an image (a manifest, an index, a config).
pub const MAX_JSON: u64 = 16 << 20;
/// Most symlinks followed to find one file in an archive.
const MAX_LINKS: usize = 16;

/// The files of an image.
pub enum Store<'a> {
    /// An OCI image layout directory, and the first of its files opened (or of the directories
    /// on their way) that others may not read, in words (see [`crate::source::secret`]).
    Dir(PathBuf, RefCell<Option<String>>),
    /// An archive's tree.
    Archive(&'a Tree),
}

impl Store<'_> {
    /// The file at `path` (relative, `/`-separated): a reader and its size.
    pub fn open(&self, path: &str) -> Result<(Box<dyn Read>, u64)> {
        let comps = components(path.as_bytes()).with_context(|| format!("'{path}'"))?;
        match self {
            Store::Dir(root, unreadable) => {
                // Remembers the first file or directory read that others may not read.
                let note = |p: &std::path::Path, m: &std::fs::Metadata| {
                    let mut u = unreadable.borrow_mut();
                    if u.is_none() {
                        *u = secret::host_secret(p, m);
                    }
                };
                let mut p = root.clone();
                for c in &comps {
                    // The directories on the way (the root is an input: it is checked as one).
                    // One that is missing is reported by the open below.
                    if p != *root {
                        if let Ok(m) = std::fs::metadata(&p) {
                            note(&p, &m);
                        }
                    }
                    p.push(&*String::from_utf8_lossy(c));
                }
                // O_NONBLOCK: a FIFO in the layout must not block the open (it is refused below).
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(
                        (rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32,
                    )
                    .open(&p)
                    .with_context(|| p.display().to_string())?;
                let m = f.metadata().with_context(|| p.display().to_string())?;
                if !m.is_file() {
                    bail!("{}: not a regular file", p.display());
                }
                note(&p, &m);
                Ok((Box::new(f), m.len()))
            }
            Store::Archive(tree) => {
                let e = find(&tree.root, comps.iter().map(|c| c.to_vec()).collect())
                    .with_context(|| format!("'{path}': no such file in the archive"))?;
                let Kind::File { size, data, .. } = &e.kind else {
                    bail!("'{path}' in the archive is not a regular file");
                };
                let Some(Origin::Spool(spool)) = tree.origins.get(data.src() as usize) else {
                    bail!("'{path}': not in the archive's spool");
                };
                let start = match data {
                    crate::source::Data::Spool { offset, .. } => *offset,
                    _ => bail!("'{path}': not in the archive's spool"),
                };
                let r = SpoolReader {
                    spool: spool.clone(),
                    pos: start,
                    end: start + size,
                };
                Ok((Box::new(r), *size))
            }
        }
    }

    /// The whole file at `path`, at most [`MAX_JSON`] bytes, checked against `digest` if given.
    pub fn read_small(&self, path: &str, digest: Option<&Digest>) -> Result<Vec<u8>> {
        let (r, size) = self.open(path)?;
        if size > MAX_JSON {
            bail!("'{path}' is {size} bytes, more than the {MAX_JSON} accepted");
        }
        let mut v = Vec::with_capacity(size as usize);
        r.take(MAX_JSON)
            .read_to_end(&mut v)
            .with_context(|| format!("reading '{path}'"))?;
        if let Some(d) = digest {
            d.check(&mut &v[..], size, path)?;
        }
        Ok(v)
    }
}

/// The entry at `comps` below `root`, following symlinks within the tree (never above it).
fn find(root: &Entry, mut todo: Vec<Vec<u8>>) -> Option<&Entry> {
    todo.reverse();
    let mut at: Vec<&Entry> = vec![root];
    let mut links = 0;
    loop {
        // `.`, `..` and empty components (from link targets) resolved, never above the root.
        while let Some(p) = todo.last() {
            match &p[..] {
                b"" | b"." => {}
                b".." => {
                    if at.len() > 1 {
                        at.pop();
                    }
                }
                _ => break,
            }
            todo.pop();
        }
        let Some(c) = todo.pop() else {
            return at.last().copied();
        };
        let children = at.last()?.children();
        let i = children.binary_search_by(|e| (*e.name).cmp(&c[..])).ok()?;
        let e = &children[i];
        match &e.kind {
            Kind::Symlink { target } => {
                links += 1;
                if links > MAX_LINKS {
                    return None;
                }
                if target.starts_with(b"/") {
                    at.truncate(1);
                }
                todo.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
            }
            _ => at.push(e),
        }
    }
}

/// A range of a spool file, read in order.
struct SpoolReader {
    spool: Arc<Spool>,
    pos: u64,
    end: u64,
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min((self.end - self.pos) as usize);
        if n == 0 {
            return Ok(0);
        }
        let got = self.spool.read_at(&mut buf[..n], self.pos)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the spool file is short",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}

/// A content digest: `sha256:HEX` or `sha512:HEX` (lowercase hex of the right length).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    pub algorithm: &'static str,
    pub hex: String,
}

impl Digest {
    /// Parses `ALGORITHM:HEX`; other algorithms are refused.
    pub fn parse(s: &str) -> Result<Digest> {
        let (alg, hex) = s
            .split_once(':')
            .with_context(|| format!("digest '{}' has no algorithm", display(s.as_bytes())))?;
        let (algorithm, len) = match alg {
            "sha256" => ("sha256", 64),
            "sha512" => ("sha512", 128),
            _ => bail!(
                "digest '{}': algorithm '{}' is not supported (sha256, sha512)",
                display(s.as_bytes()),
                display(alg.as_bytes())
            ),
        };
        if hex.len() != len
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            bail!(
                "digest '{}' is not {len} lowercase hex digits",
                display(s.as_bytes())
            );
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// Where an OCI image layout keeps the blob: `blobs/ALGORITHM/HEX`.
    pub fn blob_path(&self) -> String {
        format!("blobs/{}/{}", self.algorithm, self.hex)
    }

    /// Reads `r` to its end and checks that it is `size` bytes with this digest; `what` names
    /// it in the error.
    pub fn check(&self, r: &mut dyn Read, size: u64, what: &str) -> Result<()> {
        let mut h = Hasher::new(self.algorithm);
        let n = io::copy(r, &mut h).with_context(|| format!("reading {what}"))?;
        if n != size {
            bail!("{what} is {n} bytes, but its descriptor says {size}: corrupt or truncated");
        }
        let got = h.hex();
        if got != self.hex {
            bail!(
                "{what} is corrupt: its {} is {got}, not {}",
                self.algorithm,
                self.hex
            );
        }
        Ok(())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

/// SHA-256 or SHA-512 as an [`io::Write`] sink.
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: &str) -> Hasher {
        match algorithm {
            "sha512" => Hasher::Sha512(sha2::Sha512::new()),
            _ => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    pub fn hex(self) -> String {
        let bytes = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Hasher::Sha256(h) => h.update(buf),
            Hasher::Sha512(h) => h.update(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that hashes what passes through it and, at its end, fails unless the digest is
/// `want` (a layer's uncompressed bytes against the config's `diff_ids`).
pub struct Hashing {
    inner: Box<dyn Read>,
    hasher: Option<Hasher>,
    want: Digest,
    what: String,
}

impl Hashing {
    pub fn new(inner: Box<dyn Read>, want: Digest, what: String) -> Hashing {
        Hashing {
            inner,
            hasher: Some(Hasher::new(want.algorithm)),
            want,
            what,
        }
    }
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match (n, self.hasher.as_mut()) {
            (0, Some(_)) => {
                let got = self.hasher.take().expect("checked").hex();
                if got != self.want.hex {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} is corrupt: its uncompressed {} is {got}, not {} (the config's diff_ids)",
                            self.what, self.want.algorithm, self.want.hex
                        ),
                    ));
                }
            }
            (n, Some(h)) => {
                io::Write::write_all(h, &buf[..n])?;
            }
            _ => {}
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_parsed_strictly_and_checked() {
        let d = Digest::parse(
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        )
        .unwrap();
        assert_eq!(
            d.blob_path(),
            "blobs/sha256/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        d.check(&mut &b"hello"[..], 5, "x").unwrap();
        let e = d
            .check(&mut &b"hellO"[..], 5, "blob x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("blob x is corrupt"), "{e}");
        let e = d.check(&mut &b"hell"[..], 5, "x").unwrap_err().to_string();
        assert!(e.contains("4 bytes"), "{e}");
        for bad in [
            "sha256:ABC",
            "md5:00",
            "sha256",
            "sha256:../../etc/passwd",
            "sha512:00",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        let mut h = Hashing::new(Box::new(&b"hello"[..]), d.clone(), "layer".into());
        let mut v = Vec::new();
        h.read_to_end(&mut v).unwrap();
        let mut h = Hashing::new(Box::new(&b"hullo"[..]), d, "layer".into());
        let e = h.read_to_end(&mut v).unwrap_err().to_string();
        assert!(e.contains("layer is corrupt"), "{e}");
        // sha512 too.
        let d = Digest::parse(
            "sha512:9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca7\
             2323c3d99ba5c11d7c7acc6e14b8c5da0c4663475c2e5c3adef46f73bcdec043",
        )
        .unwrap();
        assert_eq!(d.blob_path().len(), "blobs/sha512/".len() + 128);
        d.check(&mut &b"hello"[..], 5, "x").unwrap();
        assert!(d.check(&mut &b"hellO"[..], 5, "x").is_err());
    }
}
