//! The filesystem types and their on-disk features: mke2fs's default feature sets
//! (/etc/mke2fs.conf of e2fsprogs 1.47), `-O` edits of them (`^metadata_csum,inline_data`), and
//! the default inode size.

use ext2fs_sys as sys;

/// `-t ext2|ext3|ext4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsType {
    #[default]
    Ext2,
    Ext3,
    Ext4,
}

/// 256-byte inodes by default for every type: room for nanosecond and post-2038 times, crtime,
/// and small extended attributes in the inode (mke2fs's default for all but tiny filesystems).
pub const INODE_SIZE: u16 = 256;

/// Which superblock word a feature lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    Compat,
    Incompat,
    RoCompat,
}

/// The features `-O` may turn on or off: name, word, bit.
const KNOWN: &[(&str, Word, u32)] = &[
    (
        "has_journal",
        Word::Compat,
        sys::EXT3_FEATURE_COMPAT_HAS_JOURNAL,
    ),
    ("ext_attr", Word::Compat, sys::EXT2_FEATURE_COMPAT_EXT_ATTR),
    (
        "resize_inode",
        Word::Compat,
        sys::EXT2_FEATURE_COMPAT_RESIZE_INODE,
    ),
    (
        "dir_index",
        Word::Compat,
        sys::EXT2_FEATURE_COMPAT_DIR_INDEX,
    ),
    (
        "filetype",
        Word::Incompat,
        sys::EXT2_FEATURE_INCOMPAT_FILETYPE,
    ),
    ("extent", Word::Incompat, sys::EXT3_FEATURE_INCOMPAT_EXTENTS),
    (
        "extents",
        Word::Incompat,
        sys::EXT3_FEATURE_INCOMPAT_EXTENTS,
    ),
    (
        "flex_bg",
        Word::Incompat,
        sys::EXT4_FEATURE_INCOMPAT_FLEX_BG,
    ),
    ("64bit", Word::Incompat, sys::EXT4_FEATURE_INCOMPAT_64BIT),
    (
        "inline_data",
        Word::Incompat,
        sys::EXT4_FEATURE_INCOMPAT_INLINE_DATA,
    ),
    (
        "sparse_super",
        Word::RoCompat,
        sys::EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER,
    ),
    (
        "large_file",
        Word::RoCompat,
        sys::EXT2_FEATURE_RO_COMPAT_LARGE_FILE,
    ),
    (
        "huge_file",
        Word::RoCompat,
        sys::EXT4_FEATURE_RO_COMPAT_HUGE_FILE,
    ),
    (
        "dir_nlink",
        Word::RoCompat,
        sys::EXT4_FEATURE_RO_COMPAT_DIR_NLINK,
    ),
    (
        "extra_isize",
        Word::RoCompat,
        sys::EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE,
    ),
    (
        "metadata_csum",
        Word::RoCompat,
        sys::EXT4_FEATURE_RO_COMPAT_METADATA_CSUM,
    ),
];

/// Superblock feature words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
}

impl Features {
    fn word(&mut self, w: Word) -> &mut u32 {
        match w {
            Word::Compat => &mut self.compat,
            Word::Incompat => &mut self.incompat,
            Word::RoCompat => &mut self.ro_compat,
        }
    }

    pub fn has_journal(&self) -> bool {
        self.compat & sys::EXT3_FEATURE_COMPAT_HAS_JOURNAL != 0
    }

    pub fn has_extents(&self) -> bool {
        self.incompat & sys::EXT3_FEATURE_INCOMPAT_EXTENTS != 0
    }

    pub fn has_metadata_csum(&self) -> bool {
        self.ro_compat & sys::EXT4_FEATURE_RO_COMPAT_METADATA_CSUM != 0
    }

    pub fn has_dir_nlink(&self) -> bool {
        self.ro_compat & sys::EXT4_FEATURE_RO_COMPAT_DIR_NLINK != 0
    }

    pub fn has_64bit(&self) -> bool {
        self.incompat & sys::EXT4_FEATURE_INCOMPAT_64BIT != 0
    }

    pub fn has_flex_bg(&self) -> bool {
        self.incompat & sys::EXT4_FEATURE_INCOMPAT_FLEX_BG != 0
    }

    /// log2 of the flex_bg size (mke2fs: 16 groups), 0 without flex_bg.
    pub fn log_groups_per_flex(&self) -> u8 {
        if self.has_flex_bg() {
            4
        } else {
            0
        }
    }

    /// Largest block count addressable: 2^32-1 without 64bit.
    pub fn max_blocks(&self) -> u64 {
        if self.has_64bit() {
            1 << 48
        } else {
            (1 << 32) - 1
        }
    }

    /// Applies an mke2fs `-O` list: comma-separated names, `^name` to turn one off, `none` for
    /// none at all.
    pub fn edit(mut self, list: &str) -> Result<Features, String> {
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "none" {
                self = Features {
                    compat: 0,
                    incompat: 0,
                    ro_compat: 0,
                };
                continue;
            }
            let (off, name) = match item.strip_prefix('^') {
                Some(n) => (true, n),
                None => (false, item),
            };
            let &(_, w, bit) = KNOWN.iter().find(|k| k.0 == name).ok_or_else(|| {
                let names: Vec<&str> = KNOWN.iter().map(|k| k.0).collect();
                format!(
                    "unknown or unsupported feature '{name}' (known: {})",
                    names.join(" ")
                )
            })?;
            if off {
                *self.word(w) &= !bit;
            } else {
                *self.word(w) |= bit;
            }
        }
        if self.has_64bit() && !self.has_extents() {
            return Err("64bit needs the extent feature".into());
        }
        Ok(self)
    }

    /// The feature names that are on, as dumpe2fs lists them.
    pub fn names(&self) -> Vec<&'static str> {
        let mut c = *self;
        KNOWN
            .iter()
            .filter(|k| k.0 != "extents" && *c.word(k.1) & k.2 != 0)
            .map(|k| k.0)
            .collect()
    }
}

impl FsType {
    /// mke2fs's defaults: base_features sparse_super,large_file,filetype,resize_inode,dir_index,
    /// ext_attr; ext3 adds has_journal; ext4 adds has_journal,extent,huge_file,flex_bg,
    /// metadata_csum,64bit,dir_nlink,extra_isize.
    pub fn features(self) -> Features {
        let base = Features {
            compat: 0,
            incompat: 0,
            ro_compat: 0,
        };
        let list = match self {
            FsType::Ext2 => "sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr",
            FsType::Ext3 => {
                "sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr,has_journal"
            }
            FsType::Ext4 => {
                "sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr,has_journal,\
                 extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize"
            }
        };
        base.edit(list)
            .expect("the default feature lists are valid")
    }

    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_mke2fs_s() {
        assert_eq!(
            FsType::Ext4.features().names(),
            [
                "has_journal",
                "ext_attr",
                "resize_inode",
                "dir_index",
                "filetype",
                "extent",
                "flex_bg",
                "64bit",
                "sparse_super",
                "large_file",
                "huge_file",
                "dir_nlink",
                "extra_isize",
                "metadata_csum"
            ]
        );
        assert!(FsType::Ext3.features().has_journal() && !FsType::Ext3.features().has_extents());
        assert!(!FsType::Ext2.features().has_journal());
    }

    #[test]
    fn edits_turn_features_on_and_off() {
        let f = FsType::Ext4
            .features()
            .edit("^metadata_csum,inline_data")
            .unwrap();
        assert!(!f.has_metadata_csum());
        assert!(f.names().contains(&"inline_data"));
        let f = FsType::Ext2.features().edit("has_journal").unwrap();
        assert!(f.has_journal());
        assert!(FsType::Ext4.features().edit("^extent").is_err()); // 64bit needs extents
        assert!(FsType::Ext4.features().edit("^extent,^64bit").is_ok());
        assert!(FsType::Ext4.features().edit("bogus").is_err());
    }
}
