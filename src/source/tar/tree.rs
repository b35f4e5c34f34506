//! The tree an archive extracts to, built member by member in archive order with tar's rules: a
//! member's missing parents are made (0755, 0:0, its mtime) and take their metadata from a later
//! directory member; a later member replaces an earlier one of the same path, except that a
//! directory over a directory keeps its children; a hard link shares the inode of what is at its
//! target path at that moment. Every inode gets a synthetic identity (dev 0, a serial ino);
//! link counts, entry and byte totals are worked out at the end.
//!
//! The final [`Entry`] tree is built directly (an entry is made once, never copied): each
//! directory's children in archive order, found by name through a small per-directory index
//! ([`Names`]), a replaced entry overwritten in place. At the end each directory's children are
//! sorted by name and the link counts set; only inodes that hard links were made to need a
//! count per inode. Nothing recurses: archives can be deep.
//!
//! The layers of a container image are read into one builder ([`Builder::layered`]), one after
//! the other, with the OCI whiteouts ([`whiteout`]); each entry's `dev` is the layer that made it.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context, Result};

use super::member::{Member, MemberKind};
use super::names::Names;
use super::path::components;

mod whiteout;
use crate::source::Timestamp;
use crate::source::{display, Entry, Kind, Layout, Meta, Xattr};

/// The tree under construction.
pub struct Builder {
    root: Entry,
    names: Names,
    /// Inos that hard links were made to: the only ones whose link counts need counting.
    linked: HashSet<u64>,
    next_ino: u64,
    newest: Option<Timestamp>,
    root_given: bool,
    /// The layer being read (0 for a plain archive): every entry made gets it as its `dev`.
    layer: u64,
    /// Whether `.wh.` names are OCI whiteouts (in an image's layers) or plain names.
    whiteouts: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            root: dir(
                b"",
                implicit_meta(Timestamp { sec: 0, nsec: 0 }, 0, 1),
                Vec::new(),
            ),
            names: Names::default(),
            linked: HashSet::new(),
            next_ino: 2,
            newest: None,
            root_given: false,
            layer: 0,
            whiteouts: false,
        }
    }
}

impl Drop for Builder {
    /// Takes the tree apart without recursion (a builder dropped after an error can be deep).
    fn drop(&mut self) {
        let root = std::mem::replace(&mut self.root, dir(b"", Meta::default(), Vec::new()));
        discard(&mut self.names, root);
    }
}

/// A directory the archive implies but does not (yet) describe, made in layer `dev`.
fn implicit_meta(t: Timestamp, dev: u64, ino: u64) -> Meta {
    Meta::at(t, 0o755, dev, ino)
}

/// An empty directory.
fn dir(name: &[u8], meta: Meta, xattrs: Vec<Xattr>) -> Entry {
    Entry {
        name: Box::from(name),
        kind: Kind::Dir {
            children: Vec::new(),
        },
        meta,
        xattrs,
    }
}

/// The finished tree: its root, entries below it, data bytes (each inode once).
pub struct Built {
    pub root: Entry,
    pub entries: u64,
    pub data_bytes: u64,
}

impl Builder {
    /// A builder for the layers of a container image: `.wh.` names are whiteouts; call
    /// [`Builder::next_layer`] before each layer.
    pub fn layered() -> Builder {
        let mut b = Builder::default();
        b.whiteouts = true;
        b
    }

    /// The members added from now on belong to the next layer.
    pub fn next_layer(&mut self) {
        self.layer += 1;
    }

    /// Adds one member (errors name it).
    pub fn add(&mut self, m: Member) -> Result<()> {
        let path = m.path.clone();
        self.add_inner(m)
            .with_context(|| format!("entry '{}'", display(&path)))
    }

    fn add_inner(&mut self, mut m: Member) -> Result<()> {
        // Kept until the image is made: no spare room (the reader leaves room for two ACLs, 96
        // bytes an entry, mostly for nothing).
        m.xattrs.shrink_to_fit();
        let comps = components(&m.path)?;
        if self.whiteouts && self.whiteout(&comps, m.mtime)? {
            return Ok(());
        }
        if self
            .newest
            .is_none_or(|t| (m.mtime.sec, m.mtime.nsec) > (t.sec, t.nsec))
        {
            self.newest = Some(m.mtime);
        }
        let meta = Meta {
            perm: m.perm,
            uid: m.uid,
            gid: m.gid,
            atime: m.atime,
            mtime: m.mtime,
            ctime: m.ctime,
            btime: m.mtime,
            dev: self.layer,
            ino: 0,
            nlink: 1,
        };
        let Some((name, parents)) = comps.split_last() else {
            if m.kind != MemberKind::Dir {
                bail!("the archive root must be a directory");
            }
            self.root.meta = Meta {
                ino: self.root.meta.ino,
                ..meta
            };
            self.root.xattrs = m.xattrs;
            self.root_given = true;
            return Ok(());
        };
        let kind = match m.kind {
            MemberKind::HardLink(target) => return self.link(&comps, &target, m.mtime),
            MemberKind::Dir => None,
            other => Some(leaf(other)),
        };
        let (parent, names, next_ino) = self.dir_at(parents, m.mtime)?;
        let existing = names.find(parent, name);
        let kind = match kind {
            Some(kind) => kind,
            None => {
                if let Some(e) = existing.map(|i| &mut parent.children_mut()[i]) {
                    if e.is_dir() {
                        e.meta = Meta {
                            ino: e.meta.ino,
                            ..meta
                        };
                        e.xattrs = m.xattrs;
                        return Ok(());
                    }
                }
                Kind::Dir {
                    children: Vec::new(),
                }
            }
        };
        let e = Entry {
            name: Box::from(*name),
            kind,
            meta: Meta {
                ino: serial(next_ino),
                ..meta
            },
            xattrs: m.xattrs,
        };
        place(names, parent, existing, e)
    }

    /// Adds a hard link at `comps` to what is at `target` now: a copy of it with its ino.
    fn link(&mut self, comps: &[&[u8]], target: &[u8], t: Timestamp) -> Result<()> {
        let (name, parents) = comps.split_last().expect("not the root");
        self.dir_at(parents, t)?;
        let (to, to_comps) = lookup(&self.root, &self.names, target)
            .with_context(|| format!("hard link to '{}'", display(target)))?;
        if to_comps == comps {
            return Ok(()); // a link to itself
        }
        if to.is_dir() {
            bail!("hard link to '{}', a directory", display(target));
        }
        let copy = Entry {
            name: Box::from(*name),
            kind: to.kind.clone(),
            meta: to.meta.clone(),
            xattrs: to.xattrs.clone(),
        };
        self.linked.insert(copy.meta.ino);
        let (parent, names, _) = self.dir_at(parents, t)?;
        let existing = names.find(parent, name);
        place(names, parent, existing, copy)
    }

    /// The directory at `comps`, made where missing (implicitly, with time `t`, in the layer
    /// being read), with the name index and the ino counter, borrowed beside it.
    fn dir_at(
        &mut self,
        comps: &[&[u8]],
        t: Timestamp,
    ) -> Result<(&mut Entry, &mut Names, &mut u64)> {
        let Builder {
            root,
            names,
            next_ino,
            layer,
            ..
        } = self;
        let d = parent_dir(root, names, (*layer, next_ino), comps, t)?;
        Ok((d, names, next_ino))
    }

    /// The finished tree, children sorted by name bytes.
    pub fn finish(mut self) -> Built {
        let dummy = dir(b"", Meta::default(), Vec::new());
        let mut root = std::mem::replace(&mut self.root, dummy);
        self.names = Names::default(); // not needed any more: free it before sorting
        if !self.root_given {
            let t = self.newest.unwrap_or(Timestamp { sec: 0, nsec: 0 });
            root.meta = implicit_meta(t, 0, 1);
        }
        // Names per hard-linked inode, over what is reachable.
        let mut links: HashMap<u64, u32> = self.linked.drain().map(|ino| (ino, 0)).collect();
        let (mut entries, mut data_bytes) = (0u64, 0u64);
        let mut stack = vec![&mut root];
        while let Some(Entry { kind, meta, .. }) = stack.pop() {
            let Kind::Dir { children } = kind else {
                unreachable!("only directories are stacked")
            };
            sort_by_name(children);
            entries += children.len() as u64;
            let mut subdirs = 0u32;
            for c in children.iter_mut() {
                if c.is_dir() {
                    subdirs = subdirs.saturating_add(1);
                    stack.push(c);
                    continue;
                }
                let first = match links.get_mut(&c.meta.ino) {
                    Some(n) => {
                        *n = n.saturating_add(1);
                        *n == 1
                    }
                    None => true,
                };
                if let (true, Kind::File { size, layout, .. }) = (first, &c.kind) {
                    data_bytes += data_len(*size, layout);
                }
            }
            meta.nlink = subdirs.saturating_add(2);
        }
        if !links.is_empty() {
            let mut stack = vec![&mut root];
            while let Some(e) = stack.pop() {
                for c in e.children_mut() {
                    if c.is_dir() {
                        stack.push(c);
                    } else if let Some(&n) = links.get(&c.meta.ino) {
                        c.meta.nlink = n;
                    }
                }
            }
        }
        Built {
            root,
            entries,
            data_bytes,
        }
    }
}

/// The next serial ino.
fn serial(next_ino: &mut u64) -> u64 {
    *next_ino += 1;
    *next_ino - 1
}

/// The directory at `comps` below `root`, made (implicitly, with time `t`, in layer `dev`) where
/// missing.
fn parent_dir<'a>(
    root: &'a mut Entry,
    names: &mut Names,
    (dev, next_ino): (u64, &mut u64),
    comps: &[&[u8]],
    t: Timestamp,
) -> Result<&'a mut Entry> {
    let mut cur = root;
    for (i, c) in comps.iter().enumerate() {
        let pos = match names.find(cur, c) {
            Some(p) if cur.children()[p].is_dir() => p,
            Some(_) => bail!("'{}' is not a directory", display(&comps[..=i].join(&b'/'))),
            None => {
                let ino = serial(next_ino);
                names.push(cur, dir(c, implicit_meta(t, dev, ino), Vec::new()))?
            }
        };
        cur = &mut cur.children_mut()[pos];
    }
    Ok(cur)
}

/// The entry now at archive path `target` (a hard link's), and the path's components.
fn lookup<'a, 'p>(
    root: &'a Entry,
    names: &Names,
    target: &'p [u8],
) -> Result<(&'a Entry, Vec<&'p [u8]>)> {
    let comps = components(target)?;
    let mut cur = root;
    for c in &comps {
        let i = names
            .find(cur, c)
            .context("no such entry earlier in the archive")?;
        cur = &cur.children()[i];
    }
    Ok((cur, comps))
}

/// Puts `e` in `parent`: over its child at `existing`, else as a new child.
fn place(names: &mut Names, parent: &mut Entry, existing: Option<usize>, e: Entry) -> Result<()> {
    match existing {
        Some(i) => discard(names, std::mem::replace(&mut parent.children_mut()[i], e)),
        None => {
            names.push(parent, e)?;
        }
    }
    Ok(())
}

/// Drops a replaced entry and the indexes of the directories in it, without recursion.
fn discard(names: &mut Names, e: Entry) {
    let mut stack = vec![vec![e]];
    while let Some(v) = stack.last_mut() {
        let Some(mut e) = v.pop() else {
            stack.pop();
            continue;
        };
        if let Kind::Dir { children } = &mut e.kind {
            names.forget(e.meta.ino);
            stack.push(std::mem::take(children));
        }
    }
}

/// Sorts entries by name bytes (names in a directory are distinct). The order is worked out on
/// positions, then applied by cycles of swaps: about two moves an entry, no second vector.
fn sort_by_name(v: &mut [Entry]) {
    if v.windows(2).all(|w| w[0].name < w[1].name) {
        return;
    }
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_unstable_by(|&a, &b| v[a].name.cmp(&v[b].name));
    // Position i takes the entry now at order[i].
    for start in 0..v.len() {
        let mut cur = start;
        loop {
            let next = order[cur];
            order[cur] = cur;
            if next == start || next == cur {
                break;
            }
            v.swap(cur, next);
            cur = next;
        }
    }
}

/// The data bytes of a file of `size` bytes laid out as `layout` (holes excluded).
fn data_len(size: u64, layout: &Layout) -> u64 {
    match layout {
        Layout::Dense => size,
        Layout::Sparse(r) => r.iter().map(|(a, b)| b - a).sum(),
    }
}

/// A non-directory member's kind.
fn leaf(k: MemberKind) -> Kind {
    match k {
        MemberKind::File {
            size, layout, data, ..
        } => Kind::File { size, layout, data },
        MemberKind::Symlink(target) => Kind::Symlink { target },
        MemberKind::CharDev(major, minor) => Kind::CharDev { major, minor },
        MemberKind::BlockDev(major, minor) => Kind::BlockDev { major, minor },
        MemberKind::Fifo => Kind::Fifo,
        MemberKind::Dir | MemberKind::HardLink(_) => unreachable!("handled by the caller"),
    }
}

#[cfg(test)]
mod tests;
