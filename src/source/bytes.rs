//! Reading a tree back while it is used: the source root's directory descriptor, and a regular
//! file's bytes — opened by name in its directory (checked to still be the file scanned) or found
//! in the tree's spool file. Populating and the reproducible-build digest both read through here.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{Mode, OFlags};

use super::{display, open_child_file, Data, Entry, Tree};
use crate::source::Timestamp;

/// The source root's directory, or None when the tree came from an archive (its spool holds
/// every file's bytes).
pub fn open_root(tree: &Tree, source: &Path) -> Result<Option<OwnedFd>> {
    if tree.spool.is_some() {
        return Ok(None);
    }
    let fd = rustix::fs::open(
        source,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| source.display().to_string())?;
    Ok(Some(fd))
}

/// Where a regular file's bytes are read: a descriptor, and the offset of the file's byte 0 in
/// it.
pub enum FileBytes<'a> {
    Opened(File),
    Spool(&'a File, u64),
}

impl FileBytes<'_> {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file().as_fd()
    }

    /// The file the bytes are in.
    pub fn file(&self) -> &File {
        match self {
            FileBytes::Opened(f) => f,
            FileBytes::Spool(f, _) => f,
        }
    }

    pub fn base(&self) -> u64 {
        match self {
            FileBytes::Opened(_) => 0,
            FileBytes::Spool(_, offset) => *offset,
        }
    }
}

/// The bytes of regular file `e` (`data` and `size` from its kind): opened by name in `dir` for
/// a directory source — refused if it is no longer the file scanned (another inode or size) —
/// or at its offset in `spool`.
pub fn file_bytes<'a>(
    e: &Entry,
    data: Data,
    size: u64,
    dir: Option<&OwnedFd>,
    spool: Option<&'a File>,
    path: &[u8],
) -> Result<FileBytes<'a>> {
    match data {
        Data::InTree => {
            let dir = dir
                .with_context(|| format!("{}: no source directory to read from", display(path)))?;
            let f = open_child_file(dir, &e.name, path)?;
            unchanged(&f, e, size, path)?;
            Ok(FileBytes::Opened(File::from(f)))
        }
        Data::Spool { offset } => {
            let spool = spool.with_context(|| format!("{}: no spool file", display(path)))?;
            Ok(FileBytes::Spool(spool, offset))
        }
    }
}

/// Checks that `fd` is still regular file `e` as scanned: same inode, size, modification and
/// change time (a rewrite of the same size changes the times; a rename over it, the inode).
pub fn unchanged(fd: impl AsFd, e: &Entry, size: u64, path: &[u8]) -> Result<()> {
    let st = rustix::fs::fstat(fd).with_context(|| display(path))?;
    let m = &e.meta;
    match what_changed(&st, m.ino, size, m.mtime, Some(m.ctime)) {
        None => Ok(()),
        Some(why) => bail!(
            "{}: changed during the build ({why}); nothing was written",
            display(path)
        ),
    }
}

/// How `st` differs from a regular file seen with inode `ino`, `size` bytes, modification time
/// `mtime` and (when given) change time `ctime`; None when it does not.
pub fn what_changed(
    st: &rustix::fs::Stat,
    ino: u64,
    size: u64,
    mtime: Timestamp,
    ctime: Option<Timestamp>,
) -> Option<String> {
    let same = |sec: i64, nsec: u64, t: Timestamp| (sec, nsec as u32) == (t.sec, t.nsec);
    if st.st_ino != ino {
        Some("it was replaced by another file".to_string())
    } else if st.st_size as u64 != size {
        Some(format!("it was {size} bytes, now {}", st.st_size))
    } else if !same(st.st_mtime, st.st_mtime_nsec, mtime)
        || ctime.is_some_and(|c| !same(st.st_ctime, st.st_ctime_nsec, c))
    {
        Some("it was modified".to_string())
    } else {
        None
    }
}
