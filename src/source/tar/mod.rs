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
pub use self::stream::Options;
use self::stream::{NeedSpool, Reader};
use super::{Origin, Spool, Tree};

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
/// into a Tree whose files' data is [`Data::Spool`](super::Data::Spool) in its one origin.
/// `tmpdir` holds the spool (an unlinked temp file) unless the archive is an uncompressed file
/// without sparse members. `on_entry` is called once per archive member. Errors are one line:
/// `ARCHIVE: entry 'NAME': cause` (or `ARCHIVE: cause`).
pub fn read_archive(
    input: ArchiveInput,
    tmpdir: &Path,
    opts: Options,
    on_entry: &mut dyn FnMut(),
) -> Result<Tree> {
    let name = input.name();
    read(input, tmpdir, opts, on_entry).map_err(|e| anyhow::anyhow!("{name}: {e:#}"))
}

fn read(
    input: ArchiveInput,
    tmpdir: &Path,
    opts: Options,
    on_entry: &mut dyn FnMut(),
) -> Result<Tree> {
    let name = input.name();
    let mut file = match input {
        // A file redirected to stdin is read like a named one (in place when uncompressed).
        ArchiveInput::Stdin => File::from(rustix::io::dup(std::io::stdin())?),
        ArchiveInput::Path(p) => File::open(&p).map_err(anyhow::Error::new)?,
    };
    let meta = file.metadata()?;
    if meta.is_dir() {
        anyhow::bail!("is a directory, not an archive");
    }
    // Its files' bytes are in the spool: checked later against what it is once read.
    let tree = |(root, spool): (tree::Built, Spool)| {
        Tree::new(
            root.root,
            Origin::Spool(Arc::new(spool)),
            root.entries,
            root.data_bytes,
        )
    };
    let via_spool = |file: File, seen, on_entry: &mut dyn FnMut()| {
        let (built, spool) = spooled(Box::new(file), tmpdir, opts, seen, on_entry)?;
        let spool = Spool::new(spool, name.clone(), true).context("statx of the spool")?;
        Ok(tree((built, spool)))
    };
    if !meta.is_file() || file.stream_position()? != 0 {
        return via_spool(file, 0, on_entry);
    }
    let mut magic = Vec::new();
    (&mut file)
        .take(decompress::MAGIC_LEN as u64)
        .read_to_end(&mut magic)?;
    file.rewind()?;
    if detect(&magic)? != Compression::None {
        return via_spool(file, 0, on_entry);
    }
    let mut seen = 0u64;
    let mut count = || {
        seen += 1;
        on_entry();
    };
    let mut b = tree::Builder::default();
    // Read in place, the archive is the spool: as it was before reading, or an error.
    let before = Spool::new(file.try_clone()?, name.clone(), false)?;
    match collect(
        Reader::in_place(file.try_clone()?, opts)?,
        &mut b,
        &mut count,
    ) {
        Err(e) if e.chain().any(|c| c.is::<NeedSpool>()) => {
            file.rewind()?;
            via_spool(file, seen, on_entry)
        }
        Err(e) => Err(e),
        Ok(_) => match before.what_changed() {
            Some(why) => anyhow::bail!("changed while it was read ({why})"),
            None => Ok(tree((b.finish(), before))),
        },
    }
}

/// Reads `r` (decompressing it) into a new spool file in `tmpdir`. The first `quiet` members
/// were already reported to `on_entry` (by an in-place pass that gave up).
fn spooled(
    r: Box<dyn Read>,
    tmpdir: &Path,
    opts: Options,
    quiet: u64,
    on_entry: &mut dyn FnMut(),
) -> Result<(tree::Built, File)> {
    let spool = tempfile::tempfile_in(tmpdir)
        .with_context(|| format!("{}: creating the spool file", tmpdir.display()))?;
    let mut n = 0u64;
    let mut count = || {
        n += 1;
        if n > quiet {
            on_entry();
        }
    };
    let mut b = tree::Builder::default();
    let r = decoded(r)?;
    let (spool, _) = collect(
        Reader::spooled(r, spool, tmpdir.to_path_buf(), 0, opts),
        &mut b,
        &mut count,
    )?;
    Ok((b.finish(), spool))
}

/// Whether the file at `path` holds a tar archive, plain or compressed: its first 512 bytes
/// (decompressed) are a valid tar header.
pub fn is_archive(path: &Path) -> bool {
    let first = || -> Result<bool> {
        let mut r = decoded(Box::new(File::open(path)?))?;
        let mut block = [0u8; header::BLOCK];
        r.read_exact(&mut block)?;
        Ok(header::Header::parse(&block).is_ok())
    };
    first().unwrap_or(false)
}

/// `r` decompressed as its first bytes say (or as it is).
pub fn decoded(r: Box<dyn Read>) -> Result<Box<dyn Read>> {
    let (magic, r) = decompress::peek(r).context("reading the archive")?;
    let c = detect(&magic)?;
    decompress::decoder(c, r).with_context(|| format!("starting the {} decoder", c.name()))
}

/// Reads every member into `b`; the file the data is in and where its used part ends.
fn collect(
    mut r: Reader,
    b: &mut tree::Builder,
    on_entry: &mut dyn FnMut(),
) -> Result<(File, u64)> {
    while let Some(m) = r.next_member()? {
        b.add(m)?;
        on_entry();
    }
    r.finish()
}

/// The layers of a container image, read one after the other into one tree (with the OCI
/// whiteouts) whose file data is in one spool file.
pub struct Layers {
    builder: tree::Builder,
    spool: File,
    dir: PathBuf,
    end: u64,
    opts: Options,
}

impl Layers {
    /// An empty tree, its spool made in `tmpdir`.
    pub fn new(tmpdir: &Path, opts: Options) -> Result<Layers> {
        let spool = tempfile::tempfile_in(tmpdir)
            .with_context(|| format!("{}: creating the spool file", tmpdir.display()))?;
        Ok(Layers {
            builder: tree::Builder::layered(),
            spool,
            dir: tmpdir.to_path_buf(),
            end: 0,
            opts,
        })
    }

    /// Applies the next layer, the tar stream `r` (decompressed already), over the tree.
    pub fn add(&mut self, r: Box<dyn Read>, on_entry: &mut dyn FnMut()) -> Result<()> {
        self.builder.next_layer();
        let spool = self.spool.try_clone().context("the spool file")?;
        let reader = Reader::spooled(r, spool, self.dir.clone(), self.end, self.opts);
        let (_, end) = collect(reader, &mut self.builder, on_entry)?;
        self.end = end;
        Ok(())
    }

    /// The tree of all layers, its data in the spool (named `name` in messages), checked
    /// later against what it is now.
    pub fn finish(self, name: String) -> Result<Tree> {
        let built = self.builder.finish();
        let spool = Spool::new(self.spool, name, true).context("statx of the spool")?;
        Ok(Tree::new(
            built.root,
            Origin::Spool(Arc::new(spool)),
            built.entries,
            built.data_bytes,
        ))
    }
}
