//! The owning `ext2_filsys` handle: creating a filesystem, its superblock, group tables, reserved
//! inodes, journal, and closing (flushing) it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{self, NonNull};

use ext2fs_sys as sys;

use crate::error::check;
use crate::{
    CompatFeatures, Error, IncompatFeatures, Ino, Result, RoCompatFeatures, Superblock, ROOT_INO,
};

/// What `ext2fs_initialize` needs to lay out a new filesystem.
#[derive(Debug, Clone)]
pub struct FormatParams {
    /// Size in blocks.
    pub blocks: u64,
    /// Block size in bytes: 1024, 2048, 4096, ... 65536.
    pub block_size: u32,
    /// Inodes wanted (the library rounds up to fill whole inode table blocks in every group).
    pub inodes: u32,
    /// Bytes per inode: 128, 256, ...
    pub inode_size: u16,
    /// Compatible features.
    pub compat: CompatFeatures,
    /// Incompatible features.
    pub incompat: IncompatFeatures,
    /// Read-only compatible features.
    pub ro_compat: RoCompatFeatures,
    /// log2 of the flex_bg group count, 0 without flex_bg.
    pub log_groups_per_flex: u8,
    /// Blocks reserved for root.
    pub reserved_blocks: u64,
    /// Volume label, NUL-padded.
    pub label: [u8; 16],
    /// Filesystem UUID (also seeds the metadata checksums).
    pub uuid: [u8; 16],
    /// Directory hash seed (stored as four little-endian words).
    pub hash_seed: [u8; 16],
    /// Superblock times (mkfs, last write, last check), seconds since the epoch.
    pub time: u32,
}

/// An open libext2fs filesystem. Dropping it discards unflushed state; [`Filesystem::close`]
/// writes the superblocks, group descriptors and bitmaps.
pub struct Filesystem {
    fs: NonNull<sys::struct_ext2_filsys>,
}

impl Drop for Filesystem {
    fn drop(&mut self) {
        // SAFETY: self.fs came from ext2fs_initialize and has not been freed (close() forgets self).
        unsafe { sys::ext2fs_free(self.fs.as_ptr()) };
    }
}

impl std::fmt::Debug for Filesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filesystem")
            .field("block_size", &self.block_size())
            .field("groups", &self.group_count())
            .field("superblock", &self.superblock())
            .finish()
    }
}

impl Filesystem {
    /// Lays out a new filesystem at byte `offset` of `device` (a file, already sized) with
    /// `ext2fs_initialize`, then sets UUID, checksum seed, hash seed and label as mke2fs does.
    pub fn initialize(device: &Path, offset: u64, p: &FormatParams) -> Result<Filesystem> {
        let name = CString::new(device.as_os_str().as_bytes())
            .map_err(|_| Error::invalid_argument("ext2fs_initialize"))?;
        let mut param = sys::ext2_super_block::default();
        param.s_rev_level = sys::EXT2_DYNAMIC_REV;
        param.s_log_block_size = p.block_size.trailing_zeros() - 10;
        param.s_log_cluster_size = param.s_log_block_size;
        param.s_inodes_count = p.inodes;
        param.s_inode_size = p.inode_size;
        param.s_feature_compat = p.compat.bits();
        param.s_feature_incompat = p.incompat.bits();
        param.s_feature_ro_compat = p.ro_compat.bits();
        param.s_log_groups_per_flex = p.log_groups_per_flex;
        if p.incompat.contains(IncompatFeatures::BIT64) {
            param.s_desc_size = sys::EXT2_MIN_DESC_SIZE_64BIT as u16;
        }
        param.s_default_mount_opts = sys::EXT2_DEFM_XATTR_USER | sys::EXT2_DEFM_ACL;
        // SAFETY: param is a valid, exclusively borrowed superblock struct.
        unsafe {
            sys::ext2fs_blocks_count_set(&mut param, p.blocks);
            sys::ext2fs_r_blocks_count_set(&mut param, p.reserved_blocks);
        }
        let mut raw: sys::ext2_filsys = ptr::null_mut();
        // SAFETY: all pointers are valid for the call; on success raw owns a new filesystem.
        let code = unsafe {
            sys::ext2fs_initialize(
                name.as_ptr(),
                sys::EXT2_FLAG_64BITS as i32,
                &mut param,
                sys::ldk_unix_io_manager(),
                &mut raw,
            )
        };
        check("ext2fs_initialize", code)?;
        let mut fs = Filesystem {
            fs: NonNull::new(raw).expect("ext2fs_initialize returned no filesystem"),
        };
        if offset > 0 {
            let opts = CString::new(format!("offset={offset}")).expect("no NUL");
            // SAFETY: fs->io is the filesystem's open channel; nothing has been written yet, so
            // every block goes through the offset.
            check("io_channel_set_options", unsafe {
                sys::io_channel_set_options((*fs.raw()).io, opts.as_ptr())
            })?;
        }
        let metadata_csum = fs.has_metadata_csum();
        {
            let sb = fs.sb_mut();
            sb.s_uuid = p.uuid;
            sb.s_volume_name = p.label;
            sb.s_hash_seed = u8x16_to_u32x4(&p.hash_seed);
            sb.s_def_hash_version = sys::EXT2_HASH_HALF_MD4 as u8;
            sb.s_max_mnt_count = -1;
            sb.s_mkfs_time = p.time;
            sb.s_wtime = p.time;
            sb.s_lastcheck = p.time;
            sb.s_kbytes_written = 1;
            if metadata_csum {
                sb.s_checksum_type = sys::EXT2_CRC32C_CHKSUM as u8;
            }
        }
        // SAFETY: fs is valid and not shared; `now` is the time the library stamps on what it
        // creates (lost+found, journal inode, s_wtime at close) instead of the clock.
        unsafe { (*fs.raw()).now = p.time as _ };
        // SAFETY: fs is a valid filesystem; the seed is derived from the UUID set above.
        unsafe { sys::ext2fs_init_csum_seed(fs.raw()) };
        Ok(fs)
    }

    pub(crate) fn raw(&self) -> sys::ext2_filsys {
        self.fs.as_ptr()
    }

    /// The in-memory superblock, read-only.
    pub fn superblock(&self) -> Superblock<'_> {
        // SAFETY: fs is valid and super_ points at its in-memory superblock for the handle's
        // whole life; only `&mut self` methods change it, so it cannot change while borrowed.
        Superblock::new(unsafe { &*(*self.raw()).super_ })
    }

    /// The in-memory superblock, for changes written at close.
    fn sb_mut(&mut self) -> &mut sys::ext2_super_block {
        // SAFETY: as in superblock(); `&mut self` makes this the only reference.
        unsafe { &mut *(*self.raw()).super_ }
    }

    /// True with metadata_csum (checksummed inodes, directory blocks, bitmaps...).
    pub(crate) fn has_metadata_csum(&self) -> bool {
        self.superblock()
            .ro_compat()
            .contains(RoCompatFeatures::METADATA_CSUM)
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        // SAFETY: fs is valid.
        unsafe { (*self.raw()).blocksize }
    }

    /// Number of block groups.
    pub fn group_count(&self) -> u32 {
        // SAFETY: fs is valid.
        unsafe { (*self.raw()).group_desc_count }
    }

    /// Bytes per on-disk inode (`EXT2_INODE_SIZE`).
    pub fn inode_size(&self) -> usize {
        // SAFETY: fs is valid.
        unsafe { sys::ldk_inode_size(self.raw()) as usize }
    }

    /// The permission mask ext2fs_mkdir applies (mke2fs uses 077 for lost+found).
    pub fn set_umask(&mut self, mask: u16) {
        // SAFETY: fs is valid and exclusively borrowed.
        unsafe { (*self.raw()).umask = mask as _ };
    }

    /// Places bitmaps and inode tables (`ext2fs_allocate_tables`).
    pub fn allocate_tables(&mut self) -> Result<()> {
        // SAFETY: fs is valid and exclusively borrowed.
        check("ext2fs_allocate_tables", unsafe {
            sys::ext2fs_allocate_tables(self.raw())
        })?;
        // SAFETY: block_map is a field of the valid fs; the call may replace it.
        check("ext2fs_convert_subcluster_bitmap", unsafe {
            sys::ext2fs_convert_subcluster_bitmap(self.raw(), &mut (*self.raw()).block_map)
        })
    }

    /// Marks every group's inode table as already zeroed: valid only because the filesystem is
    /// being written to a new sparse file, whose unwritten blocks read as zeros.
    pub fn mark_inode_tables_zeroed(&mut self) {
        for g in 0..self.group_count() {
            // SAFETY: g is a valid group number of the valid fs.
            unsafe {
                sys::ext2fs_bg_flags_set(self.raw(), g, sys::EXT2_BG_INODE_ZEROED as u16);
                sys::ext2fs_group_desc_csum_set(self.raw(), g);
            }
        }
    }

    /// Used-block count after the tables and journal: mke2fs's `s_overhead_clusters`.
    pub fn record_overhead(&mut self) -> Result<()> {
        let mut used = 0u64;
        let first = self.superblock().first_data_block();
        let last = self.superblock().blocks_count() - 1;
        // SAFETY: fs is valid; used is a valid out-pointer.
        check("ext2fs_count_used_clusters", unsafe {
            sys::ext2fs_count_used_clusters(self.raw(), first, last, &mut used)
        })?;
        self.sb_mut().s_overhead_clusters = (used + first) as u32;
        Ok(())
    }

    /// Creates the bad-block inode (empty list), as mke2fs does.
    pub fn create_bad_block_inode(&mut self) -> Result<()> {
        self.inode_alloc_stats(sys::EXT2_BAD_INO, true, false);
        // SAFETY: fs is valid; a null list means "no bad blocks".
        check("ext2fs_update_bb_inode", unsafe {
            sys::ext2fs_update_bb_inode(self.raw(), ptr::null_mut())
        })
    }

    /// With metadata_csum, writes the reserved inodes 1 .. first_ino-1 zeroed with valid
    /// checksums (mke2fs's write_reserved_inodes). Must come before the root directory exists.
    pub fn write_reserved_inodes(&mut self) -> Result<()> {
        if !self.has_metadata_csum() {
            return Ok(());
        }
        let mut buf = vec![0u8; self.inode_size()];
        for ino in 1..self.superblock().first_ino() {
            // SAFETY: buf is inode_size bytes, as the call is told.
            check("ext2fs_write_inode_full", unsafe {
                sys::ext2fs_write_inode_full(
                    self.raw(),
                    ino,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                )
            })?;
        }
        Ok(())
    }

    /// Marks inodes 3 .. first_ino-1 as in use (mke2fs's reserve_inodes).
    pub fn reserve_inodes(&mut self) {
        for ino in (ROOT_INO + 1)..self.superblock().first_ino() {
            self.inode_alloc_stats(ino, true, false);
        }
    }

    /// The reserved GDT blocks' inode (resize_inode feature: call only when it is on).
    pub fn create_resize_inode(&mut self) -> Result<()> {
        // SAFETY: fs is valid.
        check("ext2fs_create_resize_inode", unsafe {
            sys::ext2fs_create_resize_inode(self.raw())
        })
    }

    /// Adds a journal of `blocks` blocks. `lazy`: don't zero it (only on a new zeroed file).
    pub fn add_journal(&mut self, blocks: u32, lazy: bool) -> Result<()> {
        let mut params = sys::ext2fs_journal_params {
            num_journal_blocks: blocks,
            num_fc_blocks: 0,
        };
        let flags = if lazy {
            sys::EXT2_MKJOURNAL_LAZYINIT
        } else {
            0
        };
        // SAFETY: fs and params are valid; goal ~0 lets the library choose (mid-filesystem).
        check("ext2fs_add_journal_inode3", unsafe {
            sys::ext2fs_add_journal_inode3(self.raw(), &mut params, !0u64, flags as i32)
        })
    }

    /// Counts an inode as used or free in the bitmaps and group counters.
    pub fn inode_alloc_stats(&mut self, ino: Ino, in_use: bool, is_dir: bool) {
        // SAFETY: fs is valid; ino is within the filesystem (the library checks and complains).
        unsafe {
            sys::ext2fs_inode_alloc_stats2(
                self.raw(),
                ino,
                if in_use { 1 } else { -1 },
                is_dir as i32,
            )
        }
    }

    /// Writes superblocks, group descriptors and bitmaps and frees the handle, without
    /// syncing: the library's own close would fsync the whole file, which is the caller's
    /// decision (an image file is synced once, before its rename; a served temp file never
    /// needs to reach the disk).
    pub fn close(self) -> Result<()> {
        let raw = self.raw();
        std::mem::forget(self);
        // SAFETY: raw is a valid filesystem that nothing else references. ext2fs_close2 frees
        // it when it succeeds; when it fails the handle is still ours, and freed here.
        let ret = unsafe { sys::ext2fs_close2(raw, sys::EXT2_FLAG_FLUSH_NO_SYNC as i32) };
        if ret != 0 {
            // SAFETY: ext2fs_close2 failed, so raw was not freed, and nothing else holds it.
            unsafe { sys::ext2fs_free(raw) };
        }
        check("ext2fs_close2", ret)
    }
}

/// The hash seed is stored as four little-endian words.
fn u8x16_to_u32x4(b: &[u8; 16]) -> [u32; 4] {
    let mut out = [0u32; 4];
    for (i, w) in out.iter_mut().enumerate() {
        *w = u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
    }
    out
}

/// The journal size mke2fs would choose for a filesystem of `blocks` blocks, or the jbd2
/// minimum (1024 blocks) for one too small for mke2fs's table.
pub fn default_journal_blocks(blocks: u64) -> u32 {
    // SAFETY: pure function of its argument.
    let n = unsafe { sys::ext2fs_default_journal_size(blocks) };
    if n <= 0 {
        1024
    } else {
        n as u32
    }
}
