//! A read-only view of an open filesystem's in-memory superblock: sizes, free counts, features,
//! directory-hash settings and identity. Changes go through `&mut Filesystem` methods.

use ext2fs_sys as sys;

use crate::{CompatFeatures, HashVersion, IncompatFeatures, Ino, RoCompatFeatures};

/// The superblock of a [`crate::Filesystem`], borrowed from it (so it cannot change while read).
#[derive(Clone, Copy)]
pub struct Superblock<'fs> {
    raw: &'fs sys::ext2_super_block,
}

impl<'fs> Superblock<'fs> {
    pub(crate) fn new(raw: &'fs sys::ext2_super_block) -> Superblock<'fs> {
        Superblock { raw }
    }

    /// A pointer for the library's superblock getters, which take a mutable pointer but only read.
    fn ptr(&self) -> *mut sys::ext2_super_block {
        std::ptr::from_ref(self.raw).cast_mut()
    }

    /// Blocks in the filesystem (both halves with 64bit).
    pub fn blocks_count(&self) -> u64 {
        // SAFETY: the pointer is valid for the view's life; the getter only reads it.
        unsafe { sys::ext2fs_blocks_count(self.ptr()) }
    }

    /// Blocks reserved for root.
    pub fn reserved_blocks(&self) -> u64 {
        // SAFETY: as in blocks_count.
        unsafe { sys::ext2fs_r_blocks_count(self.ptr()) }
    }

    /// Free blocks.
    pub fn free_blocks(&self) -> u64 {
        // SAFETY: as in blocks_count.
        unsafe { sys::ext2fs_free_blocks_count(self.ptr()) }
    }

    /// Inodes in the filesystem.
    pub fn inodes_count(&self) -> u32 {
        self.raw.s_inodes_count
    }

    /// Free inodes.
    pub fn free_inodes(&self) -> u32 {
        self.raw.s_free_inodes_count
    }

    /// The first block of group 0 (1 with 1 KiB blocks, else 0).
    pub fn first_data_block(&self) -> u64 {
        self.raw.s_first_data_block as u64
    }

    /// The first inode number not reserved for the filesystem itself (11).
    pub fn first_ino(&self) -> Ino {
        self.raw.s_first_ino
    }

    /// `s_want_extra_isize`: the extra inode bytes new inodes use.
    pub fn want_extra_isize(&self) -> u16 {
        self.raw.s_want_extra_isize
    }

    /// log2 of the flex_bg group count (0 without flex_bg).
    pub fn log_groups_per_flex(&self) -> u8 {
        self.raw.s_log_groups_per_flex
    }

    /// Compatible features.
    pub fn compat(&self) -> CompatFeatures {
        CompatFeatures::from_bits_retain(self.raw.s_feature_compat)
    }

    /// Incompatible features.
    pub fn incompat(&self) -> IncompatFeatures {
        IncompatFeatures::from_bits_retain(self.raw.s_feature_incompat)
    }

    /// Read-only compatible features.
    pub fn ro_compat(&self) -> RoCompatFeatures {
        RoCompatFeatures::from_bits_retain(self.raw.s_feature_ro_compat)
    }

    /// The hash new indexed directories use (`s_def_hash_version`).
    pub fn def_hash_version(&self) -> HashVersion {
        HashVersion::from_byte(self.raw.s_def_hash_version)
    }

    /// Whether directory hashes treat name bytes as unsigned chars (`EXT2_FLAGS_UNSIGNED_HASH`
    /// in `s_flags`; else signed, when `EXT2_FLAGS_SIGNED_HASH` is set or neither is).
    pub fn unsigned_hash(&self) -> bool {
        self.raw.s_flags & sys::EXT2_FLAGS_UNSIGNED_HASH != 0
    }

    /// The directory hash seed (`s_hash_seed`, four words; all zero means the default seed).
    pub fn hash_seed(&self) -> [u32; 4] {
        self.raw.s_hash_seed
    }

    /// The volume label, NUL-padded.
    pub fn label(&self) -> [u8; 16] {
        self.raw.s_volume_name
    }

    /// The filesystem UUID.
    pub fn uuid(&self) -> [u8; 16] {
        self.raw.s_uuid
    }

    /// Blocks in use by metadata right after formatting (`s_overhead_clusters`).
    pub fn overhead_blocks(&self) -> u64 {
        self.raw.s_overhead_clusters as u64
    }
}

impl std::fmt::Debug for Superblock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Superblock")
            .field("blocks_count", &self.blocks_count())
            .field("free_blocks", &self.free_blocks())
            .field("inodes_count", &self.inodes_count())
            .field("free_inodes", &self.free_inodes())
            .field("compat", &self.compat())
            .field("incompat", &self.incompat())
            .field("ro_compat", &self.ro_compat())
            .finish_non_exhaustive()
    }
}
