//! The tree an archive extracts to, built member by member in archive order with tar's rules: a
//! member's missing parents are made (0755, 0:0, its mtime) and take their metadata from a later
//! directory member; a later member replaces an earlier one of the same path, except that a
//! directory over a directory keeps its children; a hard link shares the inode of what is at its
//! target path at that moment. Every inode gets a synthetic identity (dev 0, a serial ino);
//! link counts, entry and byte totals are worked out at the end.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};

use super::member::{Member, MemberKind};
use super::path::components;
use crate::ext2::Timestamp;
use crate::source::{display, Entry, Kind, Meta, Xattr};

enum NodeKind {
    Dir(BTreeMap<Box<[u8]>, usize>),
    /// Any non-directory [`Kind`], with its data bytes (holes excluded).
    Leaf(Kind, u64),
}

struct Node {
    kind: NodeKind,
    meta: Meta,
    xattrs: Vec<Xattr>,
}

/// The tree under construction: nodes in an arena (replaced ones stay, unreachable); node 0 is
/// the root.
pub struct Builder {
    nodes: Vec<Node>,
    next_ino: u64,
    newest: Option<Timestamp>,
    root_given: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            nodes: vec![Node {
                kind: NodeKind::Dir(BTreeMap::new()),
                meta: implicit_meta(Timestamp { sec: 0, nsec: 0 }, 1),
                xattrs: Vec::new(),
            }],
            next_ino: 2,
            newest: None,
            root_given: false,
        }
    }
}

/// A directory the archive implies but does not (yet) describe.
fn implicit_meta(t: Timestamp, ino: u64) -> Meta {
    Meta {
        perm: 0o755,
        uid: 0,
        gid: 0,
        atime: t,
        mtime: t,
        ctime: t,
        btime: t,
        dev: 0,
        ino,
        nlink: 1,
    }
}

/// The finished tree: its root, entries below it, data bytes (each inode once).
pub struct Built {
    pub root: Entry,
    pub entries: u64,
    pub data_bytes: u64,
}

impl Builder {
    /// Adds one member (errors name it).
    pub fn add(&mut self, m: Member) -> Result<()> {
        let path = m.path.clone();
        self.add_inner(m)
            .with_context(|| format!("entry '{}'", display(&path)))
    }

    fn add_inner(&mut self, m: Member) -> Result<()> {
        let comps = components(&m.path)?;
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
            dev: 0,
            ino: 0,
            nlink: 1,
        };
        let Some((name, parents)) = comps.split_last() else {
            if m.kind != MemberKind::Dir {
                bail!("the archive root must be a directory");
            }
            let root = &mut self.nodes[0];
            root.meta = Meta {
                ino: root.meta.ino,
                ..meta
            };
            root.xattrs = m.xattrs;
            self.root_given = true;
            return Ok(());
        };
        let parent = self.parent_dir(parents, m.mtime)?;
        let existing = self.child(parent, name);
        let node = match m.kind {
            MemberKind::Dir => {
                if let Some(i) =
                    existing.filter(|&i| matches!(self.nodes[i].kind, NodeKind::Dir(_)))
                {
                    let n = &mut self.nodes[i];
                    n.meta = Meta {
                        ino: n.meta.ino,
                        ..meta
                    };
                    n.xattrs = m.xattrs;
                    return Ok(());
                }
                self.new_node(NodeKind::Dir(BTreeMap::new()), meta, m.xattrs)
            }
            MemberKind::HardLink(target) => {
                let t = self
                    .lookup(&target)
                    .with_context(|| format!("hard link to '{}'", display(&target)))?;
                if Some(t) == existing {
                    return Ok(()); // a link to itself
                }
                let NodeKind::Leaf(kind, bytes) = &self.nodes[t].kind else {
                    bail!("hard link to '{}', a directory", display(&target));
                };
                let copy = Node {
                    kind: NodeKind::Leaf(kind.clone(), *bytes),
                    meta: self.nodes[t].meta.clone(),
                    xattrs: self.nodes[t].xattrs.clone(),
                };
                self.nodes.push(copy);
                self.nodes.len() - 1
            }
            other => {
                let (kind, bytes) = leaf(other);
                self.new_node(NodeKind::Leaf(kind, bytes), meta, m.xattrs)
            }
        };
        if let NodeKind::Dir(ch) = &mut self.nodes[parent].kind {
            ch.insert(Box::from(*name), node);
        }
        Ok(())
    }

    fn new_node(&mut self, kind: NodeKind, mut meta: Meta, xattrs: Vec<Xattr>) -> usize {
        meta.ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.push(Node { kind, meta, xattrs });
        self.nodes.len() - 1
    }

    fn child(&self, dir: usize, name: &[u8]) -> Option<usize> {
        match &self.nodes[dir].kind {
            NodeKind::Dir(ch) => ch.get(name).copied(),
            NodeKind::Leaf(..) => None,
        }
    }

    /// The directory at `comps`, made (implicitly, with time `t`) where missing.
    fn parent_dir(&mut self, comps: &[&[u8]], t: Timestamp) -> Result<usize> {
        let mut cur = 0;
        for (i, c) in comps.iter().enumerate() {
            cur = match self.child(cur, c) {
                Some(n) if matches!(self.nodes[n].kind, NodeKind::Dir(_)) => n,
                Some(_) => bail!("'{}' is not a directory", display(&comps[..=i].join(&b'/'))),
                None => {
                    let ino = self.next_ino;
                    let n = self.new_node(
                        NodeKind::Dir(BTreeMap::new()),
                        implicit_meta(t, ino),
                        Vec::new(),
                    );
                    if let NodeKind::Dir(ch) = &mut self.nodes[cur].kind {
                        ch.insert(Box::from(*c), n);
                    }
                    n
                }
            };
        }
        Ok(cur)
    }

    /// The node now at archive path `target` (a hard link's).
    fn lookup(&self, target: &[u8]) -> Result<usize> {
        let comps = components(target)?;
        let mut cur = 0;
        for c in comps {
            cur = self
                .child(cur, c)
                .context("no such entry earlier in the archive")?;
        }
        Ok(cur)
    }

    /// The finished tree, children sorted by name bytes (built without recursion: archives
    /// can be deep).
    pub fn finish(mut self) -> Built {
        if !self.root_given {
            let t = self.newest.unwrap_or(Timestamp { sec: 0, nsec: 0 });
            self.nodes[0].meta = implicit_meta(t, 1);
        }
        // Names per inode and data bytes (each inode once), over what is reachable.
        let mut names: HashMap<u64, u64> = HashMap::new();
        let (mut entries, mut data_bytes) = (0u64, 0u64);
        let mut stack = vec![0usize];
        while let Some(i) = stack.pop() {
            let NodeKind::Dir(ch) = &self.nodes[i].kind else {
                continue;
            };
            for &c in ch.values() {
                entries += 1;
                match &self.nodes[c].kind {
                    NodeKind::Dir(_) => stack.push(c),
                    NodeKind::Leaf(_, bytes) => {
                        let n = names.entry(self.nodes[c].meta.ino).or_default();
                        if *n == 0 {
                            data_bytes += bytes;
                        }
                        *n += 1;
                    }
                }
            }
        }
        let mut stack = vec![self.frame(0, Box::new([]))];
        loop {
            let next = stack.last_mut().and_then(|f| f.pending.next());
            match next {
                Some((name, c)) if matches!(self.nodes[c].kind, NodeKind::Dir(_)) => {
                    let f = self.frame(c, name);
                    stack.push(f);
                }
                Some((name, c)) => {
                    let e = self.leaf_entry(c, name, &names);
                    stack.last_mut().expect("a frame").done.push(e);
                }
                None => {
                    let f = stack.pop().expect("a frame");
                    let e = self.dir_entry(f);
                    match stack.last_mut() {
                        Some(parent) => parent.done.push(e),
                        None => {
                            return Built {
                                root: e,
                                entries,
                                data_bytes,
                            }
                        }
                    }
                }
            }
        }
    }

    fn frame(&mut self, idx: usize, name: Box<[u8]>) -> Frame {
        let ch = match &mut self.nodes[idx].kind {
            NodeKind::Dir(ch) => std::mem::take(ch),
            NodeKind::Leaf(..) => unreachable!("frames are directories"),
        };
        Frame {
            idx,
            name,
            done: Vec::with_capacity(ch.len()),
            pending: ch.into_iter().collect::<Vec<_>>().into_iter(),
        }
    }

    fn leaf_entry(&mut self, idx: usize, name: Box<[u8]>, names: &HashMap<u64, u64>) -> Entry {
        let n = &mut self.nodes[idx];
        let NodeKind::Leaf(kind, _) = std::mem::replace(&mut n.kind, NodeKind::Leaf(Kind::Fifo, 0))
        else {
            unreachable!("a leaf")
        };
        let mut meta = std::mem::take(&mut n.meta);
        meta.nlink = names.get(&meta.ino).copied().unwrap_or(1);
        Entry {
            name,
            kind,
            meta,
            xattrs: std::mem::take(&mut n.xattrs),
        }
    }

    fn dir_entry(&mut self, f: Frame) -> Entry {
        let n = &mut self.nodes[f.idx];
        let mut meta = std::mem::take(&mut n.meta);
        meta.nlink = 2 + f.done.iter().filter(|e| e.is_dir()).count() as u64;
        Entry {
            name: f.name,
            kind: Kind::Dir { children: f.done },
            meta,
            xattrs: std::mem::take(&mut n.xattrs),
        }
    }
}

/// A directory being turned into an [`Entry`]: children still to do, children done.
struct Frame {
    idx: usize,
    name: Box<[u8]>,
    pending: std::vec::IntoIter<(Box<[u8]>, usize)>,
    done: Vec<Entry>,
}

/// A non-directory member's kind and data bytes.
fn leaf(k: MemberKind) -> (Kind, u64) {
    match k {
        MemberKind::File {
            size,
            layout,
            data,
            bytes,
        } => (Kind::File { size, layout, data }, bytes),
        MemberKind::Symlink(target) => (Kind::Symlink { target }, 0),
        MemberKind::CharDev(major, minor) => (Kind::CharDev { major, minor }, 0),
        MemberKind::BlockDev(major, minor) => (Kind::BlockDev { major, minor }, 0),
        MemberKind::Fifo => (Kind::Fifo, 0),
        MemberKind::Dir | MemberKind::HardLink(_) => unreachable!("handled by the caller"),
    }
}
