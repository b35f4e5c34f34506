//! The source directories behind one directory of the tree, open while the tree is walked again
//! (to populate it, digest it, read ahead of the copy, or find the EFI files): a directory of
//! the tree may merge directories of several sources (SOURCE and `--add` ones), and each file is
//! read by name from its own source's directory.
//!
//! Only through what the scan opened: each source's root is the descriptor its scan kept (a
//! path is never resolved again, so a symlink repointed meanwhile leads nowhere new), and each
//! directory below is opened by name in the one above, without following a symlink, and refused
//! unless it has the device and inode its source's scan saw there ([`super::open::open_dir`]).
//! A source with no directory there in the scan is not looked for. A source placed at a path
//! (`--add SRC:/opt/x`) joins when the walk reaches it. Each directory reached is a
//! [`DirNode`], the chain by which `--lazy` reopens it later ([`super::live`]).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;

use super::bytes::refused;
use super::open::open_dir;
use super::{dev_parts, Entry, Origin, Tree};

/// One source's directory as the walk reached it: how to reach it again from the source's root.
#[derive(Debug)]
pub struct DirNode {
    /// The directory above (None at the source's root, whose descriptor the [`Origin`] holds).
    pub parent: Option<Arc<DirNode>>,
    /// Its name in `parent`.
    pub name: Box<[u8]>,
    /// Its device and inode as scanned.
    pub id: (u64, u64),
    /// The source it belongs to (its index in [`Tree::origins`]).
    pub src: u16,
    /// Unique among the nodes of a process: the key of a descriptor cache.
    pub key: u64,
}

impl DirNode {
    fn new(parent: Option<Arc<DirNode>>, name: &[u8], id: (u64, u64), src: u16) -> Arc<DirNode> {
        static KEYS: AtomicU64 = AtomicU64::new(0);
        Arc::new(DirNode {
            parent,
            name: name.into(),
            id,
            src,
            key: KEYS.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The path of `name` in this directory, below its source's root (`/a/b/name`).
    pub fn rel(&self, name: &[u8]) -> Vec<u8> {
        let mut parts: Vec<&[u8]> = vec![name];
        let mut at = Some(self);
        while let Some(n) = at.filter(|n| n.parent.is_some()) {
            parts.push(&n.name);
            at = n.parent.as_deref();
        }
        parts
            .iter()
            .rev()
            .flat_map(|p| [&b"/"[..], p])
            .flatten()
            .copied()
            .collect()
    }
}

/// A source's directory open here.
struct Open {
    node: Arc<DirNode>,
    fd: Arc<OwnedFd>,
    /// Whether the walk goes down into it: a single file's parent is open only for that file.
    descend: bool,
}

/// The open source directories behind one directory of the tree.
#[derive(Default)]
pub struct Dirs {
    open: Vec<Open>,
}

impl Dirs {
    /// At the tree's root: the roots of the directory sources placed at `/`, and the parents of
    /// single files placed in `/`.
    pub fn root(tree: &Tree) -> Dirs {
        Dirs::default().joined(&tree.origins, b"")
    }

    /// For directory `d` below this one, at `rel` (`/a/b`) in the tree: each source's directory
    /// there as its scan saw it, and the sources placed there. A source's directory that is not
    /// the one scanned any more is an error naming it.
    pub fn child(&self, tree: &Tree, d: &Entry, rel: &[u8]) -> Result<Dirs> {
        let mut open = Vec::new();
        if !d.children().is_empty() {
            for o in self.open.iter().filter(|o| o.descend) {
                let src = o.node.src;
                let Some(id) = scanned_id(tree, d, src) else {
                    continue; // this source had no directory here
                };
                let fd = open_dir(&*o.fd, &d.name, id)
                    .map_err(|r| refused(&tree.origins[src as usize].show(rel), r))?;
                open.push(Open {
                    node: DirNode::new(Some(o.node.clone()), &d.name, id, src),
                    fd: Arc::new(fd),
                    descend: true,
                });
            }
        }
        Ok(Dirs { open }.joined(&tree.origins, rel))
    }

    /// Adds the sources placed at `rel`, through the descriptors their scans opened.
    fn joined(mut self, origins: &[Origin], rel: &[u8]) -> Dirs {
        for (k, o) in origins.iter().enumerate() {
            let (dir, descend) = match o {
                Origin::Dir { dest, dir, .. } if dest == rel => (dir, true),
                Origin::File { dest, dir, .. } if parent(dest) == rel => (dir, false),
                _ => continue,
            };
            self.open.push(Open {
                node: DirNode::new(None, b"", (0, 0), k as u16),
                fd: dir.clone(),
                descend,
            });
        }
        self
    }

    fn find(&self, src: u16) -> Option<&Open> {
        self.open.iter().find(|o| o.node.src == src)
    }

    /// Source `src`'s directory here, if it has one.
    pub fn get(&self, src: u16) -> Option<&OwnedFd> {
        self.find(src).map(|o| &*o.fd)
    }

    /// How to reach source `src`'s directory here again, if it has one.
    pub fn node(&self, src: u16) -> Option<&Arc<DirNode>> {
        self.find(src).map(|o| &o.node)
    }
}

/// Source `src`'s directory at entry `d` of the tree as its scan saw it (device, inode), or None
/// when that source has no directory there: `d`'s own identity when `d` came from that source,
/// else the one kept when directories were merged (see [`Tree::merged`]). Directories made for
/// an `--add` DEST's parents (inode 0) are in no source.
fn scanned_id(tree: &Tree, d: &Entry, src: u16) -> Option<(u64, u64)> {
    if d.meta.ino == 0 {
        return None;
    }
    if d.meta.src() == src {
        return Some(d.meta.host_id());
    }
    let hidden = tree.merged.get(&(d.meta.dev, d.meta.ino))?;
    hidden.iter().find_map(|&(dev, ino)| {
        let (s, host) = dev_parts(dev);
        (s == src).then_some((host, ino))
    })
}

/// `/a/b` → `/a`; `/a` → `` (the root).
fn parent(rel: &[u8]) -> &[u8] {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => &rel[..i],
        None => b"",
    }
}

/// The name of the file a single-file source reads (its own name, whatever it is called in the
/// tree), or `name` for any other source.
pub fn host_name<'a>(origin: &'a Origin, name: &'a [u8]) -> &'a [u8] {
    match origin {
        Origin::File { path, .. } => path.file_name().map_or(name, |n| n.as_encoded_bytes()),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::compose::{add, Placement};
    use crate::source::{scan, scan_one};

    fn child<'a>(d: &'a Entry, name: &str) -> &'a Entry {
        d.children()
            .iter()
            .find(|c| *c.name == *name.as_bytes())
            .unwrap()
    }

    #[test]
    fn sources_join_where_they_are_placed_and_single_files_are_not_walked() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, f) = (d.path().join("a"), d.path().join("b"), d.path().join("f"));
        for p in ["a/x/y", "b/y", "f/x"] {
            std::fs::create_dir_all(d.path().join(p)).unwrap();
        }
        for p in ["a/x/y/1", "b/y/2", "f/file"] {
            std::fs::write(d.path().join(p), b"").unwrap();
        }
        let scan_dir = |p: &std::path::Path| scan(p, Default::default(), &mut || {}).unwrap();
        let mut tree = scan_dir(&a);
        add(&mut tree, scan_dir(&b), &Placement::parse(b"/x").unwrap()).unwrap();
        let one = scan_one(&f.join("file"), b"file", Default::default(), &mut || {}).unwrap();
        add(&mut tree, one, &Placement::parse(b"/x/").unwrap()).unwrap();
        let root = Dirs::root(&tree);
        assert!(root.get(0).is_some() && root.get(1).is_none());
        let x = child(&tree.root, "x");
        let xd = root.child(&tree, x, b"/x").unwrap();
        // a/x, b (placed at /x), and f (the single file's parent, not walked into).
        assert!(xd.get(0).is_some() && xd.get(1).is_some() && xd.get(2).is_some());
        let y = child(x, "y");
        let yd = xd.child(&tree, y, b"/x/y").unwrap();
        assert!(yd.get(0).is_some() && yd.get(1).is_some() && yd.get(2).is_none());
        assert_eq!(yd.node(1).unwrap().rel(b"2"), b"/y/2");
        assert_eq!(yd.node(0).unwrap().rel(b"1"), b"/x/y/1");
        assert_eq!(parent(b"/x/file"), b"/x");
        assert_eq!(parent(b"/top"), b"");
    }

    #[test]
    fn every_source_s_directory_must_be_the_one_scanned() {
        let d = tempfile::tempdir().unwrap();
        for p in ["a/etc", "b/etc"] {
            std::fs::create_dir_all(d.path().join(p)).unwrap();
            std::fs::write(d.path().join(p).join(p.replace('/', "-")), b"x").unwrap();
        }
        let scan_dir = |p: &str| scan(&d.path().join(p), Default::default(), &mut || {}).unwrap();
        let mut tree = scan_dir("a");
        add(&mut tree, scan_dir("b"), &Placement::root()).unwrap();
        let etc = child(&tree.root, "etc");
        let root = Dirs::root(&tree);
        let both = root.child(&tree, etc, b"/etc").unwrap();
        assert!(both.get(0).is_some() && both.get(1).is_some());
        // SOURCE's /etc (whose identity the merged entry no longer has) swapped for another.
        std::fs::rename(d.path().join("a/etc"), d.path().join("a/old")).unwrap();
        std::fs::create_dir(d.path().join("a/etc")).unwrap();
        let e = root.child(&tree, etc, b"/etc").err().unwrap().to_string();
        assert!(
            e.contains("a/etc: changed during the build (it was replaced"),
            "{e}"
        );
        // And the later source's own.
        std::fs::remove_dir(d.path().join("a/etc")).unwrap();
        std::fs::rename(d.path().join("a/old"), d.path().join("a/etc")).unwrap();
        std::fs::rename(d.path().join("b/etc"), d.path().join("b/old")).unwrap();
        std::fs::create_dir(d.path().join("b/etc")).unwrap();
        let e = root.child(&tree, etc, b"/etc").err().unwrap().to_string();
        assert!(e.contains("b/etc: changed during the build"), "{e}");
    }
}
