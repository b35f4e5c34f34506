//! Planning: what the tree needs from the filesystem (inodes and blocks: file data, extent or
//! indirect blocks, directory blocks, long symlinks, xattr blocks), hard-link counts, and the
//! first guess of the filesystem geometry for each `--size` form.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Result};

use super::htree::BlockBound;
use super::layout::block_ranges;
use super::limits::{fit_time, time_range, year, MAX_INODES, MAX_LINKS};
use super::populate::clamp;
use super::size::Human;
use super::Options;
use crate::source::{display, Entry, Kind, Tree};

/// The first non-reserved inode number of a dynamic-revision filesystem: inodes 1..=10 are
/// reserved (2 is the root) and mke2fs gives lost+found 11.
pub const FIRST_INO: u64 = 11;

/// The kernel's limit on a directory's link count (2 + subdirectories); beyond it, dir_nlink
/// stores 1.
pub const LINK_MAX: u64 = 65000;

/// What the tree needs.
#[derive(Debug, Default)]
pub struct Needs {
    /// Inodes in use once populated, reserved ones and lost+found included.
    pub inodes: u64,
    /// Blocks the tree's contents need beyond a freshly formatted filesystem (an upper bound).
    pub blocks: u64,
    /// For files with several names: (dev, ino) in the source → number of names in the tree.
    pub link_counts: HashMap<(u64, u64), u32>,
    /// Entries with a time the inodes cannot hold (stored clamped), and the first one in words.
    pub clamped_times: (u64, Option<String>),
}

/// Blocks mke2fs gives lost+found: 16 KiB, at least 2 blocks, at most 12 (direct blocks).
pub fn lost_found_blocks(block_size: u32) -> u64 {
    (16384 / block_size as u64).clamp(2, 12)
}

/// Walks the tree (read from `source`, named in messages) and adds up what it needs on the
/// filesystem `opts` describes.
pub fn needs(tree: &Tree, source: &Path, opts: &Options) -> Result<Needs> {
    let mut n = Needs {
        inodes: FIRST_INO,
        ..Default::default()
    };
    let mut path = source.as_os_str().as_encoded_bytes().to_vec();
    let mut multi: HashMap<(u64, u64), u32> = HashMap::new();
    check_times(&tree.root, opts, &mut n, &path);
    dir(&tree.root, true, opts, &mut n, &mut multi, &mut path)?;
    if let Some(first) = &n.clamped_times.1 {
        let count = n.clamped_times.0;
        eprintln!(
            "linuxdisk-mk: warning: {first}, as the kernel stores such times ({count} {} in all)",
            if count == 1 { "entry" } else { "entries" }
        );
    }
    if n.inodes > MAX_INODES {
        bail!(
            "{}: {} entries need more inodes than the {MAX_INODES} a filesystem holds",
            display(&path),
            n.inodes
        );
    }
    n.link_counts = multi.into_iter().filter(|&(_, c)| c > 1).collect();
    Ok(n)
}

fn dir(
    d: &Entry,
    is_root: bool,
    opts: &Options,
    n: &mut Needs,
    multi: &mut HashMap<(u64, u64), u32>,
    path: &mut Vec<u8>,
) -> Result<()> {
    let bs = opts.block_size;
    // An upper bound for linear and htree-indexed layouts alike (`.` and `..` included).
    let mut bound = BlockBound::default();
    bound.add(1);
    bound.add(2);
    let mut has_lost_found = false;
    n.blocks += xattr_blocks(d, opts, path)?;
    for c in d.children() {
        bound.add(c.name.len());
        let len = path.len();
        path.push(b'/');
        path.extend_from_slice(&c.name);
        if is_root && &*c.name == b"lost+found" {
            if !c.is_dir() {
                bail!(
                    "{}: is not a directory, but /lost+found must be one on ext2/3/4",
                    display(path)
                );
            }
            has_lost_found = true;
            n.blocks += lost_found_blocks(bs); // padded to mke2fs's size
            n.inodes -= 1; // reuses inode 11
        }
        entry(c, opts, n, multi, path)?;
        path.truncate(len);
    }
    if is_root && !has_lost_found {
        bound.add(b"lost+found".len());
    }
    let subdirs = d.children().iter().filter(|c| c.is_dir()).count() as u64;
    if subdirs + 2 >= LINK_MAX && !opts.features.has_dir_nlink() {
        bail!(
            "{}: {subdirs} subdirectories are more than {} allows without dir_nlink ({}); use -t ext4",
            display(path),
            opts.fstype.name(),
            LINK_MAX - 3
        );
    }
    let blocks = bound.blocks(bs, opts.features.has_metadata_csum());
    n.blocks += blocks + mapping_blocks(opts.features.has_extents(), bs, &[(0, blocks)]);
    Ok(())
}

fn entry(
    e: &Entry,
    opts: &Options,
    n: &mut Needs,
    multi: &mut HashMap<(u64, u64), u32>,
    path: &mut Vec<u8>,
) -> Result<()> {
    let bs = opts.block_size;
    if !e.is_dir() && e.meta.nlink > 1 {
        let c = multi.entry((e.meta.dev, e.meta.ino)).or_insert(0);
        *c += 1;
        if *c as u64 > MAX_LINKS {
            bail!(
                "{}: more than {MAX_LINKS} names for one file, the most its link count holds",
                display(path)
            );
        }
        if *c > 1 {
            return Ok(()); // another name for an inode already counted
        }
    }
    check_times(e, opts, n, path);
    n.inodes += 1;
    match &e.kind {
        Kind::Dir { .. } => return dir(e, false, opts, n, multi, path),
        Kind::File { size, layout, .. } => {
            let max = max_file_size(opts);
            if *size > max {
                bail!(
                    "{}: a file of {} is larger than {} with {}-byte blocks can hold ({})",
                    display(path),
                    Human(*size),
                    opts.fstype.name(),
                    bs,
                    Human(max)
                );
            }
            let ranges = block_ranges(*size, layout, bs);
            let data: u64 = ranges.iter().map(|r| r.1).sum();
            n.blocks += data + mapping_blocks(opts.features.has_extents(), bs, &ranges);
        }
        Kind::Symlink { target } => {
            if target.len() >= bs as usize {
                bail!(
                    "{}: symlink target of {} bytes is longer than the {bs}-byte block size allows",
                    display(path),
                    target.len()
                );
            }
            if target.len() >= 60 {
                n.blocks += 1;
            }
        }
        _ => {}
    }
    n.blocks += xattr_blocks(e, opts, path)?;
    Ok(())
}

/// Notes (in `n.clamped_times`) an entry whose times, as they will be stored (clamped under
/// SOURCE_DATE_EPOCH), lie outside what its inode holds: populating clamps them, as the kernel
/// would, rather than store them wrapped round to another date.
fn check_times(e: &Entry, opts: &Options, n: &mut Needs, path: &[u8]) {
    let range = time_range(opts.inode_size > 128);
    let m = &e.meta;
    let mut times = vec![(m.mtime, "modification time")];
    if opts.clamp_time.is_none() {
        times.extend([(m.atime, "access time"), (m.ctime, "change time")]);
        if opts.inode_size > 128 {
            times.push((m.btime, "creation time")); // 128-byte inodes store none
        }
    }
    for (t, what) in times {
        let t = opts.clamp_time.map_or(t, |limit| clamp(t, limit));
        if let Some(fit) = fit_time(t, range) {
            let (count, first) = &mut n.clamped_times;
            *count += 1;
            first.get_or_insert_with(|| {
                format!(
                    "{}: its {what} (about the year {}) is outside what {}-byte inodes store ({} to {}): stored as the year {}",
                    display(path),
                    year(t.sec),
                    opts.inode_size,
                    year(range.0),
                    year(range.1),
                    year(fit.sec)
                )
            });
            return;
        }
    }
}

/// The largest regular file the filesystem can hold: 2^32 logical blocks with extents; with
/// block maps, what 12 direct, one indirect, one double and one triple indirect block address,
/// and without huge_file no more than 2^32 512-byte sectors.
pub fn max_file_size(opts: &Options) -> u64 {
    let bs = opts.block_size as u64;
    let blocks = if opts.features.has_extents() {
        1u64 << 32
    } else {
        let a = bs / 4;
        12 + a + a * a + a * a * a
    };
    let mut max = blocks.saturating_mul(bs);
    if !opts.features.has_huge_file() {
        max = max.min((1u64 << 32) * 512 - bs);
    }
    max
}

/// Blocks beyond the data that map a file's `ranges` (logical start, count): extent tree blocks
/// for extent-mapped files, indirect blocks for block-mapped ones. An upper bound.
pub fn mapping_blocks(extents: bool, bs: u32, ranges: &[(u64, u64)]) -> u64 {
    let bs = bs as u64;
    if ranges.is_empty() {
        return 0;
    }
    if extents {
        // An extent maps at most 32768 blocks; allow one break per block group as well.
        let extents: u64 = ranges
            .iter()
            .map(|r| r.1.div_ceil(32768) + 1 + r.1 / (8 * bs))
            .sum();
        if extents <= 4 {
            return 0;
        }
        let per_block = (bs - 12) / 12;
        let leaves = extents.div_ceil(per_block);
        let index = if leaves > 4 {
            leaves.div_ceil(per_block) + 1
        } else {
            0
        };
        return leaves + index;
    }
    // Block-mapped: bounded by the indirect blocks needed up to the last logical block.
    let a = bs / 4;
    let end = ranges.last().map_or(0, |r| r.0 + r.1);
    let mut b = 0;
    if end > 12 {
        b += 1;
    }
    if end > 12 + a {
        b += 1 + (end.min(12 + a + a * a) - 12 - a).div_ceil(a);
    }
    if end > 12 + a + a * a {
        let rest = end - 12 - a - a * a;
        b += 1 + rest.div_ceil(a * a) + rest.div_ceil(a);
    }
    b
}

/// 0 or 1: whether the entry's extended attributes overflow the inode's spare space into an
/// attribute block. Fails when they would not fit in one block either.
fn xattr_blocks(e: &Entry, opts: &Options, path: &[u8]) -> Result<u64> {
    let (bs, inode_size) = (opts.block_size, opts.inode_size);
    if e.xattrs.is_empty() {
        return Ok(0);
    }
    // ext4_xattr_entry: 16 bytes + name suffix, padded to 4; the value padded to 4.
    let size: usize = e
        .xattrs
        .iter()
        .map(|(k, v)| 16 + ((k.len() + 3) & !3) + ((v.len() + 3) & !3))
        .sum();
    let in_inode = (inode_size as usize).saturating_sub(128 + 32 + 4 + 4);
    if size <= in_inode {
        return Ok(0);
    }
    let block = bs as usize - 32 - 4;
    if size > block + in_inode {
        bail!(
            "{}: extended attributes need about {size} bytes, more than the inode and one {bs}-byte block hold",
            display(path)
        );
    }
    Ok(1)
}

/// Inodes for the tree plus a margin for files added later (at least 512: a booted busybox
/// appliance makes some 400 symlinks).
pub fn inodes_with_margin(needed: u64) -> u64 {
    needed + (needed / 10).max(512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_extent_files_need_no_tree_blocks() {
        assert_eq!(mapping_blocks(true, 4096, &[(0, 1)]), 0);
        assert_eq!(mapping_blocks(true, 4096, &[(0, 32768)]), 0);
        assert!(mapping_blocks(true, 4096, &[(0, 1 << 20)]) >= 1);
    }

    #[test]
    fn indirect_blocks_for_block_mapped_files() {
        assert_eq!(mapping_blocks(false, 4096, &[(0, 12)]), 0);
        assert_eq!(mapping_blocks(false, 4096, &[(0, 13)]), 1);
        assert_eq!(mapping_blocks(false, 4096, &[(0, 12 + 1024)]), 1);
        assert_eq!(mapping_blocks(false, 4096, &[(0, 12 + 1024 + 1)]), 3);
        // 1 KiB blocks, a 64 MiB file: 1 + (1 + 256) + (1 + 1 + ...)
        assert!(mapping_blocks(false, 1024, &[(0, 65536)]) >= 257);
    }

    #[test]
    fn largest_files_per_type_and_block_size() {
        let mut o = Options::new(super::super::fstype::FsType::Ext2);
        o.block_size = 1024;
        assert_eq!(
            max_file_size(&o),
            (12 + 256 + 256 * 256 + 256 * 256 * 256) * 1024
        ); // ~16 GiB
        o.block_size = 4096;
        assert_eq!(max_file_size(&o), (1u64 << 41) - 4096); // 2 TiB without huge_file
        let o = Options::new(super::super::fstype::FsType::Ext4);
        assert_eq!(max_file_size(&o), 1u64 << 44); // 16 TiB
    }

    #[test]
    fn lost_found_is_16k_within_direct_blocks() {
        assert_eq!(lost_found_blocks(4096), 4);
        assert_eq!(lost_found_blocks(2048), 8);
        assert_eq!(lost_found_blocks(1024), 12);
    }
}
