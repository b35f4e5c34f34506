//! Source files read while serving (`--serve --lazy`): the disk's file-data regions are answered
//! from the files in the tree (or an archive's spool) rather than from a copy, for every source
//! of the tree (SOURCE, each `--add`).
//!
//! Only through what the scans opened: each source's root descriptor (a path is never resolved
//! again, so a symlink repointed meanwhile leads nowhere new), and below it the directories the
//! disk was built from ([`DirNode`]s, as the walk of [`super::dirs`] reached them), each reopened
//! by name from its parent and refused unless it has the device and inode scanned. A few
//! directory and file descriptors are kept open (the least recently used closed first), so deep
//! or wide trees hold a bounded number. Every read checks the file (or the spool) against what
//! was scanned — device, inode, size, modification and change time — before and after reading:
//! a file changed since gives an I/O error and one warning naming it, never other bytes.

use crate::sync::lock;
use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::dirs::{host_name, DirNode, Dirs};
use super::open::{open_dir, open_file, stat, Refused, Stamp};
use super::{display, Data, Entry, Origin};

/// Most directories kept open at once (others are reopened from their parents when needed).
const OPEN_DIRS: usize = 64;
/// Most source files kept open at once.
const OPEN_FILES: usize = 256;

/// The served tree's sources, and the descriptors kept open.
pub struct LiveTree {
    /// The tree's sources (their scans' descriptors), indexed by [`super::Data::src`].
    origins: Vec<Origin>,
    dirs_open: Mutex<Recent<u64, Arc<OwnedFd>>>,
    files_open: Mutex<Recent<usize, Arc<std::fs::File>>>,
}

/// Where a served file is.
pub enum Place {
    /// Named `name` in a directory of its source.
    Dir { dir: Arc<DirNode>, name: Box<[u8]> },
    /// In source `src`'s spool, its byte 0 at `offset`; `rel` is its path in the tree.
    Spool {
        src: u16,
        offset: u64,
        rel: Box<[u8]>,
    },
}

impl LiveTree {
    /// The tree whose sources are `origins`.
    pub fn new(origins: &[Origin]) -> Arc<LiveTree> {
        Arc::new(LiveTree {
            origins: origins.to_vec(),
            dirs_open: Mutex::new(Recent::new(OPEN_DIRS)),
            files_open: Mutex::new(Recent::new(OPEN_FILES)),
        })
    }

    /// A regular file as it was scanned (`stamp`; for a spool, the spool as read), at `place`.
    /// `id` keys the descriptor cache.
    pub fn file(self: &Arc<Self>, place: Place, stamp: Stamp, id: usize) -> LiveFile {
        LiveFile {
            tree: self.clone(),
            place,
            stamp,
            id,
            warned: AtomicBool::new(false),
        }
    }

    /// File `e` at `rel` in the tree (`data` and `size` from its kind) as served: by name in
    /// its source's directory among `dirs` (as the walk reached it), or in its source's spool.
    /// `id` keys the descriptor cache.
    pub fn entry(
        self: &Arc<Self>,
        e: &Entry,
        data: Data,
        size: u64,
        dirs: &Dirs,
        rel: &[u8],
        id: usize,
    ) -> anyhow::Result<LiveFile> {
        use anyhow::Context;
        let origin = self
            .origins
            .get(data.src() as usize)
            .with_context(|| format!("{}: no such source", display(rel)))?;
        let (place, stamp) = match (data, origin) {
            (Data::InTree { src }, _) => {
                let dir = dirs.node(src).with_context(|| {
                    format!(
                        "{}: changed during the build (its directory is gone); nothing was written",
                        origin.show(rel)
                    )
                })?;
                let place = Place::Dir {
                    dir: dir.clone(),
                    name: host_name(origin, &e.name).into(),
                };
                (place, Stamp::of_entry(&e.meta, size))
            }
            (Data::Spool { src, offset }, Origin::Spool(spool)) => {
                let rel = rel.into();
                (Place::Spool { src, offset, rel }, spool.stamp)
            }
            _ => anyhow::bail!("{}: no source to read from", origin.show(rel)),
        };
        Ok(self.file(place, stamp, id))
    }

    /// Directory `node`, open: walked to from its nearest open ancestor (or its source's root),
    /// each step checked against the scan.
    fn dir(&self, node: &Arc<DirNode>) -> Result<Arc<OwnedFd>, Refused> {
        let mut below = Vec::new();
        let mut at = node;
        let mut fd = loop {
            let Some(parent) = &at.parent else {
                let origin = &self.origins[at.src as usize];
                let root = origin.host_fd().expect("a directory's source has one");
                break root.clone();
            };
            if let Some(fd) = lock(&self.dirs_open).get(&at.key) {
                break fd;
            }
            below.push(at);
            at = parent;
        };
        for d in below.iter().rev() {
            fd = Arc::new(open_dir(&*fd, &d.name, d.id)?);
            lock(&self.dirs_open).put(d.key, fd.clone());
        }
        Ok(fd)
    }
}

/// One regular file of a served tree, identified as it was when the disk was built.
pub struct LiveFile {
    tree: Arc<LiveTree>,
    place: Place,
    /// The file as scanned (for a spool: the spool as read).
    stamp: Stamp,
    /// Its index in the tree, the key of the descriptor cache.
    id: usize,
    /// A change has been reported on stderr already.
    warned: AtomicBool,
}

impl std::fmt::Debug for LiveFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveFile({})", self.path())
    }
}

impl LiveFile {
    /// The file's path as the user named its source (for an archive: ARCHIVE:/path), for
    /// messages.
    pub fn path(&self) -> String {
        match &self.place {
            Place::Dir { dir, name } => {
                let origin = &self.tree.origins[dir.src as usize];
                let mut p = origin
                    .host_dir()
                    .map_or(Vec::new(), |d| d.as_os_str().as_encoded_bytes().to_vec());
                while p.len() > 1 && p.ends_with(b"/") {
                    p.pop();
                }
                p.extend_from_slice(&dir.rel(name));
                display(&p)
            }
            Place::Spool { src, rel, .. } => self.tree.origins[*src as usize].show(rel),
        }
    }

    /// Fills `buf` with the file's bytes at `offset` (the range must lie within the size
    /// scanned). Fails with an I/O error when the file is gone or no longer the one scanned,
    /// and says so once on stderr.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let res = self.checked_read(buf, offset);
        if let Err(e) = &res {
            if !self.warned.swap(true, Ordering::Relaxed) {
                crate::progress::warn(&e.to_string());
            }
        }
        res
    }

    fn checked_read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let file = match &self.place {
            Place::Spool {
                src, offset: base, ..
            } => {
                let Some(Origin::Spool(spool)) = self.tree.origins.get(*src as usize) else {
                    return Err(self.changed("its spool is gone"));
                };
                let f = &spool.file;
                self.check(f)?;
                self.read_all(f, buf, base + offset)?;
                // A change racing with the read is caught here rather than served.
                return self.check(f);
            }
            Place::Dir { dir, name } => match self.cached() {
                Some(f) => f,
                None => {
                    let fd = self
                        .tree
                        .dir(dir)
                        .and_then(|d| open_file(&*d, name, &self.stamp))
                        .map_err(|r| self.refused(r))?;
                    let f = Arc::new(std::fs::File::from(fd));
                    lock(&self.tree.files_open).put(self.id, f.clone());
                    f
                }
            },
        };
        self.check(&file)?;
        self.read_all(&file, buf, offset)?;
        self.check(&file)
    }

    /// This file's open descriptor, if it is kept.
    fn cached(&self) -> Option<Arc<std::fs::File>> {
        lock(&self.tree.files_open).get(&self.id)
    }

    fn read_all(&self, file: &std::fs::File, buf: &mut [u8], at: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], at + done as u64) {
                Ok(0) => return Err(self.changed("it is shorter than when the disk was built")),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", self.path()))),
            }
        }
        Ok(())
    }

    /// The descriptor still is the file (or spool) as scanned.
    fn check(&self, file: &std::fs::File) -> io::Result<()> {
        let st = stat(file).map_err(io::Error::from)?;
        match self.stamp.what_changed(&Stamp::of(&st)) {
            None => Ok(()),
            Some(why) => Err(self.changed(&why)),
        }
    }

    fn refused(&self, r: Refused) -> io::Error {
        match r {
            Refused::Os(e) => io::Error::other(format!("{}: {}", self.path(), io::Error::from(e))),
            Refused::Changed(why) => self.changed(&why),
        }
    }

    fn changed(&self, why: &str) -> io::Error {
        let what = match &self.place {
            Place::Spool { src, rel, .. } => match &self.tree.origins[*src as usize] {
                Origin::Spool(s) => format!("{}, holding {}", s.what(), display(rel)),
                o => o.show(rel),
            },
            Place::Dir { .. } => self.path(),
        };
        io::Error::other(format!(
            "{what}: changed since the disk was built ({why}); files must not change while served with --lazy"
        ))
    }
}

/// A few open descriptors by key, the least recently used dropped first. A linear search: a few
/// hundred entries cost less than the system calls they save.
struct Recent<K, V> {
    cap: usize,
    items: VecDeque<(K, V)>,
}

impl<K: PartialEq, V: Clone> Recent<K, V> {
    fn new(cap: usize) -> Self {
        Recent {
            cap,
            items: VecDeque::with_capacity(cap),
        }
    }

    /// The value of `k`, now the most recently used.
    fn get(&mut self, k: &K) -> Option<V> {
        let i = self.items.iter().position(|(key, _)| key == k)?;
        let item = self.items.remove(i)?;
        let v = item.1.clone();
        self.items.push_back(item);
        Some(v)
    }

    fn put(&mut self, k: K, v: V) {
        if let Some(i) = self.items.iter().position(|(key, _)| *key == k) {
            self.items.remove(i);
        }
        if self.items.len() >= self.cap {
            self.items.pop_front();
        }
        self.items.push_back((k, v));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::dirs::Dirs;
    use crate::source::{scan, Entry, Kind, Tree};
    use std::os::unix::fs::FileExt;

    /// Scans `dir` and makes the LiveFile of every regular file, walking the directories as
    /// populating does: (path below the root, file).
    fn served(dir: &std::path::Path) -> (Arc<LiveTree>, Vec<(String, LiveFile)>) {
        let tree = scan(dir, Default::default(), &mut || {}).unwrap();
        let live = LiveTree::new(&tree.origins);
        let mut files = Vec::new();
        fn walk(
            tree: &Tree,
            live: &Arc<LiveTree>,
            d: &Entry,
            dirs: &Dirs,
            rel: &str,
            out: &mut Vec<(String, LiveFile)>,
        ) {
            for c in d.children() {
                let rel = format!("{rel}/{}", String::from_utf8_lossy(&c.name));
                match &c.kind {
                    Kind::Dir { .. } => {
                        let sub = dirs.child(tree, c, rel.as_bytes()).unwrap();
                        walk(tree, live, c, &sub, &rel, out);
                    }
                    Kind::File { size, .. } => {
                        let place = Place::Dir {
                            dir: dirs.node(0).unwrap().clone(),
                            name: c.name.clone(),
                        };
                        let stamp = Stamp::of_entry(&c.meta, *size);
                        let n = out.len();
                        out.push((rel, live.file(place, stamp, n)));
                    }
                    _ => {}
                }
            }
        }
        walk(&tree, &live, &tree.root, &Dirs::root(&tree), "", &mut files);
        (live, files)
    }

    fn find<'a>(files: &'a [(String, LiveFile)], rel: &str) -> &'a LiveFile {
        &files.iter().find(|(r, _)| r == rel).unwrap().1
    }

    #[test]
    fn reads_through_subdirectories_and_refuses_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let p = dir.path().join("a/b/f");
        std::fs::write(&p, b"0123456789").unwrap();
        let (_live, files) = served(dir.path());
        let f = find(&files, "/a/b/f");
        let mut buf = [0u8; 4];
        f.read_at(&mut buf, 3).unwrap();
        assert_eq!(&buf, b"3456");
        // Cached descriptor, then a grown file: an error naming it.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all_at(b"x", 10)
            .unwrap();
        let e = f.read_at(&mut buf, 0).unwrap_err().to_string();
        assert!(e.contains("a/b/f") && e.contains("now 11"), "{e}");
    }

    #[test]
    fn a_directory_replaced_since_the_scan_is_not_entered() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), b"data").unwrap();
        let (_live, files) = served(dir.path());
        // The same path again, in another directory: a copy of the tree, moved into place.
        std::fs::rename(dir.path().join("a"), dir.path().join("old")).unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink("../old/b", dir.path().join("a/b")).unwrap();
        let mut buf = [0u8; 4];
        let e = find(&files, "/a/b/f")
            .read_at(&mut buf, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/a/b/f"), "{e}");
        // Moved back: served again.
        std::fs::remove_file(dir.path().join("a/b")).unwrap();
        std::fs::remove_dir(dir.path().join("a")).unwrap();
        std::fs::rename(dir.path().join("old"), dir.path().join("a")).unwrap();
        let (_live2, files) = served(dir.path());
        find(&files, "/a/b/f").read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"data");
    }

    #[test]
    fn directories_held_open_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let n = OPEN_DIRS * 3;
        for i in 0..n {
            let d = dir.path().join(format!("d{i:03}/e"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f"), format!("{i:03}")).unwrap();
        }
        let (live, files) = served(dir.path());
        // Twice round: the second time every directory is reopened from the root.
        for _ in 0..2 {
            for i in 0..n {
                let mut buf = [0u8; 3];
                find(&files, &format!("/d{i:03}/e/f"))
                    .read_at(&mut buf, 0)
                    .unwrap();
                assert_eq!(buf, format!("{i:03}").as_bytes());
            }
        }
        assert_eq!(lock(&live.dirs_open).len(), OPEN_DIRS);
    }

    #[test]
    fn recent_drops_the_least_recently_used() {
        let mut r = Recent::new(2);
        r.put(1, "a");
        r.put(2, "b");
        assert_eq!(r.get(&1), Some("a"));
        r.put(3, "c");
        assert_eq!(
            (r.get(&2), r.get(&1), r.get(&3)),
            (None, Some("a"), Some("c"))
        );
    }
}
