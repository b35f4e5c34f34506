//! Reading a tree back while it is used: a regular file's bytes — opened by name in its source's
//! directory (checked to still be the file scanned) or found in its source's spool file.
//! Populating and the reproducible-build digest both read through here.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{bail, Context, Result};

use super::dirs::{host_name, Dirs};
use super::{display, open_child_file, Data, Entry, Origin};
use crate::source::Timestamp;

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

/// The bytes of regular file `e` at `rel` in the tree (`data` and `size` from its kind): opened
/// by name in its source's directory among `dirs` — refused if it is no longer the file scanned
/// (another inode or size) — or at its offset in its source's spool.
pub fn file_bytes<'a>(
    e: &Entry,
    data: Data,
    size: u64,
    dirs: &Dirs,
    origins: &'a [Origin],
    rel: &[u8],
) -> Result<FileBytes<'a>> {
    let origin = origins
        .get(data.src() as usize)
        .with_context(|| format!("{}: no such source", display(rel)))?;
    match data {
        Data::InTree { src } => {
            let path = origin.show(rel);
            let dir = dirs.get(src).with_context(|| {
                format!(
                    "{path}: changed during the build (its directory is gone); nothing was written"
                )
            })?;
            let f = open_child_file(dir, host_name(origin, &e.name), path.as_bytes())?;
            unchanged(&f, e, size, path.as_bytes())?;
            Ok(FileBytes::Opened(File::from(f)))
        }
        Data::Spool { offset, .. } => match origin {
            Origin::Spool { file, .. } => Ok(FileBytes::Spool(file, offset)),
            _ => bail!("{}: no spool file", origin.show(rel)),
        },
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
