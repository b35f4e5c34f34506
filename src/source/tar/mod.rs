//! Tar archives as a source: a file or stdin, plain or gzip/xz/bzip2/zstd-compressed (told by
//! the bytes), GNU and PAX formats, read once into a [`Tree`] whose files' bytes are
//! [`Data::Spool`](super::Data::Spool) ranges of one file: the archive itself when it is an uncompressed file (no
//! copy), else an unlinked spool file in TMPDIR that they are copied into while reading.
//!
//! Modules, one job each: [`decompress`] (detect and decode), [`header`] (a 512-byte block),
//! [`pax`] (extended records), [`sparse`] (GNU sparse maps), [`acl`] (ACL text to xattr),
//! [`member`] (one member's metadata), [`stream`] (members and their data), [`path`] (path
//! rules), [`tree`] (tar extraction semantics into a tree), [`names`] (finding a child by name
//! while the tree is built).
//!
//! Hand-written rather than the `tar` crate: that crate does not read PAX sparse format 1.0
//! (`GNU.sparse.major=1`, what GNU tar writes for sparse files with `--format=pax`), and the
//! tree builder needs members one at a time with their data spooled, never extracted to disk.

pub mod acl;
pub mod decompress;
pub mod header;
pub mod member;
pub mod names;
pub mod path;
pub mod pax;
pub mod sparse;
pub mod stream;
pub mod tree;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

use std::fs::File;
use std::io::{Read, Seek};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use self::decompress::{detect, Compression};
use self::stream::{NeedSpool, Reader};
use super::{Spool, Tree};

/// Where the archive comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveInput {
    Path(PathBuf),
    Stdin,
}

impl ArchiveInput {
    /// How errors name the archive.
    pub fn name(&self) -> String {
        match self {
            ArchiveInput::Path(p) => p.display().to_string(),
            ArchiveInput::Stdin => "stdin".to_string(),
        }
    }
}

/// Reads a whole tar archive (plain, gzip, xz, bzip2 or zstd, detected from the first bytes)
/// into a Tree whose files' data is [`Data::Spool`](super::Data::Spool) in `tree.spool`. `tmpdir` holds the spool
/// (an unlinked temp file) unless the archive is an uncompressed file without sparse members.
/// `on_entry` is called once per archive member. Errors are one line: `ARCHIVE: entry 'NAME':
/// cause` (or `ARCHIVE: cause`).
pub fn read_archive(
    input: ArchiveInput,
    tmpdir: &Path,
    on_entry: &mut dyn FnMut(),
) -> Result<Tree> {
    let name = input.name();
    read(input, &name, tmpdir, on_entry).map_err(|e| anyhow::anyhow!("{name}: {e:#}"))
}

fn read(
    input: ArchiveInput,
    name: &str,
    tmpdir: &Path,
    on_entry: &mut dyn FnMut(),
) -> Result<Tree> {
    let mut file = match input {
        // A file redirected to stdin is read like a named one (in place when uncompressed).
        ArchiveInput::Stdin => File::from(rustix::io::dup(std::io::stdin())?),
        ArchiveInput::Path(p) => File::open(&p).map_err(anyhow::Error::new)?,
    };
    let meta = file.metadata()?;
    if meta.is_dir() {
        anyhow::bail!("is a directory, not an archive");
    }
    if !meta.is_file() || file.stream_position()? != 0 {
        return spooled(Box::new(file), name, tmpdir, 0, on_entry);
    }
    let mut magic = Vec::new();
    (&mut file)
        .take(decompress::MAGIC_LEN as u64)
        .read_to_end(&mut magic)?;
    file.rewind()?;
    if detect(&magic)? != Compression::None {
        return spooled(Box::new(file), name, tmpdir, 0, on_entry);
    }
    let mut seen = 0u64;
    let mut count = || {
        seen += 1;
        on_entry();
    };
    // Read in place, the archive is the spool: as it was before reading, or an error.
    let before = Spool::new(file.try_clone()?, name.to_string())?;
    match collect(Reader::in_place(file.try_clone()?)?, name, &mut count) {
        Err(e) if e.chain().any(|c| c.is::<NeedSpool>()) => {
            file.rewind()?;
            spooled(Box::new(file), name, tmpdir, seen, on_entry)
        }
        Ok(tree) => match before.what_changed() {
            Some(why) => anyhow::bail!("changed while it was read ({why})"),
            None => Ok(tree),
        },
        r => r,
    }
}

/// Reads `r` (decompressing it) into a new spool file in `tmpdir`. The first `quiet` members
/// were already reported to `on_entry` (by an in-place pass that gave up).
fn spooled(
    r: Box<dyn Read>,
    name: &str,
    tmpdir: &Path,
    quiet: u64,
    on_entry: &mut dyn FnMut(),
) -> Result<Tree> {
    let (magic, r) = decompress::peek(r).context("reading the archive")?;
    let c = detect(&magic)?;
    let r =
        decompress::decoder(c, r).with_context(|| format!("starting the {} decoder", c.name()))?;
    let spool = tempfile::tempfile_in(tmpdir)
        .with_context(|| format!("{}: creating the spool file", tmpdir.display()))?;
    let mut n = 0u64;
    let mut count = || {
        n += 1;
        if n > quiet {
            on_entry();
        }
    };
    let spool_name = format!("the spool file of {name} in {}", tmpdir.display());
    collect(
        Reader::spooled(r, spool, tmpdir.to_path_buf()),
        &spool_name,
        &mut count,
    )
}

/// Reads every member into the tree; `name` names the file its bytes end up in (the spool).
fn collect(mut r: Reader, name: &str, on_entry: &mut dyn FnMut()) -> Result<Tree> {
    let mut b = tree::Builder::default();
    while let Some(m) = r.next_member()? {
        b.add(m)?;
        on_entry();
    }
    let file = r.finish()?;
    let built = b.finish();
    let spool = Spool::new(file, name.to_string()).context("statx of the spool")?;
    Ok(Tree {
        root: built.root,
        dir: None,
        spool: Some(Arc::new(spool)),
        entries: built.entries,
        data_bytes: built.data_bytes,
    })
}
