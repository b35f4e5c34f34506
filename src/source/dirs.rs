//! The source directories behind one directory of the tree, open while the tree is walked again
//! (to populate it, or to digest it): a directory of the tree may merge directories of several
//! sources (SOURCE and `--add` ones), and each file is read by name from its own source's
//! directory. Each is opened relative to the one above it, never following a symlink, as the
//! scan walked it; a source placed at a path (`--add SRC:/opt/x`) joins when the walk reaches it.

use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use super::Origin;

/// The open source directories behind one directory of the tree.
#[derive(Default)]
pub struct Dirs {
    /// (source index, its directory, whether the walk goes down into it: a single file's
    /// parent is open only for that file).
    open: Vec<(u16, OwnedFd, bool)>,
}

impl Dirs {
    /// At the tree's root: the roots of the directory sources placed at `/`, and the parents of
    /// single files placed in `/`.
    pub fn root(origins: &[Origin]) -> Result<Dirs> {
        Dirs::default().joined(origins, b"")
    }

    /// For directory `name` below this one, at `rel` (`/a/b`) in the tree: each source's
    /// directory of that name (where there is one), and the sources placed there.
    pub fn child(&self, origins: &[Origin], name: &[u8], rel: &[u8]) -> Result<Dirs> {
        let mut open = Vec::new();
        for (k, fd, descend) in &self.open {
            if !descend {
                continue;
            }
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rfs::openat(fd, name, flags, Mode::empty()) {
                Ok(sub) => open.push((*k, sub, true)),
                // This source has no such directory (the tree's comes from another source), or
                // has lost it since the scan: a file of it below is then refused by name.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::ACCESS) => {}
                Err(e) => {
                    let o = &origins[*k as usize];
                    return Err(std::io::Error::from(e)).context(o.show(rel));
                }
            }
        }
        Dirs { open }.joined(origins, rel)
    }

    /// Adds the sources placed at `rel`.
    fn joined(mut self, origins: &[Origin], rel: &[u8]) -> Result<Dirs> {
        for (k, o) in origins.iter().enumerate() {
            let (dir, descend) = match o {
                Origin::Dir { root, dest } if dest == rel => (root.as_path(), true),
                Origin::File { path, dest } if parent(dest) == rel => {
                    (path.parent().unwrap_or(Path::new("/")), false)
                }
                _ => continue,
            };
            let fd = rfs::open(
                dir,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| dir.display().to_string())?;
            self.open.push((k as u16, fd, descend));
        }
        Ok(self)
    }

    /// Source `src`'s directory here, if it has one.
    pub fn get(&self, src: u16) -> Option<&OwnedFd> {
        self.open
            .iter()
            .find(|(k, _, _)| *k == src)
            .map(|(_, fd, _)| fd)
    }
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

    #[test]
    fn sources_join_where_they_are_placed_and_single_files_are_not_walked() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, f) = (d.path().join("a"), d.path().join("b"), d.path().join("f"));
        std::fs::create_dir_all(a.join("x/y")).unwrap();
        std::fs::create_dir_all(b.join("y")).unwrap();
        std::fs::create_dir_all(f.join("x")).unwrap();
        std::fs::write(f.join("file"), b"").unwrap();
        let origins = vec![
            Origin::Dir {
                root: a.clone(),
                dest: Vec::new(),
            },
            Origin::Dir {
                root: b.clone(),
                dest: b"/x".to_vec(),
            },
            Origin::File {
                path: f.join("file"),
                dest: b"/x/file".to_vec(),
            },
        ];
        let root = Dirs::root(&origins).unwrap();
        assert!(root.get(0).is_some() && root.get(1).is_none());
        let x = root.child(&origins, b"x", b"/x").unwrap();
        // a/x, b (placed at /x), and f (the single file's parent, not walked into).
        assert!(x.get(0).is_some() && x.get(1).is_some() && x.get(2).is_some());
        let y = x.child(&origins, b"y", b"/x/y").unwrap();
        assert!(y.get(0).is_some() && y.get(1).is_some() && y.get(2).is_none());
        let z = y.child(&origins, b"z", b"/x/y/z").unwrap();
        assert!((0..3).all(|k| z.get(k).is_none()));
        assert_eq!(parent(b"/x/file"), b"/x");
        assert_eq!(parent(b"/top"), b"");
    }
}
