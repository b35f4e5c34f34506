//! Source files read while serving (`--serve --lazy`): the disk's file-data regions are answered
//! from the files in the tree (or an archive's spool) rather than from a copy.
//!
//! Only through what the scan opened: SOURCE's root descriptor (SOURCE is never resolved again,
//! so a symlink repointed meanwhile leads nowhere new), and below it the directories the disk
//! was built from, each reopened by name from its parent and refused unless it has the device
//! and inode scanned. A few directory and file descriptors are kept open (the least recently
//! used closed first), so deep or wide trees hold a bounded number. Every read checks the file
//! (or the spool) against what was scanned — device, inode, size, modification and change time —
//! before and after reading: a file changed since gives an I/O error and one warning naming it,
//! never other bytes.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::bytes::Spool;
use super::open::{open_dir, open_file, stat, Refused, Stamp};
use super::{display, Tree};

/// Most directories kept open at once (others are reopened from their parents when needed).
const OPEN_DIRS: usize = 64;
/// Most source files kept open at once.
const OPEN_FILES: usize = 256;

/// A directory of the tree, by its index in [`LiveTree`]'s table (the root is [`ROOT`]).
pub type DirId = u32;
/// The source root.
pub const ROOT: DirId = 0;

/// A directory below the root: its parent, name and (dev, ino) as scanned.
struct DirNode {
    parent: DirId,
    name: Box<[u8]>,
    id: (u64, u64),
}

/// Where the tree's files are read.
enum Origin {
    /// A directory: the scan's descriptor of its root and the directories below it.
    Dir {
        root: Arc<OwnedFd>,
        dirs: RwLock<Vec<DirNode>>,
    },
    /// An archive: the spool holding its files' bytes.
    Spool(Arc<Spool>),
}

/// The served tree: where its files are, and the descriptors kept open.
pub struct LiveTree {
    origin: Origin,
    /// SOURCE as given, for messages.
    name: Vec<u8>,
    dirs_open: Mutex<Recent<DirId, Arc<OwnedFd>>>,
    files_open: Mutex<Recent<usize, Arc<std::fs::File>>>,
}

impl LiveTree {
    /// The tree scanned from `source` (named in messages): through its root descriptor, or its
    /// spool for an archive.
    pub fn of(tree: &Tree, source: &[u8]) -> anyhow::Result<Arc<LiveTree>> {
        let origin = match (&tree.dir, &tree.spool) {
            (_, Some(spool)) => Origin::Spool(spool.clone()),
            (Some(root), None) => Origin::Dir {
                root: root.clone(),
                dirs: RwLock::new(vec![DirNode {
                    parent: ROOT,
                    name: Box::new([]),
                    id: (tree.root.meta.dev, tree.root.meta.ino),
                }]),
            },
            (None, None) => anyhow::bail!("{}: no source to read from", display(source)),
        };
        Ok(Arc::new(LiveTree {
            origin,
            name: source.to_vec(),
            dirs_open: Mutex::new(Recent::new(OPEN_DIRS)),
            files_open: Mutex::new(Recent::new(OPEN_FILES)),
        }))
    }

    /// Records directory `name` of `parent`, scanned with identity `id` (dev, ino).
    pub fn add_dir(&self, parent: DirId, name: &[u8], id: (u64, u64)) -> DirId {
        let Origin::Dir { dirs, .. } = &self.origin else {
            return ROOT; // an archive has no directories to open
        };
        let mut dirs = dirs.write().unwrap_or_else(|e| e.into_inner());
        dirs.push(DirNode {
            parent,
            name: name.into(),
            id,
        });
        DirId::try_from(dirs.len() - 1).expect("fewer than 2^32 directories")
    }

    /// A regular file as it was scanned (`stamp`): `name` in directory `dir`, or for an archive
    /// the member at `name` (its path) whose bytes start at `offset` in the spool. `id` keys the
    /// descriptor cache.
    pub fn file(
        self: &Arc<Self>,
        dir: DirId,
        name: &[u8],
        stamp: Stamp,
        offset: u64,
        id: usize,
    ) -> LiveFile {
        LiveFile {
            tree: self.clone(),
            dir,
            name: name.into(),
            stamp,
            base: offset,
            id,
            warned: AtomicBool::new(false),
        }
    }

    /// The open directory `id`, walked to from the nearest open ancestor (or the root), each
    /// step checked against the scan.
    fn dir(&self, id: DirId) -> Result<Arc<OwnedFd>, Refused> {
        let Origin::Dir { root, dirs } = &self.origin else {
            unreachable!("an archive has no directories");
        };
        let cached = |d: DirId| lock(&self.dirs_open).get(&d);
        let dirs = dirs.read().unwrap_or_else(|e| e.into_inner());
        let mut below = Vec::new();
        let mut at = id;
        let mut fd = loop {
            if at == ROOT {
                break root.clone();
            }
            if let Some(fd) = cached(at) {
                break fd;
            }
            below.push(at);
            at = dirs[at as usize].parent;
        };
        for &d in below.iter().rev() {
            let node = &dirs[d as usize];
            fd = Arc::new(open_dir(&*fd, &node.name, node.id)?);
            lock(&self.dirs_open).put(d, fd.clone());
        }
        Ok(fd)
    }

    /// The path of `name` in directory `dir`, as the user named SOURCE.
    fn path(&self, dir: DirId, name: &[u8]) -> Vec<u8> {
        let mut parts: Vec<Box<[u8]>> = vec![name.into()];
        if let Origin::Dir { dirs, .. } = &self.origin {
            let dirs = dirs.read().unwrap_or_else(|e| e.into_inner());
            let mut at = dir;
            while at != ROOT {
                let node = &dirs[at as usize];
                parts.push(node.name.clone());
                at = node.parent;
            }
        }
        let mut p = self.name.clone();
        for part in parts.iter().rev() {
            if !p.ends_with(b"/") && !part.starts_with(b"/") {
                p.push(b'/');
            }
            p.extend_from_slice(part);
        }
        p
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One regular file of a served tree, identified as it was when the disk was built.
pub struct LiveFile {
    tree: Arc<LiveTree>,
    dir: DirId,
    /// Its name in `dir` (for an archive: its path in the archive).
    name: Box<[u8]>,
    /// The file as scanned (for an archive: the spool as read).
    stamp: Stamp,
    /// Where its byte 0 is in the spool (0 for a file of a directory).
    base: u64,
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
    /// The file's path as the user named it (for an archive: its path in the archive), for
    /// messages.
    pub fn path(&self) -> String {
        match &self.tree.origin {
            Origin::Spool(_) => display(&self.name),
            Origin::Dir { .. } => display(&self.tree.path(self.dir, &self.name)),
        }
    }

    /// Fills `buf` with the file's bytes at `offset` (the range must lie within the size
    /// scanned). Fails with an I/O error when the file is gone or no longer the one scanned,
    /// and says so once on stderr.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let res = self.checked_read(buf, offset);
        if let Err(e) = &res {
            if !self.warned.swap(true, Ordering::Relaxed) {
                eprintln!("linuxdisk-mk: warning: {e}");
            }
        }
        res
    }

    fn checked_read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let file = match &self.tree.origin {
            Origin::Spool(spool) => {
                let f = &spool.file;
                self.check(f)?;
                self.read_all(f, buf, self.base + offset)?;
                // A change racing with the read is caught here rather than served.
                return self.check(f);
            }
            Origin::Dir { .. } => match self.cached() {
                Some(f) => f,
                None => {
                    let fd = self
                        .tree
                        .dir(self.dir)
                        .and_then(|d| open_file(&*d, &self.name, &self.stamp))
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
        let what = match &self.tree.origin {
            Origin::Spool(s) => format!("{}, holding {}", s.name, self.path()),
            Origin::Dir { .. } => self.path(),
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
    use crate::source::{scan, Entry, Kind};
    use std::os::unix::fs::FileExt;

    /// Scans `dir` and makes the LiveFile of every regular file, registering directories as
    /// populating does: (path below the root, file).
    fn served(dir: &std::path::Path) -> (Arc<LiveTree>, Vec<(String, LiveFile)>) {
        let tree = scan(dir, Default::default(), &mut || {}).unwrap();
        let live = LiveTree::of(&tree, dir.as_os_str().as_encoded_bytes()).unwrap();
        let mut files = Vec::new();
        fn walk(
            live: &Arc<LiveTree>,
            d: &Entry,
            id: DirId,
            rel: &str,
            out: &mut Vec<(String, LiveFile)>,
        ) {
            for c in d.children() {
                let rel = format!("{rel}/{}", String::from_utf8_lossy(&c.name));
                match &c.kind {
                    Kind::Dir { .. } => {
                        let sub = live.add_dir(id, &c.name, (c.meta.dev, c.meta.ino));
                        walk(live, c, sub, &rel, out);
                    }
                    Kind::File { size, .. } => {
                        let stamp = Stamp::of_entry(&c.meta, *size);
                        let n = out.len();
                        out.push((rel, live.file(id, &c.name, stamp, 0, n)));
                    }
                    _ => {}
                }
            }
        }
        walk(&live, &tree.root, ROOT, "", &mut files);
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
