//! The filesystem types and what each means on disk: mke2fs's default feature sets
//! (/etc/mke2fs.conf of e2fsprogs 1.47) and inode size.

use ext2fs_sys as sys;

/// `-t ext2|ext3|ext4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum FsType {
    #[default]
    Ext2,
    Ext3,
    Ext4,
}

/// Superblock feature words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    /// log2 of the flex_bg size (mke2fs: 16 groups), 0 without flex_bg.
    pub log_groups_per_flex: u8,
}

/// 256-byte inodes for every type: room for nanosecond and post-2038 times, crtime, and
/// small extended attributes in the inode (mke2fs's default for all but tiny filesystems).
pub const INODE_SIZE: u16 = 256;

impl FsType {
    /// mke2fs's defaults: base_features sparse_super,large_file,filetype,resize_inode,dir_index,
    /// ext_attr; ext3 adds has_journal; ext4 adds has_journal,extent,huge_file,flex_bg,
    /// metadata_csum,64bit,dir_nlink,extra_isize.
    pub fn features(self) -> Features {
        let mut f = Features {
            compat: sys::EXT2_FEATURE_COMPAT_RESIZE_INODE
                | sys::EXT2_FEATURE_COMPAT_DIR_INDEX
                | sys::EXT2_FEATURE_COMPAT_EXT_ATTR,
            incompat: sys::EXT2_FEATURE_INCOMPAT_FILETYPE,
            ro_compat: sys::EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER
                | sys::EXT2_FEATURE_RO_COMPAT_LARGE_FILE,
            log_groups_per_flex: 0,
        };
        if self != FsType::Ext2 {
            f.compat |= sys::EXT3_FEATURE_COMPAT_HAS_JOURNAL;
        }
        if self == FsType::Ext4 {
            f.incompat |= sys::EXT3_FEATURE_INCOMPAT_EXTENTS
                | sys::EXT4_FEATURE_INCOMPAT_FLEX_BG
                | sys::EXT4_FEATURE_INCOMPAT_64BIT;
            f.ro_compat |= sys::EXT4_FEATURE_RO_COMPAT_HUGE_FILE
                | sys::EXT4_FEATURE_RO_COMPAT_METADATA_CSUM
                | sys::EXT4_FEATURE_RO_COMPAT_DIR_NLINK
                | sys::EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE;
            f.log_groups_per_flex = 4;
        }
        f
    }

    pub fn has_journal(self) -> bool {
        self != FsType::Ext2
    }

    pub fn has_extents(self) -> bool {
        self == FsType::Ext4
    }

    pub fn has_metadata_csum(self) -> bool {
        self == FsType::Ext4
    }

    /// Largest block count addressable: 2^32-1 without 64bit; with it, what we allow.
    pub fn max_blocks(self) -> u64 {
        if self == FsType::Ext4 {
            1 << 48
        } else {
            (1 << 32) - 1
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
        }
    }
}
