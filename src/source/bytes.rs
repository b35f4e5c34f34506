//! Reading a tree back while it is used: a regular file's bytes — opened in its scanned
//! directory (see [`super::open`]: only the file scanned, unchanged) or found in the tree's
//! [`Spool`] (checked to be the spool as it was read) — and the check, after reading, that they
//! did not change meanwhile. Populating and the reproducible-build digest both read through here.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::{bail, Context, Result};

use super::open::{open_dir, open_file, stat, Refused, Stamp};
use super::{display, Data, Entry};

/// The file an archive's regular files are read from (the archive itself, or a spool file their
/// bytes were copied into), with what it was once read: a spool changed since (an archive
/// rewritten in place) gives errors, never other bytes.
#[derive(Debug)]
pub struct Spool {
    pub file: File,
    pub stamp: Stamp,
    /// How messages name it: the archive, or the spool file of an archive.
    pub name: String,
}

impl Spool {
    /// `file`, as it is now.
    pub fn new(file: File, name: String) -> std::io::Result<Spool> {
        let stamp = Stamp::of(&stat(&file)?);
        Ok(Spool { file, stamp, name })
    }

    /// How the file differs from when it was read; None when it does not.
    pub fn what_changed(&self) -> Option<String> {
        match stat(&self.file) {
            Ok(st) => self.stamp.what_changed(&Stamp::of(&st)),
            Err(e) => Some(std::io::Error::from(e).to_string()),
        }
    }
}

impl std::ops::Deref for Spool {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}

/// Where a regular file's bytes are read: a descriptor, and the offset of the file's byte 0 in
/// it.
pub enum FileBytes<'a> {
    Opened(OwnedFd, Stamp),
    Spool(&'a Spool, u64),
}

impl FileBytes<'_> {
    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            FileBytes::Opened(f, _) => f.as_fd(),
            FileBytes::Spool(s, _) => s.file.as_fd(),
        }
    }

    pub fn base(&self) -> u64 {
        match self {
            FileBytes::Opened(..) => 0,
            FileBytes::Spool(_, offset) => *offset,
        }
    }

    /// After reading: fails unless the bytes read are still those scanned (file `path`, or the
    /// spool, unchanged).
    pub fn check(&self, path: &[u8]) -> Result<()> {
        let why = match self {
            FileBytes::Opened(f, want) => {
                let st = stat(f).with_context(|| display(path))?;
                want.what_changed(&Stamp::of(&st))
                    .map(|why| format!("{}: changed during the build ({why})", display(path)))
            }
            FileBytes::Spool(s, _) => s
                .what_changed()
                .map(|why| format!("{}: changed during the build ({why})", s.name)),
        };
        match why {
            Some(why) => bail!("{why}; nothing was written"),
            None => Ok(()),
        }
    }
}

/// The bytes of regular file `e` (`data` and `size` from its kind): opened by name in `dir` for
/// a directory source — refused if it is no longer the file scanned — or at its offset in
/// `spool`.
pub fn file_bytes<'a>(
    e: &Entry,
    data: Data,
    size: u64,
    dir: Option<&OwnedFd>,
    spool: Option<&'a Spool>,
    path: &[u8],
) -> Result<FileBytes<'a>> {
    match data {
        Data::InTree => {
            let dir = dir
                .with_context(|| format!("{}: no source directory to read from", display(path)))?;
            let stamp = Stamp::of_entry(&e.meta, size);
            let f = open_file(dir, &e.name, &stamp).map_err(|r| refused(path, r))?;
            Ok(FileBytes::Opened(f, stamp))
        }
        Data::Spool { offset } => {
            let spool = spool.with_context(|| format!("{}: no spool file", display(path)))?;
            if let Some(why) = spool.what_changed() {
                bail!(
                    "{}: changed during the build ({why}); nothing was written",
                    spool.name
                );
            }
            Ok(FileBytes::Spool(spool, offset))
        }
    }
}

/// Opens directory `d` (an entry of the tree) in its parent `dir`, refused unless it is the
/// directory scanned.
pub fn dir_of(dir: &OwnedFd, d: &Entry, path: &[u8]) -> Result<OwnedFd> {
    open_dir(dir, &d.name, (d.meta.dev, d.meta.ino)).map_err(|r| refused(path, r))
}

/// The error for entry `path` that could not be opened again during the build.
pub fn refused(path: &[u8], r: Refused) -> anyhow::Error {
    match r {
        Refused::Os(e) => anyhow::anyhow!("{}: {}", display(path), std::io::Error::from(e)),
        Refused::Changed(why) => anyhow::anyhow!(
            "{}: changed during the build ({why}); nothing was written",
            display(path)
        ),
    }
}
