//! Source files read while serving (`--serve --lazy`): the disk's file-data regions are answered
//! from the files in the tree rather than from a copy. Each read reopens the file by name from
//! the source root when its descriptor is not cached, and checks it is still the file scanned —
//! same inode, size and mtime — so a file changed since the build gives an I/O error naming it,
//! never wrong bytes.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{Mode, OFlags};

use super::bytes::what_changed;
use super::{display, open_child_dir, open_child_file, Meta};
use crate::source::Timestamp;

/// Most source files kept open at once; others are reopened by name when read.
const OPEN_FILES: usize = 256;

/// The source tree's root and a small cache of open file descriptors, shared by its files.
pub struct LiveTree {
    root: OwnedFd,
    /// The root's path as given, for messages.
    root_name: Vec<u8>,
    open: Mutex<VecDeque<(usize, Arc<std::fs::File>)>>,
}

impl LiveTree {
    /// Opens the source root.
    pub fn open(root: &Path) -> anyhow::Result<Arc<LiveTree>> {
        use anyhow::Context;
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| root.display().to_string())?;
        Ok(Arc::new(LiveTree {
            root: fd,
            root_name: root.as_os_str().as_encoded_bytes().to_vec(),
            open: Mutex::new(VecDeque::new()),
        }))
    }

    /// A file of the tree at `rel` (path bytes below the root, `/`-separated) as it was scanned.
    pub fn file(self: &Arc<Self>, rel: &[u8], meta: &Meta, size: u64, id: usize) -> LiveFile {
        LiveFile {
            tree: self.clone(),
            rel: rel.into(),
            ino: meta.ino,
            size,
            mtime: meta.mtime,
            id,
            warned: AtomicBool::new(false),
        }
    }

    fn cached(&self, id: usize) -> Option<Arc<std::fs::File>> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter().find(|(i, _)| *i == id).map(|(_, f)| f.clone())
    }

    fn remember(&self, id: usize, f: Arc<std::fs::File>) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= OPEN_FILES {
            open.pop_front();
        }
        open.push_back((id, f));
    }
}

/// One regular file of a served tree, identified as it was when the disk was built.
pub struct LiveFile {
    tree: Arc<LiveTree>,
    rel: Box<[u8]>,
    ino: u64,
    size: u64,
    mtime: Timestamp,
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
    /// The file's path as the user named it, for messages.
    pub fn path(&self) -> String {
        let mut p = self.tree.root_name.clone();
        if !self.rel.starts_with(b"/") {
            p.push(b'/');
        }
        p.extend_from_slice(&self.rel);
        display(&p)
    }

    /// Fills `buf` with the file's bytes at `offset` (the range must lie within the size
    /// scanned). Fails with an I/O error when the file is gone or no longer the one scanned.
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
        let file = match self.tree.cached(self.id) {
            Some(f) => f,
            None => {
                let f = Arc::new(std::fs::File::from(self.reopen()?));
                self.tree.remember(self.id, f.clone());
                f
            }
        };
        self.check(&file)?;
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => return Err(self.changed("it is shorter than when the disk was built")),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", self.path()))),
            }
        }
        // A change racing with the read is caught here rather than served.
        self.check(&file)
    }

    /// Opens the file again by walking its path from the root without following symlinks.
    fn reopen(&self) -> io::Result<OwnedFd> {
        let fail = |e: anyhow::Error| self.changed(&format!("{e:#}"));
        let mut parts = self.rel.split(|&b| b == b'/').filter(|p| !p.is_empty());
        let name = parts.next_back().unwrap_or_default();
        let mut dir: Option<OwnedFd> = None;
        for part in parts {
            let parent = dir.as_ref().unwrap_or(&self.tree.root);
            dir = Some(open_child_dir(parent, part, &self.rel).map_err(fail)?);
        }
        open_child_file(dir.as_ref().unwrap_or(&self.tree.root), name, &self.rel).map_err(fail)
    }

    /// The descriptor still names the file scanned: same inode, size and modification time.
    fn check(&self, file: &std::fs::File) -> io::Result<()> {
        let st = rustix::fs::fstat(file).map_err(io::Error::from)?;
        match what_changed(&st, self.ino, self.size, self.mtime, None) {
            None => Ok(()),
            Some(why) => Err(self.changed(&why)),
        }
    }

    fn changed(&self, why: &str) -> io::Error {
        io::Error::other(format!(
            "{}: changed since the disk was built ({why}); files must not change while served with --lazy",
            self.path()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Timestamp;

    fn meta_of(path: &Path) -> (Meta, u64) {
        let st = rustix::fs::stat(path).unwrap();
        let t = Timestamp {
            sec: st.st_mtime,
            nsec: st.st_mtime_nsec as u32,
        };
        let meta = Meta::at(t, 0o644, st.st_dev, st.st_ino);
        (meta, st.st_size as u64)
    }

    #[test]
    fn reads_through_subdirectories_and_refuses_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let p = dir.path().join("a/b/f");
        std::fs::write(&p, b"0123456789").unwrap();
        let (meta, size) = meta_of(&p);
        let tree = LiveTree::open(dir.path()).unwrap();
        let f = tree.file(b"a/b/f", &meta, size, 0);
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
        // Replaced by rename: the cache is bypassed for a new LiveFile id, and the inode differs.
        let q = dir.path().join("new");
        std::fs::write(&q, b"0123456789").unwrap();
        std::fs::rename(&q, &p).unwrap();
        let g = tree.file(b"a/b/f", &meta, size, 1);
        let e = g.read_at(&mut buf, 0).unwrap_err().to_string();
        assert!(e.contains("replaced"), "{e}");
        // Gone.
        std::fs::remove_file(&p).unwrap();
        let h = tree.file(b"a/b/f", &meta, size, 2);
        assert!(h.read_at(&mut buf, 0).is_err());
    }

    #[test]
    fn a_symlinked_directory_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("real/f"), b"data").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        let (meta, size) = meta_of(&dir.path().join("real/f"));
        let tree = LiveTree::open(dir.path()).unwrap();
        let mut buf = [0u8; 4];
        tree.file(b"real/f", &meta, size, 0)
            .read_at(&mut buf, 0)
            .unwrap();
        assert!(tree
            .file(b"link/f", &meta, size, 1)
            .read_at(&mut buf, 0)
            .is_err());
    }
}
