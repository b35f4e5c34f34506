//! Reading a tree back while it is used: a regular file's bytes — opened in its source's
//! directory as the walk reached it (see [`super::dirs`] and [`super::open`]: only the file
//! scanned, unchanged) or found in its source's [`Spool`] (checked to be the spool as it was
//! read) — and the check, after reading, that they did not change meanwhile. Populating, the
//! reproducible-build digest and the EFI system partition all read through here.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{bail, Context, Result};

use super::dirs::{host_name, Dirs};
use super::open::{open_file, stat, Refused, Stamp};
use super::{display, Data, Entry, Origin};

/// The file an archive's regular files are read from (the archive itself, or a spool file their
/// bytes were copied into), with what it was once read: a spool changed since (an archive
/// rewritten in place) gives errors, never other bytes.
#[derive(Debug)]
pub struct Spool {
    pub file: File,
    pub stamp: Stamp,
    /// The archive (or image), for messages.
    pub name: String,
    /// Whether `file` is a copy of it (in TMPDIR) rather than the archive itself.
    pub copy: bool,
}

impl Spool {
    /// `file`, as it is now: the archive `name` itself, or (`copy`) a spool file of it.
    pub fn new(file: File, name: String, copy: bool) -> std::io::Result<Spool> {
        let stamp = Stamp::of(&stat(&file)?);
        Ok(Spool {
            file,
            stamp,
            name,
            copy,
        })
    }

    /// The file, in words: the archive, or the spool file of one.
    pub fn what(&self) -> String {
        match self.copy {
            true => format!("the spool file of {}", self.name),
            false => self.name.clone(),
        }
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
    /// A file of a directory source, as scanned (`stamp`), named `shown` in messages.
    Opened {
        file: File,
        stamp: Stamp,
        shown: String,
    },
    Spool(&'a Spool, u64),
}

impl FileBytes<'_> {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file().as_fd()
    }

    /// The file the bytes are in.
    pub fn file(&self) -> &File {
        match self {
            FileBytes::Opened { file, .. } => file,
            FileBytes::Spool(s, _) => &s.file,
        }
    }

    pub fn base(&self) -> u64 {
        match self {
            FileBytes::Opened { .. } => 0,
            FileBytes::Spool(_, offset) => *offset,
        }
    }

    /// After reading: fails unless the bytes read are still those scanned (the file, or the
    /// spool, unchanged).
    pub fn check(&self) -> Result<()> {
        let why = match self {
            FileBytes::Opened { file, stamp, shown } => {
                let st = stat(file).with_context(|| shown.clone())?;
                stamp
                    .what_changed(&Stamp::of(&st))
                    .map(|why| format!("{shown}: changed during the build ({why})"))
            }
            FileBytes::Spool(s, _) => s
                .what_changed()
                .map(|why| format!("{}: changed during the build ({why})", s.what())),
        };
        match why {
            Some(why) => bail!("{why}; nothing was written"),
            None => Ok(()),
        }
    }
}

/// The bytes of regular file `e` at `rel` in the tree (`data` and `size` from its kind): opened
/// by name in its source's directory among `dirs` — refused if it is no longer the file scanned
/// — or at its offset in its source's spool (refused if the spool changed).
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
    match (data, origin) {
        (Data::InTree { src }, _) => {
            let shown = origin.show(rel);
            let dir = dirs.get(src).with_context(|| {
                format!("{shown}: changed during the build (its directory is gone); nothing was written")
            })?;
            let stamp = Stamp::of_entry(&e.meta, size);
            let f = open_file(dir, host_name(origin, &e.name), &stamp)
                .map_err(|r| refused(&shown, r))?;
            Ok(FileBytes::Opened {
                file: File::from(f),
                stamp,
                shown,
            })
        }
        (Data::Spool { offset, .. }, Origin::Spool(spool)) => {
            if let Some(why) = spool.what_changed() {
                bail!(
                    "{}: changed during the build ({why}); nothing was written",
                    spool.what()
                );
            }
            Ok(FileBytes::Spool(spool, offset))
        }
        _ => bail!("{}: no spool file", origin.show(rel)),
    }
}

/// The error for entry `shown` that could not be opened again during the build.
pub fn refused(shown: &str, r: Refused) -> anyhow::Error {
    match r {
        Refused::Os(e) => anyhow::anyhow!("{shown}: {}", std::io::Error::from(e)),
        Refused::Changed(why) => {
            anyhow::anyhow!("{shown}: changed during the build ({why}); nothing was written")
        }
    }
}
