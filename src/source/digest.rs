//! A digest of a scanned tree as it will be stored: names, types, permissions, owners (after
//! `--owner`), mtimes (clamped), sizes, link targets, device numbers, hard-link structure,
//! extended attributes and every byte of content, whichever source (SOURCE or an `--add`) each
//! came from. Reproducible builds derive their UUIDs and GUIDs from it, so they depend on nothing
//! of the build host (atime, inode numbers, paths).

use std::collections::HashMap;

use anyhow::{Context, Result};

use super::bytes::file_bytes;
use super::dirs::Dirs;
use super::{Data, Entry, Kind, Layout, Tree};

/// What the digest normalises, as the image will.
#[derive(Debug, Clone, Copy)]
pub struct Normalise {
    pub owner: Option<(u32, u32)>,
    pub clamp_time: i64,
}

/// BLAKE3 of the tree, its files read from their sources.
pub fn digest(tree: &Tree, norm: Normalise) -> Result<[u8; 32]> {
    let dirs = Dirs::root(tree);
    let mut d = Digester {
        h: blake3::Hasher::new(),
        norm,
        links: HashMap::new(),
        tree,
        buf: vec![0u8; 1 << 20],
    };
    d.entry(&tree.root, &dirs, &mut Vec::new())?;
    Ok(*d.h.finalize().as_bytes())
}

struct Digester<'a> {
    h: blake3::Hasher,
    norm: Normalise,
    /// Hard-link identity → order of first appearance.
    links: HashMap<(u64, u64), u64>,
    tree: &'a Tree,
    buf: Vec<u8>,
}

impl Digester<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.h.update(&(bytes.len() as u64).to_le_bytes());
        self.h.update(bytes);
    }

    fn num(&mut self, n: u64) {
        self.h.update(&n.to_le_bytes());
    }

    /// Hashes `e`, at `rel` in the tree (`/a/b`), whose parent's source directories are `dirs`.
    fn entry(&mut self, e: &Entry, dirs: &Dirs, rel: &mut Vec<u8>) -> Result<()> {
        let m = &e.meta;
        self.put(&e.name);
        let (uid, gid) = self.norm.owner.unwrap_or((m.uid, m.gid));
        let t = if m.mtime.sec >= self.norm.clamp_time {
            (self.norm.clamp_time, 0)
        } else {
            (m.mtime.sec, m.mtime.nsec)
        };
        for n in [
            m.perm as u64,
            uid as u64,
            gid as u64,
            t.0 as u64,
            t.1 as u64,
        ] {
            self.num(n);
        }
        for (k, v) in &e.xattrs {
            self.put(k);
            self.put(v);
        }
        if !e.is_dir() && m.nlink > 1 {
            let next = self.links.len() as u64;
            let first = *self.links.entry((m.dev, m.ino)).or_insert(next);
            self.num(first);
            if first != next {
                return Ok(()); // content already hashed under its first name
            }
        }
        match &e.kind {
            Kind::Dir { children } => {
                self.num(1);
                self.num(children.len() as u64);
                for c in children {
                    let len = rel.len();
                    rel.push(b'/');
                    rel.extend_from_slice(&c.name);
                    if c.is_dir() {
                        let sub = dirs.child(self.tree, c, rel)?;
                        self.entry(c, &sub, rel)?;
                    } else {
                        self.entry(c, dirs, rel)?;
                    }
                    rel.truncate(len);
                }
            }
            Kind::File { size, layout, data } => {
                self.num(2);
                self.num(*size);
                self.content(e, dirs, *size, layout, *data, rel)?;
            }
            Kind::Symlink { target } => {
                self.num(3);
                self.put(target);
            }
            Kind::CharDev { major, minor } => {
                self.num(4);
                self.num((*major as u64) << 32 | *minor as u64);
            }
            Kind::BlockDev { major, minor } => {
                self.num(5);
                self.num((*major as u64) << 32 | *minor as u64);
            }
            Kind::Fifo => self.num(6),
            Kind::Socket => self.num(7),
        }
        Ok(())
    }

    fn content(
        &mut self,
        e: &Entry,
        dirs: &Dirs,
        size: u64,
        layout: &Layout,
        data: Data,
        rel: &[u8],
    ) -> Result<()> {
        let ranges = layout.data_ranges(size);
        if ranges.iter().all(|(a, b)| a == b) {
            // Nothing to read (an empty file): not opened.
            ranges.iter().for_each(|&(a, _)| self.num(a));
            return Ok(());
        }
        let tree = self.tree;
        let origins = &tree.origins;
        let bytes = file_bytes(e, data, size, dirs, origins, rel)?;
        let path = || origins[data.src() as usize].show(rel);
        let (fd, base) = (bytes.fd(), bytes.base());
        for (a, b) in ranges {
            self.num(a);
            let mut pos = a;
            while pos < b {
                let n = ((b - pos) as usize).min(self.buf.len());
                let got = rustix::io::pread(fd, &mut self.buf[..n], base + pos)
                    .map_err(std::io::Error::from)
                    .with_context(|| format!("{}: reading", path()))?;
                if got == 0 {
                    anyhow::bail!("{}: shrank during the build", path());
                }
                self.h.update(&self.buf[..got]);
                pos += got as u64;
            }
        }
        bytes.check()
    }
}
