//! The filesystem types and their on-disk features: mke2fs's default feature sets
//! (/etc/mke2fs.conf of e2fsprogs 1.47), `-O` edits of them (`^metadata_csum,inline_data`), and
//! the default inode size.

use ext2fs::{CompatFeatures, IncompatFeatures, RoCompatFeatures};

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

/// One feature: the flag in the superblock word it lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    Compat(CompatFeatures),
    Incompat(IncompatFeatures),
    RoCompat(RoCompatFeatures),
}

/// The features `-O` may turn on or off, by mke2fs's names, in dumpe2fs's order.
const KNOWN: &[(&str, Flag)] = &[
    ("has_journal", Flag::Compat(CompatFeatures::HAS_JOURNAL)),
    ("ext_attr", Flag::Compat(CompatFeatures::EXT_ATTR)),
    ("resize_inode", Flag::Compat(CompatFeatures::RESIZE_INODE)),
    ("dir_index", Flag::Compat(CompatFeatures::DIR_INDEX)),
    ("filetype", Flag::Incompat(IncompatFeatures::FILETYPE)),
    ("extent", Flag::Incompat(IncompatFeatures::EXTENTS)),
    ("extents", Flag::Incompat(IncompatFeatures::EXTENTS)),
    ("flex_bg", Flag::Incompat(IncompatFeatures::FLEX_BG)),
    ("64bit", Flag::Incompat(IncompatFeatures::BIT64)),
    ("inline_data", Flag::Incompat(IncompatFeatures::INLINE_DATA)),
    (
        "sparse_super",
        Flag::RoCompat(RoCompatFeatures::SPARSE_SUPER),
    ),
    ("large_file", Flag::RoCompat(RoCompatFeatures::LARGE_FILE)),
    ("huge_file", Flag::RoCompat(RoCompatFeatures::HUGE_FILE)),
    ("dir_nlink", Flag::RoCompat(RoCompatFeatures::DIR_NLINK)),
    ("extra_isize", Flag::RoCompat(RoCompatFeatures::EXTRA_ISIZE)),
    (
        "metadata_csum",
        Flag::RoCompat(RoCompatFeatures::METADATA_CSUM),
    ),
];

/// Superblock feature words.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    pub compat: CompatFeatures,
    pub incompat: IncompatFeatures,
    pub ro_compat: RoCompatFeatures,
}

/// The words as numbers, as this printed when they were plain `u32`s: the text goes into
/// `run::canonical_options`, which seeds the reproducible UUID and hash seed, so changing it
/// would change every SOURCE_DATE_EPOCH image.
impl std::fmt::Debug for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Features")
            .field("compat", &self.compat.bits())
            .field("incompat", &self.incompat.bits())
            .field("ro_compat", &self.ro_compat.bits())
            .finish()
    }
}

impl Features {
    fn has(&self, flag: Flag) -> bool {
        match flag {
            Flag::Compat(f) => self.compat.contains(f),
            Flag::Incompat(f) => self.incompat.contains(f),
            Flag::RoCompat(f) => self.ro_compat.contains(f),
        }
    }

    fn set(&mut self, flag: Flag, on: bool) {
        match flag {
            Flag::Compat(f) => self.compat.set(f, on),
            Flag::Incompat(f) => self.incompat.set(f, on),
            Flag::RoCompat(f) => self.ro_compat.set(f, on),
        }
    }

    pub fn has_journal(&self) -> bool {
        self.compat.contains(CompatFeatures::HAS_JOURNAL)
    }

    pub fn has_extents(&self) -> bool {
        self.incompat.contains(IncompatFeatures::EXTENTS)
    }

    pub fn has_metadata_csum(&self) -> bool {
        self.ro_compat.contains(RoCompatFeatures::METADATA_CSUM)
    }

    pub fn has_dir_nlink(&self) -> bool {
        self.ro_compat.contains(RoCompatFeatures::DIR_NLINK)
    }

    pub fn has_64bit(&self) -> bool {
        self.incompat.contains(IncompatFeatures::BIT64)
    }

    pub fn has_flex_bg(&self) -> bool {
        self.incompat.contains(IncompatFeatures::FLEX_BG)
    }

    pub fn has_huge_file(&self) -> bool {
        self.ro_compat.contains(RoCompatFeatures::HUGE_FILE)
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
                self = Features::default();
                continue;
            }
            let (off, name) = match item.strip_prefix('^') {
                Some(n) => (true, n),
                None => (false, item),
            };
            let &(_, flag) = KNOWN.iter().find(|k| k.0 == name).ok_or_else(|| {
                let names: Vec<&str> = KNOWN.iter().map(|k| k.0).collect();
                format!(
                    "unknown or unsupported feature '{name}' (known: {})",
                    names.join(" ")
                )
            })?;
            self.set(flag, !off);
        }
        if self.has_64bit() && !self.has_extents() {
            return Err("64bit needs the extent feature".into());
        }
        Ok(self)
    }

    /// The feature names that are on, as dumpe2fs lists them.
    pub fn names(&self) -> Vec<&'static str> {
        KNOWN
            .iter()
            .filter(|k| k.0 != "extents" && self.has(k.1))
            .map(|k| k.0)
            .collect()
    }
}

impl FsType {
    /// mke2fs's defaults: base_features sparse_super,large_file,filetype,resize_inode,dir_index,
    /// ext_attr; ext3 adds has_journal; ext4 adds has_journal,extent,huge_file,flex_bg,
    /// metadata_csum,64bit,dir_nlink,extra_isize.
    pub fn features(self) -> Features {
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
        Features::default()
            .edit(list)
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

    #[test]
    fn debug_text_is_the_numeric_words() {
        // Seeds the reproducible UUID and hash seed (run::canonical_options): keep it stable.
        assert_eq!(
            format!("{:?}", FsType::Ext4.features()),
            "Features { compat: 60, incompat: 706, ro_compat: 1131 }"
        );
        assert_eq!(
            format!("{:?}", FsType::Ext2.features()),
            "Features { compat: 56, incompat: 2, ro_compat: 3 }"
        );
    }
}
