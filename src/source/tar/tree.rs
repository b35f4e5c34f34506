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
        let Builder {
            root,
            names,
            next_ino,
            layer,
            ..
        } = self;
        let parent = parent_dir(root, names, (*layer, next_ino), parents, m.mtime)?;
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
        parent_dir(
            &mut self.root,
            &mut self.names,
            (self.layer, &mut self.next_ino),
            parents,
            t,
        )?;
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
        let parent = parent_dir(
            &mut self.root,
            &mut self.names,
            (self.layer, &mut self.next_ino),
            parents,
            t,
        )?;
        let existing = self.names.find(parent, name);
        place(&mut self.names, parent, existing, copy)
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
pub(super) mod tests {
    use super::*;
    use crate::source::Data;

    pub(super) fn member(path: &str, kind: MemberKind, mtime: i64) -> Member {
        let t = Timestamp {
            sec: mtime,
            nsec: 0,
        };
        Member {
            path: path.as_bytes().to_vec(),
            kind,
            perm: 0o640,
            uid: 7,
            gid: 8,
            mtime: t,
            atime: t,
            ctime: t,
            xattrs: Vec::new(),
        }
    }

    pub(super) fn file(size: u64) -> MemberKind {
        MemberKind::File {
            size,
            layout: Layout::Dense,
            data: Data::Spool { src: 0, offset: 0 },
            bytes: size,
        }
    }

    fn link(target: &str) -> MemberKind {
        MemberKind::HardLink(target.as_bytes().to_vec())
    }

    pub(super) fn find<'a>(e: &'a Entry, path: &str) -> &'a Entry {
        path.split('/').fold(e, |e, c| {
            let ch = e.children();
            ch.iter()
                .find(|x| &*x.name == c.as_bytes())
                .unwrap_or_else(|| panic!("no {path}"))
        })
    }

    pub(super) fn names(e: &Entry) -> Vec<String> {
        let v = e.children().iter();
        v.map(|c| String::from_utf8_lossy(&c.name).into_owned())
            .collect()
    }

    #[test]
    fn replacement_in_a_big_directory_keeps_one_sorted_entry_a_name() {
        let mut b = Builder::default();
        let mut want = Vec::new();
        for i in (0..300u64).rev() {
            let k = (i * 7) % 300;
            let name = format!("d/n{k:03}");
            b.add(member(&name, file(k), 1)).unwrap();
            want.push(name[2..].to_string());
        }
        // Over every kind: a file, a directory with children, and a directory kept as such.
        b.add(member("d/n005", MemberKind::Dir, 2)).unwrap();
        b.add(member("d/n005/x", file(1), 2)).unwrap();
        b.add(member("d/n005", MemberKind::Dir, 3)).unwrap();
        b.add(member("d/n006", MemberKind::Dir, 2)).unwrap();
        for i in 0..20 {
            b.add(member(&format!("d/n006/c{i}"), file(1), 2)).unwrap();
        }
        b.add(member("d/n006", MemberKind::Fifo, 4)).unwrap();
        b.add(member("d/n006", MemberKind::Dir, 5)).unwrap();
        let ino = find(&b.root, "d/n006").meta.ino;
        let t = b.finish();
        want.sort();
        assert_eq!(names(find(&t.root, "d")), want);
        let (d5, d6) = (find(&t.root, "d/n005"), find(&t.root, "d/n006"));
        assert_eq!((d5.meta.mtime.sec, names(d5)), (3, vec!["x".to_string()]));
        assert_eq!(
            (d6.meta.mtime.sec, d6.meta.ino, d6.children().len()),
            (5, ino, 0)
        );
        assert_eq!(find(&t.root, "d").meta.nlink, 4);
        assert_eq!(t.entries, 1 + 300 + 1);
        assert_eq!(t.data_bytes, (0..300).sum::<u64>() - 5 - 6 + 1);
    }

    #[test]
    fn hard_links_across_a_replaced_path() {
        let mut b = Builder::default();
        b.add(member("a/f", file(10), 1)).unwrap();
        b.add(member("l1", link("a/f"), 1)).unwrap();
        b.add(member("a/l2", link("l1"), 1)).unwrap();
        // `a` becomes a file: `a/f` and `a/l2` go, `l1` keeps the inode.
        b.add(member("a", file(3), 2)).unwrap();
        b.add(member("l3", link("l1"), 2)).unwrap();
        let err = b.add(member("l4", link("a/f"), 2)).unwrap_err();
        assert!(format!("{err:#}").contains("no such entry"), "{err:#}");
        // Over a link: the link goes, and a link over itself changes nothing.
        b.add(member("l5", link("l1"), 2)).unwrap();
        b.add(member("l5", file(4), 3)).unwrap();
        b.add(member("l3", link("./l3"), 3)).unwrap();
        // A name in a directory that is later replaced by one with new children.
        b.add(member("d/f", file(5), 4)).unwrap();
        b.add(member("e", link("d/f"), 4)).unwrap();
        b.add(member("d", MemberKind::Symlink(b"x".to_vec()), 4))
            .unwrap();
        b.add(member("d/g", link("e"), 4)).unwrap_err();
        let t = b.finish();
        assert_eq!(names(&t.root), ["a", "d", "e", "l1", "l3", "l5"]);
        let (l1, l3, e) = (find(&t.root, "l1"), find(&t.root, "l3"), find(&t.root, "e"));
        assert_eq!(
            (l1.meta.ino, l1.meta.nlink, l1.meta.mtime.sec),
            (l3.meta.ino, 2, 1)
        );
        assert_eq!(l3.meta.nlink, 2);
        assert_eq!((e.meta.nlink, find(&t.root, "l5").meta.nlink), (1, 1));
        assert_ne!(e.meta.ino, l1.meta.ino);
        assert_eq!(t.data_bytes, 10 + 3 + 4 + 5);
        assert_eq!(t.entries, 6);
    }

    #[test]
    fn inos_are_serial_in_archive_order() {
        let mut b = Builder::default();
        b.add(member("x/y/f", file(1), 1)).unwrap();
        b.add(member("x/y", MemberKind::Dir, 1)).unwrap();
        b.add(member("g", link("x/y/f"), 1)).unwrap();
        b.add(member("s", MemberKind::Fifo, 1)).unwrap();
        let t = b.finish();
        let ino = |p| find(&t.root, p).meta.ino;
        assert_eq!(t.root.meta.ino, 1);
        assert_eq!(
            [ino("x"), ino("x/y"), ino("x/y/f"), ino("g"), ino("s")],
            [2, 3, 4, 4, 5]
        );
    }

    #[test]
    fn deep_trees_are_built_and_dropped_without_recursion() {
        let deep = "d/".repeat(super::super::path::MAX_DEPTH - 1);
        // On a thread with a small stack, where recursing this deep would overflow.
        std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                let mut b = Builder::default();
                b.add(member(&format!("{deep}f"), file(1), 1)).unwrap();
                b.add(member(&format!("{deep}g"), link(&format!("{deep}f")), 1))
                    .unwrap();
                let t = b.finish();
                assert_eq!((t.entries, t.data_bytes), (8192 + 1, 1));
                let mut e = t.root;
                while let Some(c) = e.children_mut().pop() {
                    if c.is_dir() {
                        e = c;
                    } else {
                        assert_eq!(c.meta.nlink, 2);
                    }
                }
                // Replaced, and dropped with the builder.
                let mut b = Builder::default();
                b.add(member(&format!("{deep}f"), file(1), 1)).unwrap();
                b.add(member("d", file(1), 1)).unwrap();
                b.add(member(&format!("{deep}f"), file(1), 1)).unwrap_err();
                drop(b);
                let mut b = Builder::default();
                b.add(member(&format!("{deep}f"), file(1), 1)).unwrap();
                drop(b);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn sorting_moves_entries_to_their_places() {
        let mut state = 12345u64;
        for n in [0usize, 1, 2, 3, 10, 100, 1000] {
            let mut v: Vec<Entry> = (0..n)
                .map(|i| dir(format!("{i:04}").as_bytes(), Meta::default(), Vec::new()))
                .collect();
            for i in (1..n).rev() {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                v.swap(i, (state >> 33) as usize % (i + 1));
            }
            sort_by_name(&mut v);
            let got: Vec<String> = v
                .iter()
                .map(|e| String::from_utf8_lossy(&e.name).into())
                .collect();
            let want: Vec<String> = (0..n).map(|i| format!("{i:04}")).collect();
            assert_eq!(got, want);
        }
    }
}
