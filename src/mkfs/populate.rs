//! Populating: every entry of the scanned tree becomes an inode, created once (hard links share
//! it), with its data blocks allocated as extents (or block maps) and its bytes copied straight
//! from the source file into those blocks in large runs; each directory's blocks are written in
//! one pass once its children exist. Inode numbers are kept, never looked up again by name.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use ext2fs::{
    DirHash, FileType, Filesystem, IncompatFeatures, Ino, Inode, InodeFlags, RoCompatFeatures, Run,
    ROOT_INO,
};

use super::dirblocks::{DirLayout, Kids};
use super::htree::IndexParams;
use super::layout::block_ranges;
use super::lazy::{Lazy, LazyPart};
use super::limits::{fit_time, time_range};
use super::plan::LINK_MAX;
use crate::copy::RangeCopier;
use crate::progress::Progress;
use crate::source::bytes::file_bytes;
use crate::source::dirs::Dirs;
use crate::source::readahead::Position;
use crate::source::{display, Data, Entry, Kind, Layout, Meta, Timestamp, Tree};

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
    /// The tree populated: where its files are read from (its origins, by [`Data::src`]).
    pub tree: &'a Tree,
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

    /// The source directories of directory `d` below `dirs`, at `path`.
    fn child_dirs(&self, dirs: &Dirs, d: &Entry, path: &[u8]) -> Result<Dirs> {
        dirs.child(self.tree, d, self.rel(path))
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
                let sub = self.child_dirs(dirs, c, path)?;
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
                let sub = self.child_dirs(dirs, e, path)?;
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
        let origin = &self.tree.origins[data.src() as usize];
        if let Some(lazy) = &mut self.lazy {
            let src = lazy.source(e, data, size, dirs, rel)?;
            for (at, from, len) in pieces {
                lazy.parts.push(LazyPart {
                    at,
                    len,
                    data: src.advanced(from),
                });
            }
            return Ok(());
        }
        let bytes = file_bytes(e, data, size, dirs, &self.tree.origins, rel)?;
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
        bytes.check()
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
