//! Making the filesystem: plan (what the tree needs) → format (an empty filesystem of the chosen
//! geometry in a sparse temp file) → populate (the tree's entries). This module picks the size:
//! the smallest that fits with a small margin, an exact `--size`, or `--size +FREE`.

pub mod dirblocks;
pub mod dirent;
pub mod format;
pub mod fstype;
pub mod htree;
pub mod layout;
pub mod lazy;
pub mod limits;
pub mod plan;
pub mod populate;
pub mod size;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ext2fs::{CompatFeatures, DirHash};
use rustix::io::Errno;

use self::format::{format, journal_blocks, Formatted, Geometry};
use self::fstype::{Features, FsType, INODE_SIZE};
use self::lazy::Lazy;
pub use self::lazy::{LazyData, LazyPart};
use self::plan::{inodes_with_margin, Needs};
use self::populate::Populator;
use self::size::{auto_margin, kernel_reserve, Human, SizeSpec};
use crate::copy::{CopyStats, RangeCopier};
use crate::progress::{ByteSize, Progress};
use crate::source::dirs::Dirs;
use crate::source::readahead::{self, FinishOnDrop, Position, WINDOW};
use crate::source::Tree;

/// Bytes per inode for `--size` filesystems (mke2fs's default inode_ratio).
const INODE_RATIO: u64 = 16384;

/// What to make.
#[derive(Debug, Clone)]
pub struct Options {
    /// The type asked for (for messages); `features` is what goes on disk.
    pub fstype: FsType,
    pub features: Features,
    pub block_size: u32,
    pub inode_size: u16,
    /// `-N`: at least this many inodes.
    pub inodes: Option<u64>,
    pub size: SizeSpec,
    pub label: [u8; 16],
    /// `-m`: percentage of blocks reserved for root.
    pub reserved_percent: f64,
    pub uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    /// Superblock times (and what libext2fs stamps on lost+found and the journal).
    pub time: u32,
    /// `--owner`: every entry's owner.
    pub owner: Option<(u32, u32)>,
    /// SOURCE_DATE_EPOCH: file times later than it are clamped to it, and atime, ctime and
    /// crtime are set to the (clamped) mtime so nothing of the build host leaks in.
    pub clamp_time: Option<i64>,
    /// `--lazy`: don't copy file data; [`Built::lazy`] says where it goes and where it is.
    pub lazy: bool,
}

impl Options {
    /// Mke2fs's defaults for `fstype`, random identifiers, the current time.
    pub fn new(fstype: FsType) -> Options {
        Options {
            fstype,
            features: fstype.features(),
            block_size: 4096,
            inode_size: INODE_SIZE,
            inodes: None,
            size: SizeSpec::Auto,
            label: [0; 16],
            reserved_percent: 5.0,
            uuid: *uuid::Uuid::new_v4().as_bytes(),
            hash_seed: *uuid::Uuid::new_v4().as_bytes(),
            time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as u32),
            owner: None,
            clamp_time: None,
            lazy: false,
        }
    }
}

/// Where the filesystem is built: a file (emptied and sized here) and the byte offset in it.
pub struct Target<'a> {
    pub file: &'a File,
    pub offset: u64,
    /// What the user knows the file as, for messages: OUTPUT (never the temp file's own name),
    /// or "a temporary file in TMPDIR".
    pub name: &'a str,
}

/// The finished filesystem: its size in bytes and facts for -v.
pub struct Built {
    pub size: u64,
    pub report: Report,
    /// With [`Options::lazy`]: the file data left out, in filesystem order.
    pub lazy: Vec<LazyPart>,
    /// How the file data was moved into the filesystem (cloned, copied in the kernel, copied).
    pub data: CopyStats,
}

/// Facts about the filesystem made, read back from its superblock: for -v, the summary and
/// `--json`.
#[derive(Debug, Clone)]
pub struct Report {
    pub blocks: u64,
    pub block_size: u32,
    pub inodes: u64,
    pub free_blocks: u64,
    /// Of the free blocks, those ordinary users may not take (root's and the kernel's reserves).
    pub unavailable_blocks: u64,
    pub free_inodes: u64,
    /// Blocks reserved for root (`-m`): free, but not available to ordinary users.
    pub reserved_blocks: u64,
    pub journal_blocks: u32,
    pub need_blocks: u64,
    pub need_inodes: u64,
    pub uuid: [u8; 16],
    pub label: [u8; 16],
}

impl Report {
    /// Free bytes that ordinary users can fill: the free blocks beyond the root reserve.
    pub fn available_bytes(&self) -> u64 {
        self.free_blocks.saturating_sub(self.unavailable_blocks) * self.block_size as u64
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let avail = self.free_blocks.saturating_sub(self.unavailable_blocks);
        let pct = |a: u64, b: u64| {
            if b == 0 {
                0.0
            } else {
                a as f64 * 100.0 / b as f64
            }
        };
        write!(
            f,
            "filesystem: {} ({} blocks of {} bytes), {} inodes; journal {} blocks; free: {} blocks ({:.1}%), {} inodes ({:.1}%); available to ordinary users: {} ({:.1}%)",
            Human(self.blocks * self.block_size as u64),
            self.blocks,
            self.block_size,
            self.inodes,
            self.journal_blocks,
            self.free_blocks,
            pct(self.free_blocks, self.blocks),
            self.free_inodes,
            pct(self.free_inodes, self.inodes),
            Human(avail * self.block_size as u64),
            pct(avail, self.blocks),
        )
    }
}

/// Builds the filesystem for `tree` (scanned from `source`).
pub fn build(
    source: &Path,
    tree: &Tree,
    opts: &Options,
    target: &Target,
    progress: &Progress,
    verbose: &dyn Fn(&str),
) -> Result<Built> {
    let needs = plan::needs(tree, source, opts)?;
    verbose(&format!(
        "the tree needs about {} blocks of {} bytes and {} inodes",
        needs.blocks, opts.block_size, needs.inodes
    ));
    if let Some(n) = opts.inodes.filter(|&n| n < needs.inodes) {
        bail!("-N {n} is too few inodes: the tree needs {}", needs.inodes);
    }
    let maker = Maker {
        source,
        target,
        opts,
        needs: &needs,
    };
    let mut attempt = 0;
    let mut grow = 0u64;
    loop {
        let mut made = maker.format_for(grow)?;
        let copied = if opts.lazy { 0 } else { tree.data_bytes };
        progress.start_copy("building", copied, tree.entries);
        let res = maker.populate(source, tree, &mut made, progress);
        progress.finish();
        let (lazy, data) = match res {
            Ok(done) => done,
            Err(e) if is_no_space(&e) => match opts.size {
                // Formatting checked that the planned blocks were free, so the plan (an upper
                // bound) was short: there is no size to name that is sure to build.
                SizeSpec::Total(n) => bail!(
                    "--size {} is too small for {}: it ran out of space while populating, \
                     beyond what the tree was planned to need; give a larger --size or leave \
                     it out",
                    Human(n),
                    source.display(),
                ),
                // The plan is an upper bound, so this is rare: grow and start again.
                _ if attempt < 3 => {
                    attempt += 1;
                    grow = (made.fs.superblock().blocks_count() / 4).max(256) * attempt;
                    verbose(&format!(
                        "the estimate was short ({e:#}); retrying with {grow} more blocks"
                    ));
                    continue;
                }
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let sb = made.fs.superblock();
        let report = Report {
            blocks: sb.blocks_count(),
            block_size: made.fs.block_size(),
            inodes: sb.inodes_count() as u64,
            free_blocks: sb.free_blocks(),
            unavailable_blocks: sb.reserved_blocks()
                + kernel_reserve(sb.blocks_count(), opts.features.has_extents()),
            free_inodes: sb.free_inodes() as u64,
            reserved_blocks: sb.reserved_blocks(),
            journal_blocks: made.journal_blocks,
            need_blocks: needs.blocks,
            need_inodes: needs.inodes,
            uuid: sb.uuid(),
            label: sb.label(),
        };
        let size = report.blocks * report.block_size as u64;
        made.fs
            .close()
            .with_context(|| format!("writing the filesystem's metadata to {}", target.name))?;
        let mut lazy = lazy.map(|l| l.parts).unwrap_or_default();
        lazy.sort_unstable_by_key(|p| p.at);
        return Ok(Built {
            size,
            report,
            lazy,
            data,
        });
    }
}

fn is_no_space(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<ext2fs::Error>()
            .is_some_and(|x| x.is_no_space())
    })
}

struct Maker<'a> {
    source: &'a Path,
    target: &'a Target<'a>,
    opts: &'a Options,
    needs: &'a Needs,
}

/// The largest size the filesystem holding `file` allows a file (below `failed`, a size it
/// refused), found by resizing `file` (sparse, so nothing is written); None if it cannot tell.
/// The file is left empty.
fn largest_file(file: &File, failed: u64) -> Option<u64> {
    let (mut ok, mut bad) = (0u64, failed);
    while bad - ok > 1 {
        let mid = ok + (bad - ok) / 2;
        match file.set_len(mid) {
            Ok(()) => ok = mid,
            Err(e) if Errno::from_io_error(&e) == Some(Errno::FBIG) => bad = mid,
            Err(_) => return None,
        }
    }
    file.set_len(0).ok()?;
    Some(ok)
}

impl Maker<'_> {
    /// Where libext2fs opens the (unlinked) temp file.
    fn device(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.target.file.as_raw_fd()))
    }

    /// `-N` when given (checked to cover the tree), else `default`.
    fn inode_count(&self, default: u64) -> u64 {
        self.opts.inodes.unwrap_or(default)
    }

    /// Formats the temp file (emptied first, so unwritten blocks are zeros) at `geo`.
    fn format_at(&self, geo: Geometry) -> Result<Formatted> {
        let bs = self.opts.block_size as u64;
        let max = self.opts.features.max_blocks();
        if geo.blocks > max {
            bail!(
                "a filesystem of {} is larger than {} with {}-byte blocks can address ({} at most)",
                Human(geo.blocks * bs),
                self.opts.fstype.name(),
                bs,
                ByteSize(max * bs)
            );
        }
        let t = self.target;
        let len = t.offset + geo.blocks * bs;
        if let Err(e) = t.file.set_len(0).and_then(|_| t.file.set_len(len)) {
            let limit = match Errno::from_io_error(&e) {
                Some(Errno::FBIG) => largest_file(t.file, len).map_or(String::new(), |max| {
                    format!(" (its filesystem holds files of at most {})", ByteSize(max))
                }),
                _ => String::new(),
            };
            bail!("cannot grow {} to {}: {e}{limit}", t.name, ByteSize(len));
        }
        format(&self.device(), self.target.offset, geo, self.opts).with_context(|| {
            format!(
                "formatting {} of {} blocks, {} inodes",
                self.opts.fstype.name(),
                geo.blocks,
                geo.inodes
            )
        })
    }

    /// The filesystem of the requested size, formatted; `grow` adds blocks after a failed try.
    fn format_for(&self, grow: u64) -> Result<Formatted> {
        let bs = self.opts.block_size as u64;
        match self.opts.size {
            SizeSpec::Total(n) => match self.total_fits(n)? {
                Some(made) => Ok(made),
                None => {
                    let min = self.minimum_size(n)?;
                    bail!(
                        "--size {} is too small for {}: it needs at least --size {}",
                        Human(n),
                        self.source.display(),
                        Human(min)
                    );
                }
            },
            SizeSpec::Free(extra) => {
                let extra_blocks = extra.div_ceil(bs) + grow;
                let inodes =
                    self.inode_count(inodes_with_margin(self.needs.inodes) + extra / INODE_RATIO);
                self.fit(inodes, &|_| extra_blocks)
            }
            SizeSpec::Auto => {
                let inodes = self.inode_count(inodes_with_margin(self.needs.inodes));
                let (bs, m) = (self.opts.block_size, self.opts.reserved_percent);
                let extents = self.opts.features.has_extents();
                self.fit(inodes, &|b| auto_margin(b, bs, m, extents) + grow)
            }
        }
    }

    /// Formats at `geo`, or None when the size is too small for libext2fs to lay out at all.
    fn try_format(&self, geo: Geometry) -> Result<Option<Formatted>> {
        match self.format_at(geo) {
            Ok(m) => Ok(Some(m)),
            Err(e)
                if e.chain()
                    .any(|c| c.downcast_ref::<ext2fs::Error>().is_some())
                    && geo.blocks < 1 << 20 =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// What `--size n` makes: `n` in whole blocks, one inode per 16 KiB or as many as the tree
    /// needs (or `-N`).
    fn total_geometry(&self, n: u64) -> Geometry {
        let inodes = (n / INODE_RATIO).max(inodes_with_margin(self.needs.inodes));
        Geometry {
            blocks: n / self.opts.block_size as u64,
            inodes: self.inode_count(inodes),
        }
    }

    /// `--size n` formatted, if it leaves the tree's planned blocks free (None if not, or if it
    /// is too small for libext2fs to lay out).
    fn total_fits(&self, n: u64) -> Result<Option<Formatted>> {
        let made = self.try_format(self.total_geometry(n))?;
        Ok(made.filter(|m| m.fs.superblock().free_blocks() >= self.needs.blocks))
    }

    /// The smallest `--size` in whole MiB that holds the tree, found by formatting exactly as
    /// `--size` does (its inode count grows with the size, so a search by [`Maker::fit`] with
    /// the tree's inode count alone names a size that then fails); `failed` is a size known to
    /// fail. The size named in the "too small" message: it builds.
    fn minimum_size(&self, failed: u64) -> Result<u64> {
        const MIB: u64 = 1 << 20;
        let bs = self.opts.block_size as u64;
        // Below this no --size can fit: it has no more free blocks than the tree's inodes alone
        // leave (rounded down, then one less so that it is a size that fails).
        let floor = self.fit(
            self.inode_count(inodes_with_margin(self.needs.inodes)),
            &|_| 0,
        )?;
        let floor = floor.fs.superblock().blocks_count() * bs / MIB;
        let mut lo = floor.saturating_sub(1).max(failed / MIB);
        // Grow by the shortfall (and the inode tables that come with it) until a size fits.
        let mut hi = lo + 1;
        for _ in 0..64 {
            let free = match self.try_format(self.total_geometry(hi * MIB))? {
                Some(m) => m.fs.superblock().free_blocks(),
                None => 0,
            };
            if free >= self.needs.blocks {
                // Then the smallest that fits, by bisection: `hi` fits, `lo` does not.
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    match self.total_fits(mid * MIB)? {
                        Some(_) => hi = mid,
                        None => lo = mid,
                    }
                }
                return Ok(hi * MIB);
            }
            lo = hi;
            let short = (self.needs.blocks - free) * bs;
            hi += (short + short / 32).div_ceil(MIB).max(1);
        }
        bail!(
            "could not find a size that holds the {} blocks {} needs",
            self.needs.blocks,
            self.source.display()
        )
    }

    /// The smallest geometry (searched by formatting: overhead depends on the group count) whose
    /// free blocks after formatting cover the tree's needs plus `margin(blocks)`.
    fn fit(&self, inodes: u64, margin: &dyn Fn(u64) -> u64) -> Result<Formatted> {
        let bs = self.opts.block_size as u64;
        let need = self.needs.blocks;
        let tables = inodes * self.opts.inode_size as u64 / bs;
        let mut blocks =
            (need + tables + journal_blocks(&self.opts.features, need + tables) as u64 + 64)
                .max(64);
        blocks += margin(blocks);
        let mut best: Option<u64> = None;
        for _ in 0..16 {
            let geo = Geometry { blocks, inodes };
            let free = match self.try_format(geo)? {
                Some(m) => m.fs.superblock().free_blocks(),
                None => 0,
            };
            let want = need + margin(blocks);
            if free >= want {
                best = Some(best.map_or(blocks, |b: u64| b.min(blocks)));
                let excess = free - want;
                if excess <= blocks / 100 + 8 {
                    break;
                }
                blocks -= excess * 9 / 10;
            } else {
                let short = want - free;
                blocks += short + short / 16 + 1;
                if best.is_some_and(|b| blocks >= b) {
                    break;
                }
            }
        }
        let blocks = best.with_context(|| {
            format!("could not find a filesystem size that holds {need} blocks")
        })?;
        let made = self.format_at(Geometry { blocks, inodes })?;
        Ok(made)
    }

    fn populate(
        &self,
        source: &Path,
        tree: &Tree,
        made: &mut Formatted,
        progress: &Progress,
    ) -> Result<(Option<Lazy>, CopyStats)> {
        let dirs = Dirs::root(tree);
        let lazy = self.opts.lazy.then(|| Lazy::new(tree));
        let dir_index = made
            .fs
            .superblock()
            .compat()
            .contains(CompatFeatures::DIR_INDEX);
        let hash = if dir_index {
            Some(DirHash::for_fs(&made.fs).context("directory hashing")?)
        } else {
            None
        };
        let position = Position::default();
        let mut p = Populator {
            fs: &mut made.fs,
            image_offset: self.target.offset,
            image_name: self.target.name,
            lost_found: made.lost_found,
            link_counts: &self.needs.link_counts,
            progress,
            linked: HashMap::new(),
            last_ino: made.lost_found,
            copier: RangeCopier::new(self.target.file),
            tree,
            root_len: source.as_os_str().len(),
            owner: self.opts.owner,
            clamp_time: self.opts.clamp_time,
            hash,
            lazy,
            position: None,
        };
        let mut path = source.as_os_str().as_encoded_bytes().to_vec();
        let from_dirs = tree.origins.iter().any(|o| o.host_fd().is_some());
        if from_dirs && p.lazy.is_none() {
            // Copying from directories: read ahead of the copy in a second thread.
            p.position = Some(&position);
            std::thread::scope(|s| {
                let _stop = FinishOnDrop(&position);
                s.spawn(|| readahead::run(tree, &position, WINDOW));
                p.run(&tree.root, &dirs, &mut path)
            })?;
        } else {
            p.run(&tree.root, &dirs, &mut path)?;
        }
        Ok((p.lazy, p.copier.stats()))
    }
}
