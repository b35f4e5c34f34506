//! linuxdisk-mk: turn a directory into a disk image holding one GPT partition with an ext2, ext3 or
//! ext4 filesystem built through libext2fs.
//!
//! The data flow is the module tree, top to bottom:
//! `source` (walk the tree) → `mkfs::plan` (count and size) → `mkfs::format` (empty filesystem in a
//! sparse temp file) → `mkfs::populate` (inodes, directories, data) → `disk` (GPT + filesystem as
//! an ordered list of regions) → `image` (write the regions to OUTPUT).
//!
//! libext2fs is reached only through the `ext2fs` workspace crate (the safe wrapper, which holds
//! all the unsafe code); this crate has none.
#![forbid(unsafe_code)]

pub mod cleanup;
pub mod cli;
pub mod copy;
pub mod disk;
pub mod identity;
pub mod image;
pub mod mkfs;
pub mod nbd;
pub mod progress;
pub mod run;
pub mod source;
pub mod sparse;
