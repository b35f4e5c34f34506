//! Directory and symlink calls used while formatting: `ext2fs_mkdir`, `ext2fs_lookup`,
//! `ext2fs_expand_dir` (root and lost+found, as mke2fs makes them) and `ext2fs_symlink`.

use std::ffi::CString;

use ext2fs_sys as sys;

use crate::error::check;
use crate::{Error, FileType, Filesystem, Ino, Result};

fn c_name(call: &'static str, name: &[u8]) -> Result<CString> {
    CString::new(name).map_err(|_| Error::invalid_argument(call))
}

impl Filesystem {
    /// `ext2fs_mkdir(parent, ino, name)`: creates (and with a name, links into `parent`) a
    /// directory; `ino` 0 lets the library pick the inode. Its permissions are 0777 less the
    /// [`Filesystem::set_umask`] mask.
    pub fn mkdir(&mut self, parent: Ino, ino: Ino, name: Option<&[u8]>) -> Result<()> {
        let name = name.map(|n| c_name("ext2fs_mkdir", n)).transpose()?;
        let p = name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr());
        // SAFETY: fs is valid; p is null or a NUL-terminated name that outlives the call.
        check("ext2fs_mkdir", unsafe {
            sys::ext2fs_mkdir(self.raw(), parent, ino, p)
        })
    }

    /// Looks `name` up in directory `dir` (only for the few fixed names made while formatting).
    pub fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Ino> {
        let mut ino = 0;
        // SAFETY: name points at name.len() readable bytes; a null buf lets the library allocate.
        check("ext2fs_lookup", unsafe {
            sys::ext2fs_lookup(
                self.raw(),
                dir,
                name.as_ptr().cast(),
                name.len() as i32,
                std::ptr::null_mut(),
                &mut ino,
            )
        })?;
        Ok(ino)
    }

    /// Adds one empty block to a directory.
    pub fn expand_dir(&mut self, dir: Ino) -> Result<()> {
        // SAFETY: fs is valid.
        check("ext2fs_expand_dir", unsafe {
            sys::ext2fs_expand_dir(self.raw(), dir)
        })
    }

    /// Creates an unlinked symlink inode holding `target` (in the inode when shorter than 60
    /// bytes, else in one block) and returns its number; the caller links it and sets metadata.
    /// The inode is picked as [`Filesystem::new_inode`] picks one near `near`.
    pub fn symlink(&mut self, near: Ino, target: &[u8]) -> Result<Ino> {
        let t = c_name("ext2fs_symlink", target)?;
        let ino = self.new_inode(near, FileType::Symlink)?;
        // new_inode counted it; ext2fs_symlink counts it again when it writes it.
        self.inode_alloc_stats(ino, false, false);
        // SAFETY: t is NUL-terminated; a null name means "do not link".
        check("ext2fs_symlink", unsafe {
            sys::ext2fs_symlink(self.raw(), near, ino, std::ptr::null(), t.as_ptr())
        })?;
        Ok(ino)
    }
}
