//! Populating: every entry of the scanned tree becomes an inode, created once (hard links share
//! it), with its data blocks allocated as extents (or block maps) and its bytes copied straight
//! from the source file into those blocks in large runs; each directory's blocks are written in
//! one pass once its children exist. Inode numbers are kept, never looked up again by name.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ext2fs::{
    DirHash, FileType, Filesystem, IncompatFeatures, Ino, Inode, InodeFlags, RoCompatFeatures, Run,
    ROOT_INO,
};

use super::dirblocks::{DirLayout, Kids};
use super::htree::IndexParams;
use super::layout::block_ranges;
use super::plan::LINK_MAX;
use crate::copy::RangeCopier;
use crate::progress::Progress;
use crate::source::bytes::{file_bytes, unchanged, FileBytes};
use crate::source::dirs::Dirs;
use crate::source::live::{LiveFile, LiveTree};
use crate::source::readahead::Position;
use crate::source::{display, Data, Entry, Kind, Layout, Meta, Origin, Timestamp};

pub struct Populator<'a> {
    pub fs: &'a mut Filesystem,
    /// Byte offset of the filesystem in the file it lives in (`copier`'s destination): file data
    /// is written there directly.
    pub image_offset: u64,
    /// What the user knows it as, for messages (OUTPUT, never a temp file's name).
    pub image_name: &'a str,
    pub lost_found: Ino,
    pub link_counts: &'a HashMap<(u64, u64), u32>,
    pub progress: &'a Progress,
    /// Inodes already made for multiply-linked files, by source identity.
    pub linked: HashMap<(u64, u64), Ino>,
    /// The highest inode number taken so far: new inodes are looked for from its group on.
    /// Inodes are taken in order with no gaps, so this picks what a search from the parent
    /// directory's group would, without walking every full group before it (quadratic in a
    /// directory of a million entries).
    pub last_ino: Ino,
    /// Moves file data into the filesystem's file (cloned where the filesystems allow).
    pub copier: RangeCopier<'a>,
    /// Where the tree's files are read from (their [`Data::src`]).
    pub origins: &'a [Origin],
    /// Length of the SOURCE path at the start of every entry's path: what follows is its path
    /// in the tree.
    pub root_len: usize,
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

/// Where a lazily served piece of file data is read from.
#[derive(Clone)]
pub enum LazyData {
    /// A file of the source directory, from byte `offset`, checked on every read.
    Live { file: Arc<LiveFile>, offset: u64 },
    /// The tar archive's spool file, from byte `offset`.
    Spool { file: Arc<File>, offset: u64 },
}

impl LazyData {
    /// The same data, `by` bytes further on.
    fn advanced(&self, by: u64) -> LazyData {
        match self {
            LazyData::Live { file, offset } => LazyData::Live {
                file: file.clone(),
                offset: offset + by,
            },
            LazyData::Spool { file, offset } => LazyData::Spool {
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

/// Where one source's files are read from when served lazily.
pub enum LazySource {
    /// A directory (or a single file's parent).
    Live(Arc<LiveTree>),
    /// A spool file.
    Spool(Arc<File>),
}

/// File data left in the source (`--serve --lazy`): where each data range of each file lies in
/// the filesystem, and where its bytes are read from.
pub struct Lazy {
    /// Each source of the tree (indexed by [`Data::src`]), opened.
    pub sources: Vec<LazySource>,
    /// Where each piece of file data goes and where it is read from, in the order placed.
    pub parts: Vec<LazyPart>,
    files: usize,
}

impl Lazy {
    /// Opens the tree's sources: directories as [`LiveTree`]s, spools as they are.
    pub fn open(origins: &[Origin]) -> Result<Lazy> {
        let sources = origins
            .iter()
            .map(|o| match (o, o.host_dir()) {
                (Origin::Spool { file, .. }, _) => Ok(LazySource::Spool(file.clone())),
                (_, Some(dir)) => Ok(LazySource::Live(LiveTree::open(dir)?)),
                (_, None) => unreachable!("directory and file sources have a directory"),
            })
            .collect::<Result<_>>()?;
        Ok(Lazy {
            sources,
            parts: Vec::new(),
            files: 0,
        })
    }

    /// Where file `e`'s bytes are read, at its byte 0 (`rel`: its path in the tree).
    fn source(
        &mut self,
        e: &Entry,
        data: Data,
        size: u64,
        origin: &Origin,
        rel: &[u8],
    ) -> Result<LazyData> {
        Ok(match (data, self.sources.get(data.src() as usize)) {
            (Data::InTree { .. }, Some(LazySource::Live(tree))) => {
                self.files += 1;
                let rel = origin.host_rel(rel);
                LazyData::Live {
                    file: Arc::new(tree.file(&rel, &e.meta, size, self.files)),
                    offset: 0,
                }
            }
            (Data::Spool { offset, .. }, Some(LazySource::Spool(file))) => LazyData::Spool {
                file: file.clone(),
                offset,
            },
            _ => bail!("{}: no source to read from", display(rel)),
        })
    }
}

impl Populator<'_> {
    /// Fills the root directory (inode 2) from `root`, whose source directories are `dirs`;
    /// `path` is SOURCE's path (of [`Populator::root_len`] bytes).
    pub fn run(&mut self, root: &Entry, dirs: &Dirs, path: &mut Vec<u8>) -> Result<()> {
        self.dir(ROOT_INO, ROOT_INO, root, dirs, path, true)
    }

    /// The path in the tree (`/a/b`) of the entry at `path`.
    fn rel<'p>(&self, path: &'p [u8]) -> &'p [u8] {
        &path[self.root_len.min(path.len())..]
    }

    /// The source directories of directory `name` below `dirs`, at `path`.
    fn child_dirs(&self, dirs: &Dirs, name: &[u8], path: &[u8]) -> Result<Dirs> {
        dirs.child(self.origins, name, self.rel(path))
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
        dirs: &Dirs,
        path: &mut Vec<u8>,
        is_root: bool,
    ) -> Result<()> {
        // The inode made for each child, in order (4 bytes a child; names stay in the tree).
        let mut inos: Vec<Ino> = Vec::with_capacity(d.children().len());
        let mut subdirs = 0u64;
        let mut has_lost_found = false;
        for c in d.children() {
            let len = path.len();
            path.push(b'/');
            path.extend_from_slice(&c.name);
            let (c_ino, ft) = if is_root && &*c.name == b"lost+found" && c.is_dir() {
                has_lost_found = true;
                let sub = self.child_dirs(dirs, &c.name, path)?;
                self.dir(self.lost_found, ino, c, &sub, path, false)?;
                (self.lost_found, FileType::Directory)
            } else {
                self.entry(ino, c, dirs, path)?
            };
            path.truncate(len);
            if ft == FileType::Directory {
                subdirs += 1;
            }
            inos.push(c_ino);
            self.progress.inc_entries(1);
        }
        let kids = Kids {
            entries: d.children(),
            inos: &inos,
            lost_found: (is_root && !has_lost_found).then_some(self.lost_found),
        };
        if kids.lost_found.is_some() {
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
        let p = self.index_params();
        let layout = DirLayout::plan(ino, &kids, &p, self.hash.as_ref(), ino == self.lost_found);
        if let DirLayout::Indexed(..) = layout {
            inode.add_flags(InodeFlags::INDEX);
        }
        let nblocks = layout.blocks();
        self.place(ino, &mut inode, &[(0, nblocks)], path)?;
        inode.set_size(nblocks * self.block_size());
        let runs = self
            .fs
            .runs(ino, &inode)
            .with_context(|| format!("{}: inode {ino}", display(path)))?;
        let fs = &mut *self.fs;
        let mut written = 0u64;
        let mut sink = |lblk: u64, block: &mut [u8]| -> Result<()> {
            written += 1;
            let i = runs.partition_point(|r| r.lblk + r.len <= lblk);
            let r = runs.get(i).filter(|r| r.lblk <= lblk).with_context(|| {
                format!("{}: directory block {lblk} is not allocated", display(path))
            })?;
            fs.write_dir_block(r.pblk + (lblk - r.lblk), block, ino)
                .with_context(|| format!("{}: writing directory block", display(path)))
        };
        layout.write(ino, parent, &kids, &p, &mut sink)?;
        debug_assert_eq!(written, nblocks);
        self.finish_inode(ino, &mut inode, d, path)
    }

    /// How directory blocks look on this filesystem (the hash version is the filesystem's).
    fn index_params(&self) -> IndexParams {
        IndexParams {
            block_size: self.fs.block_size(),
            csum: self
                .fs
                .superblock()
                .ro_compat()
                .contains(RoCompatFeatures::METADATA_CSUM),
            hash_version: self.hash.as_ref().map_or(0, |h| h.root_version()),
        }
    }

    /// Creates one non-root entry in directory `parent` (whose source directories are `dirs`);
    /// returns its inode and directory-entry file type.
    fn entry(
        &mut self,
        parent: Ino,
        e: &Entry,
        dirs: &Dirs,
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
                let ino = self.alloc_ino(FileType::Directory, path)?;
                let sub = self.child_dirs(dirs, &e.name, path)?;
                self.dir(ino, parent, e, &sub, path, false)?;
                ino
            }
            Kind::File { size, layout, data } => {
                let ino = self.alloc_ino(FileType::Regular, path)?;
                let mut inode = self.new_inode(FileType::Regular, &e.meta, links as u16);
                inode.set_size(*size);
                let ranges = block_ranges(*size, layout, self.fs.block_size());
                self.place(ino, &mut inode, &ranges, path)?;
                if !ranges.is_empty() {
                    let runs = self
                        .fs
                        .runs(ino, &inode)
                        .with_context(|| format!("{}: inode {ino}", display(path)))?;
                    self.copy_data(dirs, e, *data, *size, layout, &runs, path)?;
                }
                self.finish_inode(ino, &mut inode, e, path)?;
                ino
            }
            Kind::Symlink { target } => {
                let ino = self
                    .fs
                    .symlink(self.last_ino, target)
                    .with_context(|| format!("{}: creating symlink", display(path)))?;
                self.last_ino = self.last_ino.max(ino);
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
                let ino = self.alloc_ino(ft, path)?;
                let mut inode = self.new_inode(ft, &e.meta, links as u16);
                inode.set_device(*major, *minor);
                self.finish_inode(ino, &mut inode, e, path)?;
                ino
            }
            Kind::Fifo | Kind::Socket => {
                let ino = self.alloc_ino(ft, path)?;
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

    fn alloc_ino(&mut self, ft: FileType, path: &[u8]) -> Result<Ino> {
        let ino = self
            .fs
            .new_inode(self.last_ino, ft)
            .with_context(|| format!("{}: allocating an inode", display(path)))?;
        self.last_ino = self.last_ino.max(ino);
        Ok(ino)
    }

    /// A new in-memory inode of type `ft` with the source's permissions, owner and times.
    fn new_inode(&self, ft: FileType, m: &Meta, links: u16) -> Inode {
        let mut inode = Inode::new(ft, m.perm, self.fs.superblock().want_extra_isize());
        let (uid, gid) = self.owner.unwrap_or((m.uid, m.gid));
        inode.set_owner(uid, gid);
        match self.clamp_time {
            Some(limit) => {
                let t = clamp(m.mtime, limit);
                let t = t.into();
                inode.set_times(t, t, t, t);
            }
            None => inode.set_times(
                m.atime.into(),
                m.mtime.into(),
                m.ctime.into(),
                m.btime.into(),
            ),
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
        dirs: &Dirs,
        e: &Entry,
        data: Data,
        size: u64,
        layout: &Layout,
        runs: &[Run],
        path: &[u8],
    ) -> Result<()> {
        let pieces = placed(runs, layout, size, self.block_size());
        let rel = self.rel(path);
        let origin = &self.origins[data.src() as usize];
        if let Some(lazy) = &mut self.lazy {
            let src = lazy.source(e, data, size, origin, rel)?;
            for (at, from, len) in pieces {
                lazy.parts.push(LazyPart {
                    at,
                    len,
                    data: src.advanced(from),
                });
            }
            return Ok(());
        }
        let bytes = file_bytes(e, data, size, dirs, self.origins, rel)?;
        let (src, base) = (bytes.file(), bytes.base());
        for (at, from, len) in pieces {
            let progress = self.progress;
            let n = self
                .copier
                .copy(src, base + from, self.image_offset + at, len, &mut |n| {
                    progress.inc_bytes(n)
                })
                .with_context(|| {
                    format!("{}: copying into {}", origin.show(rel), self.image_name)
                })?;
            if n != len {
                bail!(
                    "{}: changed during the build (it shrank); nothing was written",
                    origin.show(rel)
                );
            }
        }
        // A change while it was copied is caught here rather than written.
        if let FileBytes::Opened(fd) = &bytes {
            unchanged(fd, e, size, origin.show(rel).as_bytes())?;
        }
        Ok(())
    }
}

/// Where a file's data bytes go: (byte offset in the filesystem, byte offset in the file, length)
/// for each data range of `layout` (of a `size`-byte file) within each allocated run.
fn placed(runs: &[Run], layout: &Layout, size: u64, bs: u64) -> Vec<(u64, u64, u64)> {
    let data = layout.data_ranges(size);
    let mut out = Vec::new();
    for r in runs {
        let (rs, re) = (r.lblk * bs, (r.lblk + r.len) * bs);
        for &(ds, de) in &data {
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

/// The directory-entry file type of an entry of kind `k`.
pub fn ft_of(k: &Kind) -> FileType {
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
