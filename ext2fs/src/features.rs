//! The superblock's three feature words as typed flags, named as mke2fs's `-O` names them:
//! compatible (`s_feature_compat`), incompatible (`s_feature_incompat`) and read-only compatible
//! (`s_feature_ro_compat`). Bits this crate has no name for are kept, never dropped.

use bitflags::bitflags;
use ext2fs_sys as sys;

bitflags! {
    /// Compatible features: a kernel that lacks one may still mount the filesystem read-write.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct CompatFeatures: u32 {
        /// `has_journal`: an ext3/ext4 journal in an inode.
        const HAS_JOURNAL = sys::EXT3_FEATURE_COMPAT_HAS_JOURNAL;
        /// `ext_attr`: extended attributes.
        const EXT_ATTR = sys::EXT2_FEATURE_COMPAT_EXT_ATTR;
        /// `resize_inode`: group descriptor blocks reserved for online growth.
        const RESIZE_INODE = sys::EXT2_FEATURE_COMPAT_RESIZE_INODE;
        /// `dir_index`: hash-indexed (htree) directories.
        const DIR_INDEX = sys::EXT2_FEATURE_COMPAT_DIR_INDEX;
    }
}

bitflags! {
    /// Incompatible features: a kernel that lacks one must not mount the filesystem.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct IncompatFeatures: u32 {
        /// `filetype`: directory entries record the file type.
        const FILETYPE = sys::EXT2_FEATURE_INCOMPAT_FILETYPE;
        /// `extent`: files mapped by extent trees instead of indirect blocks.
        const EXTENTS = sys::EXT3_FEATURE_INCOMPAT_EXTENTS;
        /// `64bit`: 64-bit block numbers (and 64-byte group descriptors).
        const BIT64 = sys::EXT4_FEATURE_INCOMPAT_64BIT;
        /// `flex_bg`: group metadata packed together across a flexible block group.
        const FLEX_BG = sys::EXT4_FEATURE_INCOMPAT_FLEX_BG;
        /// `inline_data`: small files and directories kept inside the inode.
        const INLINE_DATA = sys::EXT4_FEATURE_INCOMPAT_INLINE_DATA;
    }
}

bitflags! {
    /// Read-only compatible features: a kernel that lacks one may mount the filesystem only
    /// read-only.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct RoCompatFeatures: u32 {
        /// `sparse_super`: superblock backups only in groups 0, 1 and powers of 3, 5 and 7.
        const SPARSE_SUPER = sys::EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER;
        /// `large_file`: files of 2 GiB and more.
        const LARGE_FILE = sys::EXT2_FEATURE_RO_COMPAT_LARGE_FILE;
        /// `huge_file`: files (and block counts) past 2^32 512-byte sectors.
        const HUGE_FILE = sys::EXT4_FEATURE_RO_COMPAT_HUGE_FILE;
        /// `dir_nlink`: directories with more than 64998 subdirectories (link count 1).
        const DIR_NLINK = sys::EXT4_FEATURE_RO_COMPAT_DIR_NLINK;
        /// `extra_isize`: every inode reserves `s_min_extra_isize` extra bytes.
        const EXTRA_ISIZE = sys::EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE;
        /// `metadata_csum`: crc32c checksums on all metadata.
        const METADATA_CSUM = sys::EXT4_FEATURE_RO_COMPAT_METADATA_CSUM;
    }
}
