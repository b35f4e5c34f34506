//! The one safe wrapper over libext2fs (the `ext2fs-sys` bindings): every `unsafe` block of the
//! project outside `ext2fs-sys` lives in this crate.
//!
//! [`Filesystem`] owns an `ext2_filsys` and frees it on drop; [`Filesystem::close`] flushes it.
//! Every libext2fs error becomes an [`Error`] carrying the call's name and the library's own
//! message. Callers add the context (which file, which inode) with `anyhow::Context`.

mod blocks;
mod dir;
mod fs;
mod hash;
mod inode;
mod xattr;

use std::ffi::CStr;
use std::fmt;

use ext2fs_sys as sys;

pub use blocks::Run;
pub use fs::{default_journal_blocks, Filesystem, FormatParams};
pub use hash::{DirHash, NameHash};
pub use inode::{Inode, Timestamp};

/// An inode number.
pub type Ino = u32;
/// A filesystem block number.
pub type BlockNo = u64;

/// Root directory inode.
pub const ROOT_INO: Ino = sys::EXT2_ROOT_INO;

/// Directory entry file types (`EXT2_FT_*`).
pub mod file_type {
    use ext2fs_sys as sys;
    pub const REG: u8 = sys::EXT2_FT_REG_FILE as u8;
    pub const DIR: u8 = sys::EXT2_FT_DIR as u8;
    pub const CHRDEV: u8 = sys::EXT2_FT_CHRDEV as u8;
    pub const BLKDEV: u8 = sys::EXT2_FT_BLKDEV as u8;
    pub const FIFO: u8 = sys::EXT2_FT_FIFO as u8;
    pub const SOCK: u8 = sys::EXT2_FT_SOCK as u8;
    pub const SYMLINK: u8 = sys::EXT2_FT_SYMLINK as u8;
}

/// A libext2fs error: the call that failed and the library's error code.
#[derive(Debug, Clone)]
pub struct Error {
    pub call: &'static str,
    pub code: i64,
}

impl Error {
    /// True when the filesystem ran out of blocks or inodes.
    pub fn is_no_space(&self) -> bool {
        [
            sys::EXT2_ET_BLOCK_ALLOC_FAIL,
            sys::EXT2_ET_INODE_ALLOC_FAIL,
            sys::EXT2_ET_DIR_NO_SPACE,
        ]
        .iter()
        .any(|&c| c as i64 == self.code)
    }

    /// The library's own message for the code.
    pub fn message(&self) -> String {
        // SAFETY: error_message returns a pointer to a static (or thread-local) NUL-terminated
        // string for any code; we copy it at once.
        let p = unsafe { sys::ldk_error_message(self.code) };
        if p.is_null() {
            return format!("error {}", self.code);
        }
        // SAFETY: p is non-null and NUL-terminated (see above).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.call, self.message())
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Turns an `errcode_t` into a `Result`.
fn check(call: &'static str, code: sys::errcode_t) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error { call, code })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_carries_library_message() {
        let e = Error {
            call: "ext2fs_new_range",
            code: sys::EXT2_ET_BLOCK_ALLOC_FAIL as i64,
        };
        assert!(e.is_no_space());
        let s = e.to_string();
        assert!(s.starts_with("ext2fs_new_range: "), "{s}");
        assert!(s.to_lowercase().contains("block"), "{s}");
    }
}
