//! Formatting: an empty filesystem in the (new, sparse, all-zero) temp file, made the way mke2fs
//! makes one: tables, root directory, lost+found of 16 KiB, reserved and bad-block inodes, the
//! resize inode, and a journal of mke2fs's default size for ext3/ext4.

use std::path::Path;

use anyhow::{Context, Result};

use super::fstype::Features;
use super::plan::lost_found_blocks;
use super::Options;
use ext2fs::{CompatFeatures, Filesystem, FormatParams, Ino, ROOT_INO};

/// The size of the filesystem to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub blocks: u64,
    pub inodes: u64,
}

/// A freshly formatted filesystem.
pub struct Formatted {
    pub fs: Filesystem,
    pub lost_found: Ino,
    pub journal_blocks: u32,
}

/// Journal size for a filesystem of `blocks` blocks: mke2fs's table, at least jbd2's minimum.
pub fn journal_blocks(features: &Features, blocks: u64) -> u32 {
    if features.has_journal() {
        ext2fs::default_journal_blocks(blocks)
    } else {
        0
    }
}

/// Formats the filesystem at byte `offset` of `device` (already sized, all zeros there).
pub fn format(device: &Path, offset: u64, geo: Geometry, id: &Options) -> Result<Formatted> {
    let f = id.features;
    let params = FormatParams {
        blocks: geo.blocks,
        block_size: id.block_size,
        inodes: geo.inodes.min(u32::MAX as u64) as u32,
        inode_size: id.inode_size,
        compat: f.compat,
        incompat: f.incompat,
        ro_compat: f.ro_compat,
        log_groups_per_flex: f.log_groups_per_flex(),
        reserved_blocks: (geo.blocks as f64 * id.reserved_percent / 100.0) as u64,
        label: id.label,
        uuid: id.uuid,
        hash_seed: id.hash_seed,
        time: id.time,
    };
    let mut fs = Filesystem::initialize(device, offset, &params)?;
    fs.allocate_tables()?;
    fs.mark_inode_tables_zeroed();
    fs.write_reserved_inodes()?;
    fs.mkdir(ROOT_INO, ROOT_INO, None)
        .context("creating the root directory")?;
    fs.set_umask(0o077);
    fs.mkdir(ROOT_INO, 0, Some(b"lost+found"))
        .context("creating /lost+found")?;
    let lost_found = fs.lookup(ROOT_INO, b"lost+found")?;
    for _ in 1..lost_found_blocks(id.block_size) {
        fs.expand_dir(lost_found).context("expanding /lost+found")?;
    }
    fs.set_umask(0o022);
    fs.reserve_inodes();
    fs.create_bad_block_inode()?;
    if fs
        .superblock()
        .compat()
        .contains(CompatFeatures::RESIZE_INODE)
    {
        fs.create_resize_inode()?;
    }
    let journal_blocks = journal_blocks(&id.features, geo.blocks);
    if journal_blocks > 0 {
        fs.add_journal(journal_blocks, true)
            .with_context(|| format!("creating a journal of {journal_blocks} blocks"))?;
    }
    fs.record_overhead()?;
    Ok(Formatted {
        fs,
        lost_found,
        journal_blocks,
    })
}
