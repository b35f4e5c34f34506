//! Extended attributes through libext2fs's xattr handle API. `ext2fs_xattr_set` places each value
//! in the inode's spare space or the attribute block, and translates POSIX ACLs
//! (`system.posix_acl_*`) from the Linux xattr format to ext4's on-disk format.

use std::ffi::CString;

use ext2fs_sys as sys;

use crate::error::check;
use crate::{Error, Filesystem, Ino, Result};

/// Owns an open `ext2_xattr_handle`; dropping it without `close` writes nothing.
struct Handle(*mut sys::ext2_xattr_handle);

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a handle from ext2fs_xattrs_open, not yet closed. Closing an unmodified
            // handle writes nothing; errors here are for a path already failing.
            unsafe { sys::ext2fs_xattrs_close(&mut self.0) };
        }
    }
}

impl Filesystem {
    /// Sets every `(name, value)` on the inode (which must already be written) and writes them.
    pub fn set_xattrs(&mut self, ino: Ino, attrs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        if attrs.is_empty() {
            return Ok(());
        }
        let mut h = Handle(std::ptr::null_mut());
        // SAFETY: fs is valid; h.0 receives a new handle owned by Handle.
        check("ext2fs_xattrs_open", unsafe {
            sys::ext2fs_xattrs_open(self.raw(), ino, &mut h.0)
        })?;
        // SAFETY: h.0 is a valid handle.
        check("ext2fs_xattrs_read", unsafe {
            sys::ext2fs_xattrs_read(h.0)
        })?;
        for (name, value) in attrs {
            let key = CString::new(name.as_slice())
                .map_err(|_| Error::invalid_argument("ext2fs_xattr_set"))?;
            // SAFETY: key is NUL-terminated; value points at value.len() readable bytes.
            check("ext2fs_xattr_set", unsafe {
                sys::ext2fs_xattr_set(h.0, key.as_ptr(), value.as_ptr().cast(), value.len())
            })?;
        }
        let mut raw = std::mem::replace(&mut h.0, std::ptr::null_mut());
        // SAFETY: raw is the valid handle; close writes the attributes and frees it.
        check("ext2fs_xattrs_close", unsafe {
            sys::ext2fs_xattrs_close(&mut raw)
        })
    }
}
