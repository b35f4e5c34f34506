//! A safe wrapper over e2fsprogs' libext2fs (the `ext2fs-sys` bindings) for building new ext2,
//! ext3 and ext4 filesystems: every `unsafe` block of the project outside `ext2fs-sys` lives in
//! this crate, and its API names no raw binding type or constant.
//!
//! [`Filesystem`] owns an `ext2_filsys` and frees it on drop; [`Filesystem::close`] flushes it.
//! Its superblock is read through the [`Superblock`] view, with the feature words typed
//! ([`CompatFeatures`], [`IncompatFeatures`], [`RoCompatFeatures`]). Every libext2fs error becomes
//! an [`Error`] carrying the call's name, the code and the library's own message. Callers add the
//! context (which file, which inode) with `anyhow::Context` or the like.
#![deny(missing_docs)]

mod blocks;
mod dir;
mod error;
mod features;
mod fs;
mod hash;
mod inode;
mod superblock;
mod version;
mod xattr;

pub use blocks::Run;
pub use error::{Error, Result};
pub use features::{CompatFeatures, IncompatFeatures, RoCompatFeatures};
pub use fs::{default_journal_blocks, Filesystem, FormatParams};
pub use hash::{DirHash, HashVersion, NameHash};
pub use inode::{FileType, Inode, InodeFlags, Timestamp};
pub use superblock::Superblock;
pub use version::{library_version, LibraryVersion};

/// An inode number.
pub type Ino = u32;
/// A filesystem block number.
pub type BlockNo = u64;

/// The root directory's inode number.
pub const ROOT_INO: Ino = 2;
const _: () = assert!(ROOT_INO == ext2fs_sys::EXT2_ROOT_INO);
