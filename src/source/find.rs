//! Finding an entry of a scanned tree by its path, resolved as inside the tree: symlinks are
//! followed within the tree (an absolute target starts again at the tree's root, `..` stops at
//! the root), at most 40 of them, never out to the host. `--efi` finds the kernel, initrd, boot
//! loader and os-release this way.

use anyhow::{bail, Result};

use super::{display, Entry, Kind, Tree};

/// Most symlinks followed in one lookup (as Linux's MAXSYMLINKS).
const MAX_LINKS: usize = 40;

/// An entry found, with the names of the directories that lead to it from the root and its own
/// name: the path with every symlink resolved.
#[derive(Debug, Clone)]
pub struct Found<'a> {
    pub entry: &'a Entry,
    pub names: Vec<&'a [u8]>,
}

impl Found<'_> {
    /// The resolved path from the root, `/`-separated, with a leading `/`.
    pub fn path(&self) -> Vec<u8> {
        let mut p = Vec::new();
        for n in &self.names {
            p.push(b'/');
            p.extend_from_slice(n);
        }
        if p.is_empty() {
            p.push(b'/');
        }
        p
    }
}

/// The entry at `path` in `tree` (relative paths start at the root too), its last component
/// followed if it is a symlink; None when no such entry exists. A symlink loop, or a component
/// other than the last that is not a directory, is an error.
pub fn lookup<'a>(tree: &'a Tree, path: &[u8]) -> Result<Option<Found<'a>>> {
    let mut stack: Vec<&'a Entry> = Vec::new();
    let mut todo: Vec<Vec<u8>> = components(path);
    todo.reverse(); // popped from the end: the next component is last
    let mut links = 0;
    while let Some(name) = todo.pop() {
        match name.as_slice() {
            b"." => continue,
            b".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        let dir = stack.last().copied().unwrap_or(&tree.root);
        if !dir.is_dir() {
            bail!("{}: not a directory in the tree", display(&join(&stack)));
        }
        let Some(child) = dir.children().iter().find(|c| *c.name == *name) else {
            return Ok(None);
        };
        if let Kind::Symlink { target } = &child.kind {
            links += 1;
            if links > MAX_LINKS {
                bail!(
                    "{}: too many levels of symbolic links in the tree",
                    display(path)
                );
            }
            if target.starts_with(b"/") {
                stack.clear();
            }
            let mut t = components(target);
            t.reverse();
            todo.extend(t);
            continue;
        }
        stack.push(child);
    }
    let Some(&entry) = stack.last() else {
        return Ok(Some(Found {
            entry: &tree.root,
            names: Vec::new(),
        }));
    };
    Ok(Some(Found {
        entry,
        names: stack.iter().map(|e| &*e.name).collect(),
    }))
}

fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn join(stack: &[&Entry]) -> Vec<u8> {
    let mut p = Vec::new();
    for e in stack {
        p.push(b'/');
        p.extend_from_slice(&e.name);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Data, Layout, Meta};

    fn file(name: &str) -> Entry {
        Entry {
            name: name.as_bytes().into(),
            kind: Kind::File {
                size: 0,
                layout: Layout::Dense,
                data: Data::InTree { src: 0 },
            },
            meta: Meta::default(),
            xattrs: Vec::new(),
        }
    }

    fn link(name: &str, target: &str) -> Entry {
        Entry {
            kind: Kind::Symlink {
                target: target.as_bytes().to_vec(),
            },
            ..file(name)
        }
    }

    fn dir(name: &str, children: Vec<Entry>) -> Entry {
        Entry {
            kind: Kind::Dir { children },
            ..file(name)
        }
    }

    fn tree() -> Tree {
        Tree {
            root: dir(
                "",
                vec![
                    dir(
                        "boot",
                        vec![file("vmlinuz-6.1"), link("vmlinuz", "vmlinuz-6.1")],
                    ),
                    link("vmlinuz", "boot/vmlinuz-6.1"),
                    link("abs", "/../../boot/./vmlinuz"),
                    link("usr", "/"),
                    link("loop", "loop2"),
                    link("loop2", "loop"),
                    link("etc", "boot/vmlinuz-6.1"),
                ],
            ),
            origins: Vec::new(),
            merged: Default::default(),
            entries: 9,
            data_bytes: 0,
            unreadable: None,
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_tree() {
        let t = tree();
        let path = |p: &str| lookup(&t, p.as_bytes()).unwrap().map(|f| f.path());
        assert_eq!(path("/boot/vmlinuz-6.1").unwrap(), b"/boot/vmlinuz-6.1");
        assert_eq!(path("vmlinuz").unwrap(), b"/boot/vmlinuz-6.1");
        assert_eq!(path("/abs").unwrap(), b"/boot/vmlinuz-6.1");
        assert_eq!(path("/usr/usr/boot/vmlinuz").unwrap(), b"/boot/vmlinuz-6.1");
        assert_eq!(path("/../..").unwrap(), b"/");
        assert_eq!(path("/boot/missing"), None);
        assert!(lookup(&t, b"/loop").is_err());
        assert!(
            lookup(&t, b"/etc/os-release").is_err(),
            "a file is not a directory"
        );
    }
}
