//! Populating: every entry of the scanned tree becomes an inode, created once (hard links share
//! it), with its data blocks allocated as extents (or block maps) and its bytes copied straight
//! from the source file into those blocks in large runs; each directory's blocks are written in
//! one pass once its children exist. Inode numbers are kept, never looked up again by name.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ext2fs::{
    DirHash, FileType, Filesystem, IncompatFeatures, Ino, Inode, InodeFlags, RoCompatFeatures, Run,
    ROOT_INO,
};

use super::dirent::DirPacker;
use super::htree::{indexed_blocks, Child, IndexParams};
use super::layout::block_ranges;
use super::limits::{fit_time, time_range};
use super::plan::{lost_found_blocks, LINK_MAX};
use crate::copy::RangeCopier;
use crate::progress::Progress;
use crate::source::bytes::{dir_of, file_bytes};
use crate::source::live::{DirId, LiveFile, LiveTree, ROOT};
use crate::source::open::Stamp;
use crate::source::readahead::Position;
use crate::source::{display, Data, Entry, Kind, Layout, Meta, Spool, Timestamp};

pub struct Populator<'a> {
    pub fs: &'a mut Filesystem,
    /// The file the filesystem lives in, at byte `image_offset`: file data is written to it
    /// directly.
    pub image: &'a File,
    pub image_offset: u64,
    /// Its name, for messages.
    pub image_name: &'a std::path::Path,
    pub lost_found: Ino,
    pub link_counts: &'a HashMap<(u64, u64), u32>,
    pub progress: &'a Progress,
    /// Inodes already made for multiply-linked files, by source identity.
    pub linked: HashMap<(u64, u64), Ino>,
    pub copier: RangeCopier,
    /// The tree's spool file, for files whose data is [`Data::Spool`].
    pub spool: Option<&'a Spool>,
    /// `--owner`: every entry's owner.
    pub owner: Option<(u32, u32)>,
    /// Name hashing for htree directories; None without the dir_index feature.
    pub hash: Option<DirHash>,
    /// SOURCE_DATE_EPOCH: see [`super::Options::clamp_time`].
    pub clamp_time: Option<i64>,
    /// `--lazy`: file data is not copied but recorded here, to be read when served.
    pub lazy: Option<Lazy>,
    /// Told of each regular-file entry reached, for reading ahead.
    pub position: Option<&'a Position>,
}

/// Where a lazily served piece of file data is read from: a file of the source (or the
/// archive's spool), from byte `offset`, checked on every read.
#[derive(Clone)]
pub enum LazyData {
    Live { file: Arc<LiveFile>, offset: u64 },
}

impl LazyData {
    /// The same data, `by` bytes further on.
    fn advanced(&self, by: u64) -> LazyData {
        match self {
            LazyData::Live { file, offset } => LazyData::Live {
                file: file.clone(),
                offset: offset + by,
            },
        }
    }
}

/// `len` bytes of file data at byte `at` of the filesystem, left in the source.
pub struct LazyPart {
    pub at: u64,
    pub len: u64,
    pub data: LazyData,
}

/// File data left in the source (`--serve --lazy`): where each data range of each file lies in
/// the filesystem, and where its bytes are read from.
pub struct Lazy {
    /// The source, as the scan left it.
    pub tree: Arc<LiveTree>,
    /// Length of the source root's path at the start of every entry's path.
    pub root_len: usize,
    /// The directory being populated, then its parent, and so on up to the root.
    dirs: Vec<DirId>,
    /// Where each piece of file data goes and where it is read from, in the order placed.
    pub parts: Vec<LazyPart>,
    files: usize,
}

impl Lazy {
    pub fn new(tree: Arc<LiveTree>, root_len: usize) -> Lazy {
        Lazy {
            tree,
            root_len,
            dirs: Vec::new(),
            parts: Vec::new(),
            files: 0,
        }
    }

    /// Populating enters directory `d` (the root first).
    fn enter(&mut self, d: &Entry) {
        let id = match self.dirs.last() {
            None => ROOT,
            Some(&parent) => self.tree.add_dir(parent, &d.name, (d.meta.dev, d.meta.ino)),
        };
        self.dirs.push(id);
    }

    /// Populating is done with the directory last entered.
    fn leave(&mut self) {
        self.dirs.pop();
    }

    /// Where file `e`'s bytes are read, at its byte 0.
    fn source(
        &mut self,
        e: &Entry,
        data: Data,
        size: u64,
        spool: Option<&Spool>,
        path: &[u8],
    ) -> Result<LazyData> {
        self.files += 1;
        let (dir, name, stamp, offset) = match data {
            Data::InTree => {
                let dir = *self.dirs.last().context("a file outside any directory")?;
                (dir, &*e.name, Stamp::of_entry(&e.meta, size), 0)
            }
            Data::Spool { offset } => {
                let spool = spool.with_context(|| format!("{}: no spool file", display(path)))?;
                (
                    ROOT,
                    &path[self.root_len.min(path.len())..],
                    spool.stamp,
                    offset,
                )
            }
        };
        Ok(LazyData::Live {
            file: Arc::new(self.tree.file(dir, name, stamp, offset, self.files)),
            offset: 0,
        })
    }
}

impl Populator<'_> {
    /// Fills the root directory (inode 2) from `root`, whose directory is open as `fd` (None when
    /// the tree came from an archive).
    pub fn run(&mut self, root: &Entry, fd: Option<&OwnedFd>, path: &mut Vec<u8>) -> Result<()> {
        self.dir(ROOT_INO, ROOT_INO, root, fd, path, true)
    }

    fn block_size(&self) -> u64 {
        self.fs.block_size() as u64
    }

    /// Creates the children of directory `ino`, then writes its blocks and inode.
    fn dir(
        &mut self,
        ino: Ino,
        parent: Ino,
        d: &Entry,
        fd: Option<&OwnedFd>,
        path: &mut Vec<u8>,
        is_root: bool,
    ) -> Result<()> {
        if let Some(lazy) = &mut self.lazy {
            lazy.enter(d);
        }
        let bs = self.fs.block_size();
        let mut kids: Vec<Child> = Vec::with_capacity(d.children().len() + 1);
        let mut subdirs = 0u64;
        let mut has_lost_found = false;
        for c in d.children() {
            let len = path.len();
            path.push(b'/');
            path.extend_from_slice(&c.name);
            let (c_ino, ft) = if is_root && &*c.name == b"lost+found" && c.is_dir() {
                has_lost_found = true;
                let child_fd = child_dir(fd, c, path)?;
                self.dir(self.lost_found, ino, c, child_fd.as_ref(), path, false)?;
                (self.lost_found, FileType::Directory)
            } else {
                self.entry(ino, c, fd, path)?
            };
            path.truncate(len);
            if ft == FileType::Directory {
                subdirs += 1;
            }
            kids.push((&c.name, c_ino, ft));
            self.progress.inc_entries(1);
        }
        if is_root && !has_lost_found {
            kids.push((b"lost+found", self.lost_found, FileType::Directory));
            subdirs += 1;
        }
        let reused = is_root || ino == self.lost_found;
        let links = 2 + subdirs;
        let links = if links < LINK_MAX {
            links as u16
        } else if self
            .fs
            .superblock()
            .ro_compat()
            .contains(RoCompatFeatures::DIR_NLINK)
        {
            1
        } else {
            bail!(
                "{}: {subdirs} subdirectories are more than ext2/ext3 allow ({}); use -t ext4",
                display(path),
                LINK_MAX - 3
            );
        };
        let mut inode = self.new_inode(FileType::Directory, &d.meta, links);
        if reused {
            // Root and lost+found were made by format: give back their blocks first.
            let mut old = self
                .fs
                .read_inode(ino)
                .with_context(|| format!("{}: inode {ino}", display(path)))?;
            self.fs
                .free_all_blocks(ino, &mut old)
                .with_context(|| format!("{}: inode {ino}", display(path)))?;
        }
        let (mut blocks, indexed) = self.dir_blocks(ino, parent, &kids, bs);
        if indexed {
            inode.add_flags(InodeFlags::INDEX);
        }
        self.place(ino, &mut inode, &[(0, blocks.len() as u64)], path)?;
        inode.set_size(blocks.len() as u64 * self.block_size());
        let runs = self
            .fs
            .runs(ino, &inode)
            .with_context(|| format!("{}: inode {ino}", display(path)))?;
        let mut i = 0usize;
        for r in runs {
            for k in 0..r.len {
                self.fs
                    .write_dir_block(r.pblk + k, &mut blocks[i], ino)
                    .with_context(|| format!("{}: writing directory block", display(path)))?;
                i += 1;
            }
        }
        debug_assert_eq!(i, blocks.len());
        if let Some(lazy) = &mut self.lazy {
            lazy.leave();
        }
        self.finish_inode(ino, &mut inode, d, path)
    }

    /// The blocks of directory `ino`: an htree index when it needs more than one block (and the
    /// filesystem has dir_index), else linear blocks; lost+found stays linear, padded to
    /// mke2fs's size. The flag says whether the directory is indexed.
    fn dir_blocks(&self, ino: Ino, parent: Ino, kids: &[Child], bs: u32) -> (Vec<Vec<u8>>, bool) {
        let csum = self
            .fs
            .superblock()
            .ro_compat()
            .contains(RoCompatFeatures::METADATA_CSUM);
        if ino != self.lost_found {
            if let Some(h) = &self.hash {
                let p = IndexParams {
                    block_size: bs,
                    csum,
                    hash_version: h.root_version(),
                };
                if let Some(b) = indexed_blocks(ino, parent, kids, &p, &|n| h.hash(n)) {
                    return (b, true);
                }
            }
        }
        let mut packer = DirPacker::start(bs, csum, true, ino, parent);
        for &(name, i, ft) in kids {
            packer.add(name, i, ft);
        }
        if ino == self.lost_found {
            packer.pad_to(lost_found_blocks(bs));
        }
        (packer.finish(), false)
    }

    /// Creates one non-root entry in directory `parent` (open as `fd`); returns its inode and
    /// directory-entry file type.
    fn entry(
        &mut self,
        parent: Ino,
        e: &Entry,
        fd: Option<&OwnedFd>,
        path: &mut Vec<u8>,
    ) -> Result<(Ino, FileType)> {
        if let (Kind::File { .. }, Some(p)) = (&e.kind, self.position) {
            p.advance();
        }
        let key = (e.meta.dev, e.meta.ino);
        let links = self.link_counts.get(&key).copied().unwrap_or(1);
        if links > 1 {
            if let Some(&ino) = self.linked.get(&key) {
                return Ok((ino, ft_of(&e.kind)));
            }
        }
        let ft = ft_of(&e.kind);
        let ino = match &e.kind {
            Kind::Dir { .. } => {
                let ino = self.alloc_ino(parent, FileType::Directory, path)?;
                let child_fd = child_dir(fd, e, path)?;
                self.dir(ino, parent, e, child_fd.as_ref(), path, false)?;
                ino
            }
            Kind::File { size, layout, data } => {
                let ino = self.alloc_ino(parent, FileType::Regular, path)?;
                let mut inode = self.new_inode(FileType::Regular, &e.meta, links as u16);
                inode.set_size(*size);
                let ranges = block_ranges(*size, layout, self.fs.block_size());
                self.place(ino, &mut inode, &ranges, path)?;
                if !ranges.is_empty() {
                    let runs = self
                        .fs
                        .runs(ino, &inode)
                        .with_context(|| format!("{}: inode {ino}", display(path)))?;
                    self.copy_data(fd, e, *data, *size, layout, &runs, path)?;
                }
                self.finish_inode(ino, &mut inode, e, path)?;
                ino
            }
            Kind::Symlink { target } => {
                let ino = self
                    .fs
                    .symlink(parent, target)
                    .with_context(|| format!("{}: creating symlink", display(path)))?;
                let mut inode = self
                    .fs
                    .read_inode(ino)
                    .with_context(|| format!("{}: inode {ino}", display(path)))?;
                let mut meta_inode = self.new_inode(FileType::Symlink, &e.meta, links as u16);
                // Keep what ext2fs_symlink wrote (size, block map or inline target); take owner,
                // times and permissions from the source.
                meta_inode.copy_mapping_from(&inode);
                inode = meta_inode;
                self.finish_inode(ino, &mut inode, e, path)?;
                ino
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                let ino = self.alloc_ino(parent, ft, path)?;
                let mut inode = self.new_inode(ft, &e.meta, links as u16);
                inode.set_device(*major, *minor);
                self.finish_inode(ino, &mut inode, e, path)?;
                ino
            }
            Kind::Fifo | Kind::Socket => {
                let ino = self.alloc_ino(parent, ft, path)?;
                let mut inode = self.new_inode(ft, &e.meta, links as u16);
                self.finish_inode(ino, &mut inode, e, path)?;
                ino
            }
        };
        if links > 1 {
            self.linked.insert(key, ino);
        }
        Ok((ino, ft))
    }

    fn alloc_ino(&mut self, parent: Ino, ft: FileType, path: &[u8]) -> Result<Ino> {
        self.fs
            .new_inode(parent, ft)
            .with_context(|| format!("{}: allocating an inode", display(path)))
    }

    /// A new in-memory inode of type `ft` with the source's permissions, owner and times.
    fn new_inode(&self, ft: FileType, m: &Meta, links: u16) -> Inode {
        let extra = self.fs.superblock().want_extra_isize();
        let mut inode = Inode::new(ft, m.perm, extra);
        let (uid, gid) = self.owner.unwrap_or((m.uid, m.gid));
        inode.set_owner(uid, gid);
        // Times the inode cannot hold are clamped to what it can (see limits::fit_time).
        let range = time_range(extra > 0);
        let fit = |t: Timestamp| fit_time(t, range).unwrap_or(t).into();
        match self.clamp_time {
            Some(limit) => {
                let t = fit(clamp(m.mtime, limit));
                inode.set_times(t, t, t, t);
            }
            None => inode.set_times(fit(m.atime), fit(m.mtime), fit(m.ctime), fit(m.btime)),
        }
        inode.set_links(links);
        inode
    }

    /// Allocates the logical block `ranges` of a file or directory, front to back.
    fn place(
        &mut self,
        ino: Ino,
        inode: &mut Inode,
        ranges: &[(u64, u64)],
        path: &[u8],
    ) -> Result<()> {
        if self
            .fs
            .superblock()
            .incompat()
            .contains(IncompatFeatures::EXTENTS)
        {
            inode.init_extents();
        }
        for &(lblk, count) in ranges {
            self.fs.allocate(ino, inode, lblk, count).with_context(|| {
                format!(
                    "{}: allocating {count} blocks for inode {ino}",
                    display(path)
                )
            })?;
        }
        Ok(())
    }

    /// Writes the inode, then its extended attributes (which update it on disk).
    fn finish_inode(&mut self, ino: Ino, inode: &mut Inode, e: &Entry, path: &[u8]) -> Result<()> {
        self.fs
            .write_inode(ino, inode)
            .with_context(|| format!("{}: writing inode {ino}", display(path)))?;
        self.fs.set_xattrs(ino, &e.xattrs).with_context(|| {
            format!(
                "{}: writing extended attributes of inode {ino}",
                display(path)
            )
        })
    }

    /// Copies the file's data bytes into its blocks. The file must still be the one scanned
    /// (same identity and size): a file changed since the scan is an error, never a corrupt image.
    #[allow(clippy::too_many_arguments)]
    fn copy_data(
        &mut self,
        dir: Option<&OwnedFd>,
        e: &Entry,
        data: Data,
        size: u64,
        layout: &Layout,
        runs: &[Run],
        path: &[u8],
    ) -> Result<()> {
        let pieces = placed(runs, layout, size, self.block_size());
        if let Some(lazy) = &mut self.lazy {
            let src = lazy.source(e, data, size, self.spool, path)?;
            for (at, from, len) in pieces {
                lazy.parts.push(LazyPart {
                    at,
                    len,
                    data: src.advanced(from),
                });
            }
            return Ok(());
        }
        let bytes = file_bytes(e, data, size, dir, self.spool, path)?;
        let (src, base) = (bytes.fd(), bytes.base());
        for (at, from, len) in pieces {
            let progress = self.progress;
            let n = self
                .copier
                .copy(
                    src,
                    base + from,
                    self.image,
                    self.image_offset + at,
                    len,
                    &mut |n| progress.inc_bytes(n),
                )
                .with_context(|| {
                    format!(
                        "{}: copying into {}",
                        display(path),
                        self.image_name.display()
                    )
                })?;
            if n != len {
                bail!(
                    "{}: changed during the build (it shrank); nothing was written",
                    display(path)
                );
            }
        }
        // A change while it was copied is caught here rather than written.
        bytes.check(path)
    }
}

/// Where a file's data bytes go: (byte offset in the filesystem, byte offset in the file, length)
/// for each data range of `layout` (of a `size`-byte file) within each allocated run. Runs and
/// ranges are both in file order: one pass over each (a file of many small extents and many
/// data ranges — a long sparse map — must not cost their product).
fn placed(runs: &[Run], layout: &Layout, size: u64, bs: u64) -> Vec<(u64, u64, u64)> {
    let data = layout.data_ranges(size);
    let mut runs = runs.to_vec();
    runs.sort_unstable_by_key(|r| r.lblk);
    let mut out = Vec::new();
    let mut first = 0; // the first data range that may still meet a run
    for r in &runs {
        let (rs, re) = (r.lblk * bs, (r.lblk + r.len) * bs);
        while first < data.len() && data[first].1 <= rs {
            first += 1;
        }
        for &(ds, de) in data[first..].iter().take_while(|d| d.0 < re) {
            let (a, b) = (rs.max(ds), re.min(de).min(size));
            if a < b {
                out.push((r.pblk * bs + (a - rs), a, b - a));
            }
        }
    }
    out
}

/// A source time as the filesystem stores it.
impl From<Timestamp> for ext2fs::Timestamp {
    fn from(t: Timestamp) -> ext2fs::Timestamp {
        ext2fs::Timestamp {
            sec: t.sec,
            nsec: t.nsec,
        }
    }
}

/// `t`, or `limit` (whole seconds) when `t` is later.
pub fn clamp(t: Timestamp, limit: i64) -> Timestamp {
    if t.sec >= limit {
        Timestamp {
            sec: limit,
            nsec: 0,
        }
    } else {
        t
    }
}

/// Opens child directory `d` (checked to be the one scanned) when walking a directory source;
/// None for archive sources.
fn child_dir(parent: Option<&OwnedFd>, d: &Entry, path: &[u8]) -> Result<Option<OwnedFd>> {
    parent.map(|fd| dir_of(fd, d, path)).transpose()
}

fn ft_of(k: &Kind) -> FileType {
    match k {
        Kind::File { .. } => FileType::Regular,
        Kind::Dir { .. } => FileType::Directory,
        Kind::Symlink { .. } => FileType::Symlink,
        Kind::CharDev { .. } => FileType::CharDevice,
        Kind::BlockDev { .. } => FileType::BlockDevice,
        Kind::Fifo => FileType::Fifo,
        Kind::Socket => FileType::Socket,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_pairs_every_run_with_every_data_range_it_meets() {
        let bs = 4096;
        // Runs out of order (as a caller might give them); data in and across them.
        let runs = [
            Run {
                lblk: 10,
                pblk: 500,
                len: 5,
            },
            Run {
                lblk: 0,
                pblk: 100,
                len: 3,
            },
            Run {
                lblk: 3,
                pblk: 200,
                len: 7,
            },
        ];
        let size = 15 * bs - 100;
        let layout = Layout::Sparse(vec![(10, 20), (2 * bs + 5, 4 * bs), (9 * bs, size)]);
        let got = placed(&runs, &layout, size, bs);
        let want = vec![
            (100 * bs + 10, 10, 10),
            (100 * bs + 2 * bs + 5, 2 * bs + 5, bs - 5),
            (200 * bs, 3 * bs, bs),
            (200 * bs + 6 * bs, 9 * bs, bs),
            (500 * bs, 10 * bs, size - 10 * bs),
        ];
        assert_eq!(got, want);
        let dense = placed(&runs[1..2], &Layout::Dense, 100, bs);
        assert_eq!(dense, vec![(100 * bs, 0, 100)]);
    }
}
