//! Several sources, one tree: each `--add SRC[:DEST]` tree is merged into the tree read so far,
//! in the order given, as systemd-repart's `CopyFiles=` copies. A later entry replaces an
//! earlier one at the same path, except that a directory over a directory merges (the later
//! directory's mode, owner, times and xattrs, both directories' entries); DEST's missing parents
//! are made (0755, 0:0, the added tree's time). Nothing is copied: every file keeps its source
//! (its [`Data::src`] and an [`Origin`] saying where that source lies in the tree), and each
//! source's hard-link identities are kept apart, so that no hard link spans two sources.
//!
//! DEST is resolved inside the tree as a chroot would: symlinks on the way are followed (`/lib`
//! → `usr/lib`), never above the root; a symlink at DEST itself is followed when it leads to a
//! directory. A directory (or archive) SRC is merged into DEST, keeping DEST's own metadata
//! when it exists; a single file becomes DEST, or goes into it when DEST ends in `/` or is a
//! directory.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context, Result};

use super::{display, Data, Entry, Kind, Meta, Origin, Tree, SRC_SHIFT};

/// Most symlinks followed while resolving one DEST (as the kernel's limit).
const MAX_LINKS: usize = 40;
/// Longest name ext2/3/4 hold.
const MAX_NAME: usize = 255;

/// Where an `--add` source goes: DEST's components, and whether DEST ends in `/` (a file goes
/// into it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub comps: Vec<Vec<u8>>,
    pub into: bool,
}

impl Placement {
    /// Parses DEST, an absolute path in the image (`.` components and repeated `/` dropped).
    pub fn parse(dest: &[u8]) -> Result<Placement, String> {
        if !dest.starts_with(b"/") {
            return Err(format!(
                "DEST '{}' is not an absolute path in the image",
                display(dest)
            ));
        }
        let mut comps = Vec::new();
        for c in dest.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => return Err(format!("DEST '{}' contains '..'", display(dest))),
                c if c.len() > MAX_NAME => {
                    return Err(format!(
                        "DEST '{}' has a name longer than {MAX_NAME} bytes",
                        display(dest)
                    ))
                }
                c => comps.push(c.to_vec()),
            }
        }
        Ok(Placement {
            into: dest.ends_with(b"/") || dest.ends_with(b"/."),
            comps,
        })
    }

    /// `/`, the default.
    pub fn root() -> Placement {
        Placement {
            comps: Vec::new(),
            into: true,
        }
    }
}

/// Merges `over` (one source's tree, read from its own origin) into `base` at `place`.
pub fn add(base: &mut Tree, mut over: Tree, place: &Placement) -> Result<()> {
    let k = base.origins.len();
    let k = u16::try_from(k)
        .ok()
        .filter(|&k| k < u16::MAX)
        .context("more than 65534 sources")?;
    let [origin] = <[Origin; 1]>::try_from(std::mem::take(&mut over.origins))
        .map_err(|_| anyhow::anyhow!("a source read into several origins"))?;
    renumber(&mut over.root, k);
    let single = !over.root.is_dir();
    let (mut target, is_dir) = resolve(&base.root, &place.comps, 0)?;
    if single && (place.into || is_dir) {
        target.push(over.root.name.to_vec());
    }
    let dest: Vec<u8> = target
        .iter()
        .flat_map(|c| [&b"/"[..], c])
        .flatten()
        .copied()
        .collect();
    let t = over.root.meta.mtime;
    let dev = (k as u64) << SRC_SHIFT;
    let origin = match origin {
        Origin::Dir { root, dir, .. } => Origin::Dir {
            root,
            dest: dest.clone(),
            dir,
        },
        Origin::File { path, dir, .. } => Origin::File {
            path,
            dest: dest.clone(),
            dir,
        },
        spool => spool,
    };
    base.origins.push(origin);
    base.unreadable = base.unreadable.take().or(over.unreadable.take());
    let merged = &mut base.merged;
    let Some((name, parents)) = target.split_last() else {
        // At the root (always a directory): merge, keeping the root's own metadata.
        merge_children(base.root.children_mut(), take_children(over.root), merged);
        return Ok(());
    };
    let parent = make_parents(&mut base.root, parents, t, dev)?;
    let children = parent.children_mut();
    match children.binary_search_by(|c| (*c.name).cmp(&name[..])) {
        Ok(i) if children[i].is_dir() && over.root.is_dir() => {
            merge_children(children[i].children_mut(), take_children(over.root), merged);
        }
        Ok(i) => {
            over.root.name = name.clone().into();
            children[i] = over.root;
        }
        Err(i) => {
            over.root.name = name.clone().into();
            children.insert(i, over.root);
        }
    }
    Ok(())
}

/// Sets the entries' totals again (after merging): entries below the root, and data bytes
/// (holes excluded, each hard-linked file once).
pub fn recount(tree: &mut Tree) {
    let (mut entries, mut bytes) = (0u64, 0u64);
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack = vec![&tree.root];
    while let Some(e) = stack.pop() {
        for c in e.children() {
            entries += 1;
            match &c.kind {
                Kind::Dir { .. } => stack.push(c),
                Kind::File { size, layout, .. }
                    if c.meta.nlink < 2 || seen.insert((c.meta.dev, c.meta.ino)) =>
                {
                    bytes += layout.data_bytes(*size);
                }
                _ => {}
            }
        }
    }
    tree.entries = entries;
    tree.data_bytes = bytes;
}

/// Marks every file of a source's tree as source `k`'s, and keeps its hard-link identities
/// apart from every other source's (the source's index in the top bits of `dev`).
fn renumber(root: &mut Entry, k: u16) {
    if k == 0 {
        return;
    }
    let mut stack = vec![root];
    while let Some(e) = stack.pop() {
        e.meta.dev |= (k as u64) << SRC_SHIFT;
        match &mut e.kind {
            Kind::File { data, .. } => match data {
                Data::InTree { src } | Data::Spool { src, .. } => *src = k,
            },
            Kind::Dir { children } => stack.extend(children.iter_mut()),
            _ => {}
        }
    }
}

fn take_children(mut e: Entry) -> Vec<Entry> {
    std::mem::take(e.children_mut())
}

/// Merges `upper` (sorted by name) into `lower` (sorted by name): the later entry replaces the
/// earlier of the same name, a directory over a directory merges (the identities of the
/// directories merged are kept in `merged`: see [`Tree::merged`]).
fn merge_children(
    lower: &mut Vec<Entry>,
    upper: Vec<Entry>,
    merged: &mut HashMap<(u64, u64), Vec<(u64, u64)>>,
) {
    if upper.is_empty() {
        return;
    }
    let old = std::mem::take(lower);
    let mut out = Vec::with_capacity(old.len() + upper.len());
    let (mut a, mut b) = (old.into_iter().peekable(), upper.into_iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => break,
        };
        match order {
            std::cmp::Ordering::Less => out.extend(a.next()),
            std::cmp::Ordering::Greater => out.extend(b.next()),
            std::cmp::Ordering::Equal => {
                let (mut x, y) = (a.next().expect("peeked"), b.next().expect("peeked"));
                if x.is_dir() && y.is_dir() {
                    let (under, over) = ((x.meta.dev, x.meta.ino), (y.meta.dev, y.meta.ino));
                    let mut hidden = merged.remove(&under).unwrap_or_default();
                    if under.1 != 0 {
                        hidden.push(under); // not a directory made for a DEST's parents
                    }
                    if !hidden.is_empty() {
                        merged.entry(over).or_default().extend(hidden);
                    }
                    x.meta = y.meta.clone();
                    x.xattrs = y.xattrs.clone();
                    merge_children(x.children_mut(), take_children(y), merged);
                    out.push(x);
                } else {
                    out.push(y);
                }
            }
        }
    }
    *lower = out;
}

/// The entry at `path` below `root`, if there is one (no symlink followed).
fn lookup<'a>(root: &'a Entry, path: &[Vec<u8>]) -> Option<&'a Entry> {
    path.iter().try_fold(root, |e, c| {
        let ch = e.children();
        ch.binary_search_by(|x| (*x.name).cmp(&c[..]))
            .ok()
            .map(|i| &ch[i])
    })
}

/// `comps` resolved in the tree: symlinks on the way followed (absolute ones from the tree's
/// root, `..` never above it), the last one only when it leads to a directory. Components that
/// do not exist are kept as they are. Also says whether the result is a directory.
fn resolve(root: &Entry, comps: &[Vec<u8>], mut links: usize) -> Result<(Vec<Vec<u8>>, bool)> {
    let mut todo: Vec<Vec<u8>> = comps.iter().rev().cloned().collect();
    let mut out: Vec<Vec<u8>> = Vec::new();
    while let Some(c) = todo.pop() {
        match &c[..] {
            b"" | b"." => continue,
            b".." => {
                out.pop();
                continue;
            }
            _ => {}
        }
        let child = lookup(root, &out).and_then(|d| lookup(d, std::slice::from_ref(&c)));
        if let Some(Entry {
            kind: Kind::Symlink { target },
            ..
        }) = child
        {
            links += 1;
            if links > MAX_LINKS {
                bail!("too many levels of symbolic links in the image");
            }
            let mut via: Vec<Vec<u8>> = if target.starts_with(b"/") {
                Vec::new()
            } else {
                out.clone()
            };
            via.extend(target.split(|&b| b == b'/').map(<[u8]>::to_vec));
            if todo.is_empty() {
                // The last component: followed only to a directory, else it is replaced.
                let (p, is_dir) = resolve(root, &via, links)?;
                if is_dir {
                    return Ok((p, true));
                }
                out.push(c);
                return Ok((out, false));
            }
            out.clear();
            todo.extend(via.into_iter().rev());
            continue;
        }
        out.push(c);
    }
    let is_dir = lookup(root, &out).is_some_and(Entry::is_dir);
    Ok((out, is_dir))
}

/// The directory at `path` below `root` (resolved already), made where missing (0755, 0:0,
/// time `t`); an entry in the way that is not a directory is an error.
fn make_parents<'a>(
    root: &'a mut Entry,
    path: &[Vec<u8>],
    t: super::Timestamp,
    dev: u64,
) -> Result<&'a mut Entry> {
    let mut cur = root;
    for (n, c) in path.iter().enumerate() {
        let children = cur.children_mut();
        let i = match children.binary_search_by(|x| (*x.name).cmp(&c[..])) {
            Ok(i) if children[i].is_dir() => i,
            Ok(_) => {
                let shown: Vec<u8> = path[..=n]
                    .iter()
                    .flat_map(|c| [&b"/"[..], c])
                    .flatten()
                    .copied()
                    .collect();
                bail!("{} is not a directory in the image", display(&shown));
            }
            Err(i) => {
                children.insert(
                    i,
                    Entry {
                        name: c.clone().into(),
                        kind: Kind::Dir {
                            children: Vec::new(),
                        },
                        meta: Meta::at(t, 0o755, dev, 0),
                        xattrs: Vec::new(),
                    },
                );
                i
            }
        };
        cur = &mut cur.children_mut()[i];
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Layout, Timestamp};

    fn t(sec: i64) -> Timestamp {
        Timestamp { sec, nsec: 0 }
    }

    fn dir(name: &str, perm: u16, children: Vec<Entry>) -> Entry {
        let mut children = children;
        children.sort_by(|a, b| a.name.cmp(&b.name));
        Entry {
            name: name.as_bytes().into(),
            kind: Kind::Dir { children },
            meta: Meta::at(t(5), perm, 0, 0),
            xattrs: Vec::new(),
        }
    }

    fn file(name: &str, size: u64) -> Entry {
        Entry {
            name: name.as_bytes().into(),
            kind: Kind::File {
                size,
                layout: Layout::Dense,
                data: Data::InTree { src: 0 },
            },
            meta: Meta::at(t(5), 0o644, 1, size),
            xattrs: Vec::new(),
        }
    }

    fn link(name: &str, target: &str) -> Entry {
        Entry {
            name: name.as_bytes().into(),
            kind: Kind::Symlink {
                target: target.as_bytes().to_vec(),
            },
            meta: Meta::at(t(5), 0o777, 0, 0),
            xattrs: Vec::new(),
        }
    }

    /// A descriptor for origins that are never read here.
    fn some_dir() -> std::sync::Arc<std::os::fd::OwnedFd> {
        let flags = rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY;
        std::sync::Arc::new(rustix::fs::open("/", flags, rustix::fs::Mode::empty()).unwrap())
    }

    fn tree(root: Entry) -> Tree {
        let origin = Origin::Dir {
            root: "/src".into(),
            dest: Vec::new(),
            dir: some_dir(),
        };
        let mut t = Tree::new(root, origin, 0, 0);
        recount(&mut t);
        t
    }

    /// A tree of one file, `name` of `size` bytes, from the host file `host` (a single-file SRC).
    fn file_tree(name: &str, size: u64, host: &str) -> Tree {
        let mut t = tree(file(name, size));
        t.origins = vec![Origin::File {
            path: host.into(),
            dest: Vec::new(),
            dir: some_dir(),
        }];
        t
    }

    fn find<'a>(e: &'a Entry, path: &str) -> &'a Entry {
        let comps: Vec<Vec<u8>> = path.split('/').map(|c| c.as_bytes().to_vec()).collect();
        lookup(e, &comps).unwrap_or_else(|| panic!("no {path}"))
    }

    fn names(e: &Entry) -> Vec<String> {
        e.children()
            .iter()
            .map(|c| String::from_utf8_lossy(&c.name).into_owned())
            .collect()
    }

    fn place(s: &str) -> Placement {
        Placement::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn dest_syntax() {
        assert_eq!(place("/"), Placement::root());
        assert_eq!(
            place("/a//b/./c"),
            Placement {
                comps: vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
                into: false
            }
        );
        assert!(place("/etc/").into);
        assert!(Placement::parse(b"etc").is_err());
        assert!(Placement::parse(b"/a/../b").is_err());
    }

    #[test]
    fn later_replaces_earlier_and_directories_merge() {
        let mut base = tree(dir(
            "",
            0o755,
            vec![
                dir("etc", 0o755, vec![file("a", 1), file("b", 2)]),
                file("x", 3),
                dir("y", 0o700, vec![file("in-y", 4)]),
            ],
        ));
        let over = tree(dir(
            "",
            0o700,
            vec![
                dir("etc", 0o750, vec![file("b", 20), file("c", 30)]),
                dir("x", 0o755, vec![file("in-x", 5)]),
                file("y", 6),
            ],
        ));
        add(&mut base, over, &Placement::root()).unwrap();
        recount(&mut base);
        // The root keeps its own mode; /etc takes the later one; both merge.
        assert_eq!(base.root.meta.perm, 0o755);
        assert_eq!(find(&base.root, "etc").meta.perm, 0o750);
        assert_eq!(names(find(&base.root, "etc")), ["a", "b", "c"]);
        assert!(matches!(
            find(&base.root, "etc/b").kind,
            Kind::File { size: 20, .. }
        ));
        assert!(find(&base.root, "x").is_dir() && !find(&base.root, "y").is_dir());
        assert_eq!((base.entries, base.data_bytes), (7, 1 + 20 + 30 + 5 + 6));
        // The added files are source 1's, with their identities apart from source 0's.
        let Kind::File { data, .. } = find(&base.root, "etc/c").kind else {
            panic!()
        };
        assert_eq!(data, Data::InTree { src: 1 });
        assert_eq!(find(&base.root, "etc/c").meta.dev, 1 | 1 << 48);
        assert_eq!(base.origins.len(), 2);
    }

    #[test]
    fn merged_directories_keep_each_source_s_identity() {
        let with_id = |mut e: Entry, ino: u64| {
            e.meta.dev = 7;
            e.meta.ino = ino;
            e
        };
        let layer = |ino: u64| {
            let etc = with_id(dir("etc", 0o755, vec![file("f", ino)]), ino);
            tree(dir("", 0o755, vec![etc]))
        };
        let mut base = layer(10);
        add(&mut base, layer(20), &Placement::root()).unwrap();
        add(&mut base, layer(30), &Placement::root()).unwrap();
        // /etc is source 2's; sources 0's and 1's directories are known by its identity.
        let etc = find(&base.root, "etc");
        assert_eq!((etc.meta.src(), etc.meta.host_id()), (2, (7, 30)));
        let mut hidden = base.merged[&(etc.meta.dev, etc.meta.ino)].clone();
        hidden.sort_unstable();
        assert_eq!(hidden, [(7, 10), (7 | 1 << SRC_SHIFT, 20)]);
        assert_eq!(base.merged.len(), 1);
    }

    #[test]
    fn dest_parents_are_made_and_symlinks_followed() {
        let mut base = tree(dir(
            "",
            0o755,
            vec![
                link("lib", "usr/lib"),
                dir("usr", 0o755, vec![dir("lib", 0o755, vec![file("libc", 1)])]),
                link("conf", "/etc/real"),
                file("plain", 1),
            ],
        ));
        let over = tree(dir("", 0o700, vec![file("m.ko", 7)]));
        add(&mut base, over, &place("/lib/modules/6.1")).unwrap();
        assert_eq!(names(find(&base.root, "usr/lib")), ["libc", "modules"]);
        let made = find(&base.root, "usr/lib/modules");
        assert_eq!(
            (made.meta.perm, made.meta.uid, made.meta.gid),
            (0o755, 0, 0)
        );
        // A directory source placed at a new path keeps its own mode.
        assert_eq!(find(&base.root, "usr/lib/modules/6.1").meta.perm, 0o700);
        let Origin::Dir { dest, .. } = &base.origins[1] else {
            panic!()
        };
        assert_eq!(dest, b"/usr/lib/modules/6.1");
        // A single file into a directory (by a symlink to it), and over a dangling symlink.
        add(
            &mut base,
            file_tree("motd", 9, "/host/motd"),
            &place("/lib"),
        )
        .unwrap();
        assert!(matches!(
            find(&base.root, "usr/lib/motd").kind,
            Kind::File { size: 9, .. }
        ));
        let Origin::File { dest, .. } = &base.origins[2] else {
            panic!()
        };
        assert_eq!(dest, b"/usr/lib/motd");
        add(&mut base, file_tree("c", 3, "/host/c"), &place("/conf")).unwrap();
        assert!(!find(&base.root, "conf").is_dir());
        assert!(matches!(find(&base.root, "conf").kind, Kind::File { .. }));
        // A file in the way of DEST's parents is an error.
        let over = tree(dir("", 0o755, vec![]));
        let e = add(&mut base, over, &place("/plain/sub")).unwrap_err();
        assert!(e.to_string().contains("/plain is not a directory"), "{e}");
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let mut base = tree(dir("", 0o755, vec![link("a", "b"), link("b", "a")]));
        let over = tree(dir("", 0o755, vec![]));
        let e = add(&mut base, over, &place("/a/x")).unwrap_err();
        assert!(e.to_string().contains("symbolic links"), "{e}");
    }
}
